"""FedRep — Collins, Hassani, Mokhtari & Shakkottai, "Exploiting Shared Representations for Personalized
Federated Learning", ICML 2021.

Each round a client first trains its personal head with the shared representation frozen, then trains the
representation with the head frozen; only the representation is averaged. Early-exit extension: the
representation is the backbone, the heads are the exit heads (``personal_heads="all"``; with ``"last"`` only
the last head is personal and the shallow heads belong to the shared, averaged part and train in the body
phase). Both phases minimise the sum of all exits' cross-entropy losses. In the head phase the backbone is
completely fixed (weights and BatchNorm statistics). The paper trains the head for 10 epochs and the body
for 1; ``head_epochs`` defaults to 2 to keep CPU runs affordable.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from bench.methods.api import ClientData, LocalResult, Message, load_state, sum_ce_loss, train_epochs
from bench.methods.personalization import (
    PersonalHeadsHparams,
    PersonalHeadsMethod,
    frozen,
    frozen_backbone_loss,
    parameters_where,
)
from bench.methods.registry import register
from bench.models.base import EarlyExitNet


class FedRepHparams(PersonalHeadsHparams):
    head_epochs: int = Field(2, ge=1, description="epochs of head training (backbone frozen) per round",
                             json_schema_extra={"search": {"choices": [1, 2, 5, 10]}})
    body_epochs: int = Field(1, ge=1, description="epochs of body training (personal heads frozen) per round",
                             json_schema_extra={"search": {"choices": [1, 2]}})


@register
class FedRep(PersonalHeadsMethod):
    name = "fedrep"
    family = "pfl"
    Hparams = FedRepHparams

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, payload.tensors, state["heads"])
        train, heads, body = self.ctx.train, self.is_personal, self.is_shared
        with frozen(model, body):
            head_loss = train_epochs(model, data, gen, train, frozen_backbone_loss,
                                     params=parameters_where(model, heads), epochs=self.hp.head_epochs)
        with frozen(model, heads):
            body_loss = train_epochs(model, data, gen, train, sum_ce_loss,
                                     params=parameters_where(model, body), epochs=self.hp.body_epochs)
        upload, new_state = self.split_trained(model)
        return LocalResult(upload, new_state, {"train/loss": body_loss, "train/head_loss": head_loss})
