"""InclusiveFL — Liu, Wu, Wu, Wang, Lyu, Chen & Xie, "No One Left Behind: Inclusive Federated Learning over
Heterogeneous Devices", KDD 2022.

Clients of different capacity get models of different depth: a client of tier ``d`` holds the first ``d``
stages of the global early-exit network and their exits, and trains them with the "-EE" objective (the sum
of the held exits' cross-entropy losses). Option ``tiers``: the fraction of clients holding 1, 2, … exits
(default: everyone at full depth, where InclusiveFL is FedAvg); clients are assigned to tiers
deterministically from (seed, fractions), see :mod:`bench.methods.heterogeneous`.

Our reading of the paper's two mechanisms, as applied here:

* Heterogeneous aggregation. Layers a smaller model shares with larger ones are averaged over every client
  that holds them. The *top* layer of each smaller model (here the tier's last stage and its exit head) is
  specific to that tier and averaged over that tier's clients only: it acts as a last layer, which the
  same layer of a deeper model does not. The deepest tier's layers are all shared.
* Momentum knowledge distillation. Knowledge flows from the deeper models to a smaller model's top layer
  through its update on the server: ``Δ_top = (1 − β)·Δ_own + β·Δ_deep`` with ``β = momentum`` (0.2 by
  default), where ``Δ_own`` is the (train-size weighted) average update of the tier's own clients in the
  round and ``Δ_deep`` the update of the deeper tiers' clients. The paper, whose Transformer layers all
  have one shape, takes ``Δ_deep`` from the deeper model's layers above the small model's top; an early-exit
  CNN's stages differ in shape (conv3: 32/64/128 channels), so here ``Δ_deep`` is the deeper tiers' update
  of the *same* entries (they train that stage as an inner one and that exit as an intermediate exit).
  The momentum applies to parameters; the top's BatchNorm statistics are averaged over the tier's clients.
  Without deeper-tier participants in a round the top takes ``Δ_own`` alone; a tier without participants
  keeps its top.

Each client is evaluated on its tier's model: the shared stages below its top and its tier's top.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
from pydantic import Field

from bench.ground.tensor_ops import TensorDict, weighted_average
from bench.methods.api import ClientData, Hparams, LocalResult, Message, MethodContext, extract, sum_ce_loss
from bench.methods.heterogeneous import (
    CapacityLevel,
    ClientFractions,
    TieredMethod,
    block_index,
    depth_levels,
)
from bench.methods.registry import register
from bench.models.base import EarlyExitNet


class InclusiveFLHparams(Hparams):
    momentum: float = Field(0.2, ge=0, le=1, description="β: share of the deeper tiers' update in the update "
                                                          "of a shallower tier's top stage and exit",
                            json_schema_extra={"search": {"low": 0.0, "high": 0.9}})
    tiers: ClientFractions | None = Field(None, description="fraction of clients holding 1, 2, ... exits "
                                                            "(one value per exit; default: all full depth)")


def is_top(name: str, depth: int) -> bool:
    """Whether ``name`` belongs to the top of a depth-``depth`` model: its last stage or its last exit."""
    return block_index(name) == depth - 1


def momentum_update(previous_top: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                    previous_shared: Mapping[str, torch.Tensor], shared: Mapping[str, torch.Tensor],
                    deeper_trained: Collection[str], momentum: float) -> TensorDict:
    """A tier's new top: ``previous − ((1−β)·(previous − own) + β·(previous_shared − shared))`` per entry.

    ``own`` is the average of the tier's uploads, ``shared`` the new shared model; entries not in
    ``deeper_trained`` (no deeper participant holds them, or they are buffers) simply take ``own``.
    """
    out: TensorDict = {}
    for name, previous in previous_top.items():
        if name in deeper_trained:
            own_step = previous - own[name]
            deep_step = previous_shared[name] - shared[name]
            out[name] = previous - ((1 - momentum) * own_step + momentum * deep_step)
        else:
            out[name] = own[name]
    return out


@register
class InclusiveFL(TieredMethod):
    name = "inclusivefl"
    Hparams = InclusiveFLHparams

    def __init__(self, hparams: InclusiveFLHparams, ctx: MethodContext):
        super().__init__(hparams, ctx)
        depths = {self.plan.levels[tier].depth for tier in self.plan.tier_of}
        self.deepest = max(depths)
        self.shallow_depths = sorted(depths - {self.deepest})

    def capacity_levels(self) -> list[CapacityLevel]:
        return depth_levels(self.hp.tiers, self.ctx.num_exits)

    def own_top_depth(self, client: int) -> int | None:
        """The depth of the client's tier if that tier has its own top (every tier but the deepest)."""
        depth = self.plan.level(client).depth
        return depth if depth < self.deepest else None

    def init_server(self, model: EarlyExitNet) -> dict[str, Any]:
        full = extract(model)
        tops = {str(depth): {k: v.clone() for k, v in full.items() if is_top(k, depth)}
                for depth in self.shallow_depths}
        return {"model": full, "tops": tops}

    def client_params(self, client: int, server: dict[str, Any]) -> TensorDict:
        """The client's tier model: the held shared entries, with the tier's own top where it has one."""
        params = self.plan.held_part(client, server["model"])
        depth = self.own_top_depth(client)
        if depth is not None:
            params.update(server["tops"][str(depth)])
        return params

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        return Message(self.client_params(client, server))

    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return self.client_params(client, server)

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        sub, loss = self.train_sub_model(model, payload.tensors, data, gen, sum_ce_loss)
        return LocalResult(Message(extract(sub)), state, {"train/loss": loss})

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        shared_uploads: dict[int, Message] = {}
        tier_tops: dict[int, dict[int, TensorDict]] = {}
        for client, upload in uploads.items():
            depth = self.own_top_depth(client)
            if depth is None:
                shared_uploads[client] = upload
                continue
            tensors = upload.tensors
            tier_tops.setdefault(depth, {})[client] = {k: v for k, v in tensors.items() if is_top(k, depth)}
            shared_uploads[client] = Message({k: v for k, v in tensors.items() if not is_top(k, depth)})
        previous = server["model"]
        shared = self.plan.aggregate(previous, shared_uploads)
        deeper_trained = {k for u in shared_uploads.values() for k in u.tensors} & self.plan.parameter_names
        tops = dict(server["tops"])
        for depth, group in tier_tops.items():
            own = weighted_average(list(group.values()), [self.ctx.client_train_sizes[c] for c in group])
            tops[str(depth)] = momentum_update(server["tops"][str(depth)], own, previous, shared,
                                               deeper_trained, self.hp.momentum)
        return {"model": shared, "tops": tops}
