"""FedAvg — McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017.

The whole early-exit network is averaged, weighted by the clients' train sizes; every exit is trained with the
sum of the exits' cross-entropy losses. ``finetune_epochs > 0`` gives FedAvg+FT: before testing, each client
fine-tunes a copy of the global model on its own train split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field

from bench.methods.api import (
    ClientData,
    Hparams,
    LocalResult,
    LossFn,
    Message,
    Method,
    Predictor,
    extract,
    load_state,
    sum_ce_loss,
    train_epochs,
)
from bench.methods.personalization import average_uploads
from bench.methods.registry import register
from bench.models.base import EarlyExitNet


class FedAvgHparams(Hparams):
    finetune_epochs: int = Field(0, ge=0, description="local fine-tuning epochs before evaluation (FedAvg+FT)")


@register
class FedAvg(Method):
    name = "fedavg"
    family = "base"
    Hparams = FedAvgHparams

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        return Message(server["model"])

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, payload.tensors)
        loss = train_epochs(model, data, gen, self.ctx.train, self.local_objective(payload))
        return LocalResult(Message(extract(model)), state, {"train/loss": loss})

    def local_objective(self, payload: Message) -> LossFn:
        """The loss of local training (subclasses such as FedProx add terms that depend on the payload)."""
        return sum_ce_loss

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        return {"model": average_uploads(uploads, self.ctx.client_train_sizes)}

    def eval_params(self, client: int, server: dict[str, Any], state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return server["model"]

    def eval_model(self, model: EarlyExitNet, client: int, server: dict[str, Any], state: dict[str, Any],
                   data: ClientData, gen: torch.Generator) -> Predictor:
        load_state(model, server["model"])
        if self.hp.finetune_epochs:
            train_epochs(model, data, gen, self.ctx.train, sum_ce_loss, epochs=self.hp.finetune_epochs)
        return model
