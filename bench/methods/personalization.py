"""Building blocks shared by personalized-FL methods: personal heads, the proximal term, frozen parts.

* :class:`PersonalHeadsHparams` — the ``personal_heads = "all" | "last"`` option of methods that keep
  "the head" personal: ``"all"`` makes every exit head personal, ``"last"`` only the last one (the shallow
  heads are then shared and averaged like the backbone).
* :func:`personal_keys` — the predicate "this parameter/buffer name belongs to the personal heads", and
  :class:`PersonalHeadsSplit`, which gives a method ``is_personal`` / ``is_shared`` from its hyperparameters
  (FedRoD and FedPAC use it directly; they keep their personal heads elsewhere than in the client state).
* :class:`PersonalHeadsMethod` — a method whose server holds the shared part, whose clients keep only their
  personal heads, and which averages the shared part weighted by train size (FedPer, FedRep, FedBABU).
* :func:`proximal_term` — ``coefficient/2 · ‖θ − θ_ref‖²`` over a model's parameters, and
  :func:`proximal_objective`, the summed exit cross-entropy plus that term (FedProx, Ditto, FedAMP).
* :func:`frozen` and :func:`parameters_where` — train one part of the network while the other stays fixed
  (the phases built on them are in :mod:`bench.methods.phases`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch
from pydantic import Field

from bench.methods.aggregation import average_uploads
from bench.methods.api import Hparams, Message, Method, MethodContext
from bench.methods.losses import LossFn, sum_ce_loss
from bench.methods.model_state import extract, head_index, is_head
from bench.models.base import EarlyExitNet

KeyFilter = Callable[[str], bool]
PersonalHeads = Literal["all", "last"]


class PersonalHeadsHparams(Hparams):
    """Mixin field of methods with a personal "head"; subclass it to add the method's own hyperparameters."""

    personal_heads: PersonalHeads = Field(
        "all", description="which exit heads are personal: 'all' of them, or only the 'last' "
                           "(the shallow heads are then shared and averaged like the backbone)")


def personal_keys(personal_heads: PersonalHeads, num_exits: int) -> KeyFilter:
    """Predicate on parameter/buffer names: True for the personal heads chosen by ``personal_heads``."""
    if personal_heads == "all":
        return is_head
    if personal_heads == "last":
        return lambda name: is_head(name) and head_index(name) == num_exits - 1
    raise ValueError(f"personal_heads must be 'all' or 'last', got {personal_heads!r}")


class PersonalHeadsSplit:
    """Mixin of methods whose ``Hparams`` derive from :class:`PersonalHeadsHparams`: which entries are personal."""

    hp: PersonalHeadsHparams
    ctx: MethodContext

    @property
    def is_personal(self) -> KeyFilter:
        return personal_keys(self.hp.personal_heads, self.ctx.num_exits)

    def is_shared(self, name: str) -> bool:
        return not self.is_personal(name)


class PersonalHeadsMethod(PersonalHeadsSplit, Method):
    """Shared part (backbone; shallow heads under ``personal_heads="last"``) averaged; personal heads local.

    Server state: ``{"shared": tensors}``. Client state: ``{"heads": tensors}`` (only the personal heads;
    every client starts from the same initial heads). Payload and upload are the shared part. Subclasses
    implement :meth:`local_update`, typically ``load_state(model, payload.tensors, state["heads"])``, some
    training, then :meth:`split_trained`. ``Hparams`` must derive from :class:`PersonalHeadsHparams`.
    """

    def init_server(self, model: EarlyExitNet) -> dict[str, Any]:
        return {"shared": extract(model, self.is_shared)}

    def init_client(self, client: int, model: EarlyExitNet, server: dict[str, Any]) -> dict[str, Any]:
        return {"heads": extract(model, self.is_personal)}

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        return Message(server["shared"])

    def split_trained(self, model: EarlyExitNet) -> tuple[Message, dict[str, Any]]:
        """The upload (shared part) and the new client state (personal heads) of a trained model."""
        return Message(extract(model, self.is_shared)), {"heads": extract(model, self.is_personal)}

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        return {"shared": average_uploads(uploads, self.ctx.client_train_sizes)}

    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return {**server["shared"], **state["heads"]}


def proximal_term(model: torch.nn.Module, reference: Mapping[str, torch.Tensor],
                  coefficient: float) -> torch.Tensor:
    """``coefficient/2 · Σ‖θ − θ_ref‖²`` over the model's parameters that appear in ``reference``.

    Buffers (e.g. BatchNorm statistics) are not parameters and are left out. Its gradient with respect to a
    parameter is ``coefficient · (θ − θ_ref)``: a pull towards the reference.
    """
    terms = [(p - reference[name].detach()).pow(2).sum()
             for name, p in model.named_parameters() if name in reference]
    if not terms:
        raise ValueError("proximal_term: no parameter of the model appears in the reference state")
    return 0.5 * coefficient * torch.stack(terms).sum()


def proximal_objective(reference: Mapping[str, torch.Tensor], coefficient: float) -> LossFn:
    """The exits' summed cross-entropy plus ``coefficient/2 · ‖θ − reference‖²`` (just the former if 0)."""
    if coefficient == 0:
        return sum_ce_loss

    def loss(model: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sum_ce_loss(model, x, y) + proximal_term(model, reference, coefficient)

    return loss


def parameters_where(model: torch.nn.Module, keep: KeyFilter) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if keep(name)]


@contextmanager
def frozen(model: torch.nn.Module, keep_fixed: KeyFilter) -> Iterator[None]:
    """Within the block, parameters whose names pass ``keep_fixed`` get no gradients; restored on exit.

    Pair it with an optimiser over the other parameters (``train_epochs(..., params=...)``). It does not stop
    BatchNorm statistics from updating (see :func:`bench.methods.phases.head_loss`).
    """
    chosen = [(p, p.requires_grad) for name, p in model.named_parameters() if keep_fixed(name)]
    for p, _ in chosen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in chosen:
            p.requires_grad_(flag)

