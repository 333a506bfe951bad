"""FedAvg — McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017.

The whole early-exit network is averaged, weighted by the clients' train sizes; every exit is trained with the
sum of the exits' cross-entropy losses. ``finetune_epochs > 0`` gives FedAvg+FT: before testing, each client
fine-tunes a copy of the global model (the whole network, on the same objective) on its own train split, with
the evaluation generator, so evaluating changes no stored state.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from bench.methods.aggregation import GlobalModelMethod
from bench.methods.api import ClientData, Hparams, LocalResult, Message, Predictor
from bench.methods.losses import LossFn, sum_ce_loss
from bench.methods.model_state import extract, load_state
from bench.methods.phases import fine_tune
from bench.methods.registry import register
from bench.methods.training import train_epochs
from bench.models.base import EarlyExitNet
from bench.record_names import TRAIN_LOSS


class FedAvgHparams(Hparams):
    finetune_epochs: int = Field(0, ge=0, description="local fine-tuning epochs before evaluation (FedAvg+FT)")


@register
class FedAvg(GlobalModelMethod):
    name = "fedavg"
    order = 10
    family = "base"
    Hparams = FedAvgHparams

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, payload.tensors)
        loss = train_epochs(model, data, gen, self.ctx.train, self.local_objective(payload))
        return LocalResult(Message(extract(model)), state, {TRAIN_LOSS: loss})

    def local_objective(self, payload: Message) -> LossFn:
        """The loss of local training (subclasses such as FedProx add terms that depend on the payload)."""
        return sum_ce_loss

    def eval_model(self, model: EarlyExitNet, client: int, server: dict[str, Any], state: dict[str, Any],
                   data: ClientData, gen: torch.Generator) -> Predictor:
        load_state(model, server["model"])
        return fine_tune(model, data, gen, self.ctx.train, self.hp.finetune_epochs)
