"""InclusiveFL — Liu, Wu, Wu, Wang, Lyu, Chen & Xie, "No One Left Behind: Inclusive Federated Learning over
Heterogeneous Devices", KDD 2022.

Clients of different capacity get models of different depth: a client of tier ``d`` holds the first ``d``
stages of the global early-exit network and their exits, and trains them with the "-EE" objective (the sum
of the held exits' cross-entropy losses). Option ``tiers``: the fraction of clients holding 1, 2, … exits;
clients are assigned to tiers deterministically from (seed, fractions), see :mod:`bench.methods.heterogeneous`.
The default spreads the clients evenly over all depths (the paper's small / medium / large split of one
third each, for a three-exit network). With every client at one depth InclusiveFL is FedAvg, so a
configuration that puts clients at fewer than two depths is refused.

The paper's two mechanisms, as applied here:

* Heterogeneous aggregation. Layers a smaller model shares with larger ones are averaged over every client
  that holds them (weighted by train size). The *top* layer of each smaller model (here the tier's last stage
  and its exit head) is specific to that tier and averaged over that tier's clients only: it acts as a last
  layer, which the same layer of a deeper model does not. The deepest tier's layers are all shared.
* Momentum knowledge distillation. The deeper model's knowledge reaches a smaller model's top layer through
  its update: with ``Δ_own`` the (train-size weighted) average update of the tier's top by its own clients in
  the round, and ``Δ_deep`` the average, over the layers of the *next deeper tier* from the small model's top
  up to that tier's top (stages ``d−1 … d'−1``), of that tier's clients' average update of the layer, the top
  moves by ``(1 − β)·Δ_own + β·Δ_deep`` with ``β = momentum`` (0.2 by default).

Choices the paper leaves open (its Transformer layers all have one shape; an early-exit CNN's stages do not):
the distillation runs between entries of the same name within their stages (``stages.{j}.<rest>`` teaches
``stages.{d−1}.<rest>``); a deeper stage's update is cut to the leading slice of the top's shape (deeper
stages are at least as wide, as in width-scaled sub-models), and the mean runs over the counterparts that exist
with a covering shape (a ResNet's stem is taught by the deeper tier's update of that same stem only). As in
the authors' code, only the stages (the paper's encoder layers) are distilled: the top's exit head and its
BatchNorm statistics take the tier's own average.
The deeper tier's update is the one of the same round (the authors' code applies the previous round's).
Without participants of the next deeper tier in a round the top takes ``Δ_own`` alone; a tier without
participants keeps its top.

Each client is evaluated on its tier's model: the shared stages below its top and its tier's top.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field

from bench.ground.tensor_ops import TensorDict, subtract, weighted_average
from bench.methods.api import ClientData, Hparams, LocalResult, Message, MethodContext
from bench.methods.heterogeneous import (
    CapacityLevel,
    ClientFractions,
    TieredMethod,
    block_index,
    covers,
    depth_levels,
    leading_region,
)
from bench.methods.losses import sum_ce_loss
from bench.methods.model_state import extract
from bench.methods.registry import register
from bench.models.base import EarlyExitNet, stage_prefix
from bench.record_names import TRAIN_LOSS


class InclusiveFLHparams(Hparams):
    momentum: float = Field(0.2, ge=0, le=1, description="β: share of the next deeper tier's layer updates in "
                                                          "the update of a shallower tier's top stage",
                            json_schema_extra={"search": {"low": 0.0, "high": 0.9}})
    tiers: ClientFractions | None = Field(None, description="fraction of clients holding 1, 2, ... exits "
                                                            "(one value per exit; default: an equal share each)")


def is_top(name: str, depth: int) -> bool:
    """Whether ``name`` belongs to the top of a depth-``depth`` model: its last stage or its last exit."""
    return block_index(name) == depth - 1


def stage_counterparts(shapes: Mapping[str, torch.Size], parameters: frozenset[str], depth: int,
                       deeper: int) -> dict[str, list[str]]:
    """For each parameter of stage ``depth − 1``: its same-named entries in stages ``depth − 1 … deeper − 1``
    whose shape covers it (the layers of the deeper model that teach the top of the depth-``depth`` one)."""
    top = stage_prefix(depth - 1)
    out: dict[str, list[str]] = {}
    for name in sorted(parameters):
        if not name.startswith(top):
            continue
        rest = name[len(top):]
        teachers = [stage_prefix(j) + rest for j in range(depth - 1, deeper)]
        teachers = [t for t in teachers if t in shapes and len(shapes[t]) == len(shapes[name])
                    and covers(shapes[t], shapes[name])]
        if teachers:
            out[name] = teachers
    return out


def distilled_top(previous: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                  deep_update: Mapping[str, torch.Tensor] | None, counterparts: Mapping[str, list[str]],
                  momentum: float) -> TensorDict:
    """A tier's new top: ``previous + (1 − β)·(own − previous) + β·Δ_deep`` for the distilled entries, where
    ``Δ_deep`` is the mean of the deeper tier's updates of the counterparts, cut to the entry's shape; every
    other entry (or all of them when ``deep_update`` is None) takes ``own``."""
    out: TensorDict = {}
    for name, old in previous.items():
        teachers = counterparts.get(name, []) if deep_update is not None else []
        if not teachers:
            out[name] = own[name].clone()
            continue
        region = leading_region(old.shape)
        deep = torch.stack([deep_update[t][region] for t in teachers]).mean(0)
        out[name] = old + (1 - momentum) * (own[name] - old) + momentum * deep
    return out


@register
class InclusiveFL(TieredMethod):
    name = "inclusivefl"
    order = 140
    Hparams = InclusiveFLHparams

    def __init__(self, hparams: InclusiveFLHparams, ctx: MethodContext):
        super().__init__(hparams, ctx)
        depths = sorted({self.plan.levels[tier].depth for tier in self.plan.tier_of})
        if len(depths) < 2:
            raise ValueError(f"inclusivefl puts all {ctx.num_clients} clients at depth {depths[0]}, where it is "
                             "FedAvg: give tiers that put clients at two depths or more")
        self.deepest = depths[-1]
        self.shallow_depths = depths[:-1]
        self.next_deeper = dict(zip(depths[:-1], depths[1:], strict=True))
        shapes = self.plan.shapes()
        self.counterparts = {d: stage_counterparts(shapes, self.plan.parameter_names, d, self.next_deeper[d])
                             for d in self.shallow_depths}

    def capacity_levels(self) -> list[CapacityLevel]:
        if self.hp.tiers is None:
            if self.ctx.num_exits < 2:
                raise ValueError("inclusivefl needs a model with at least two exits (two depths of clients)")
            return depth_levels([1.0 / self.ctx.num_exits] * self.ctx.num_exits, self.ctx.num_exits)
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
        return LocalResult(Message(extract(sub)), state, {TRAIN_LOSS: loss})

    def tier_updates(self, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[int, TensorDict]:
        """Per depth with participants: the train-size weighted average of its clients' parameter updates."""
        by_depth: dict[int, list[int]] = {}
        for client in uploads:
            by_depth.setdefault(self.plan.level(client).depth, []).append(client)
        updates = {}
        for depth, clients in by_depth.items():
            deltas = [subtract({k: v for k, v in uploads[c].tensors.items() if k in self.plan.parameter_names},
                               self.client_params(c, server)) for c in clients]
            updates[depth] = weighted_average(deltas, [self.ctx.client_train_sizes[c] for c in clients])
        return updates

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
        updates = self.tier_updates(uploads, server) if self.hp.momentum > 0 else {}
        tops = dict(server["tops"])
        for depth, group in tier_tops.items():
            own = weighted_average(list(group.values()), [self.ctx.client_train_sizes[c] for c in group])
            tops[str(depth)] = distilled_top(server["tops"][str(depth)], own, updates.get(self.next_deeper[depth]),
                                             self.counterparts[depth], self.hp.momentum)
        return {"model": self.plan.aggregate(server["model"], shared_uploads), "tops": tops}
