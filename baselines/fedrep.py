"""FedRep — Collins, Hassani, Mokhtari & Shakkottai, "Exploiting Shared Representations for Personalized
Federated Learning", ICML 2021.

Each round a client first trains its personal head with the shared representation frozen, then trains the
representation with the head frozen; only the representation is averaged. Early-exit extension: the
representation is the backbone, the heads are the exit heads (``personal_heads="all"``; with ``"last"`` only
the last head is personal and the shallow heads belong to the shared, averaged part and train in the body
phase). Both phases minimise the sum of all exits' cross-entropy losses. In the head phase the backbone's
weights are fixed; its BatchNorm layers run in train mode (batch statistics, running statistics updated), as
in the authors' code, which calls ``model.train()`` and only stops the body's gradients; ``head_batchnorm=eval``
runs them on their stored statistics instead, leaving the backbone completely unchanged (in round 1 that
means heads fitted to features normalised with the initial statistics, mean 0 and variance 1). The paper
trains the head for 10 epochs and the body for 1; ``head_epochs`` defaults to 2 to keep CPU runs affordable.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from bench.methods.api import ClientData, LocalResult, Message
from bench.methods.model_state import load_state
from bench.methods.personalization import PersonalHeadsMethod
from bench.methods.phases import HeadPhaseHparams, train_head_then_body
from bench.methods.registry import register
from bench.models.base import EarlyExitNet
from bench.record_names import TRAIN_LOSS, train_metric


class FedRepHparams(HeadPhaseHparams):
    head_epochs: int = Field(2, ge=1, description="epochs of head training (backbone frozen) per round",
                             json_schema_extra={"search": {"choices": [1, 2, 5, 10]}})
    body_epochs: int = Field(1, ge=1, description="epochs of body training (personal heads frozen) per round",
                             json_schema_extra={"search": {"choices": [1, 2]}})


@register
class FedRep(PersonalHeadsMethod):
    name = "fedrep"
    order = 50
    family = "pfl"
    Hparams = FedRepHparams

    @classmethod
    def epochs_per_round(cls, hparams: FedRepHparams, local_epochs: int) -> float:
        """``head_epochs`` of the heads, then ``body_epochs`` of the body (``train.local_epochs`` is not used)."""
        return float(hparams.head_epochs + hparams.body_epochs)

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, payload.tensors, state["heads"])
        head_loss, body_loss = train_head_then_body(
            model, data, gen, self.ctx.train, self.is_personal, self.hp.head_epochs, self.hp.head_batchnorm,
            body_epochs=self.hp.body_epochs)
        upload, new_state = self.split_trained(model)
        return LocalResult(upload, new_state, {TRAIN_LOSS: body_loss, train_metric("head_loss"): head_loss})
