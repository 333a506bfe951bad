"""Ditto — Li, Hu, Beirami & Smith, "Ditto: Fair and Robust Federated Learning Through Personalization",
ICML 2021.

Each client keeps two models: the global model ``w``, trained locally as in FedAvg and averaged by the server,
and a personal model ``v``, trained on the local loss plus ``λ/2·‖v − w‖²`` towards the global model received
this round. The personal model is the one evaluated. Early-exit extension: both models are whole early-exit
networks trained on the sum of all exits' cross-entropy losses; the regulariser spans every parameter.
The paper tunes λ per dataset (values between 0.05 and 2); the default here is λ = 0.1. ``personal_epochs``
defaults to the configured local epochs (the paper uses as many personal as global local steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field

from bench.methods.aggregation import GlobalModelMethod
from bench.methods.api import ClientData, Hparams, LocalResult, Message
from bench.methods.losses import sum_ce_loss
from bench.methods.model_state import extract, load_state
from bench.methods.personalization import proximal_objective
from bench.methods.registry import register
from bench.methods.training import train_epochs
from bench.models.base import EarlyExitNet
from bench.record_names import TRAIN_LOSS, train_metric


class DittoHparams(Hparams):
    lam: float = Field(0.1, ge=0, description="λ, the pull of the personal model towards the global one",
                       json_schema_extra={"search": {"low": 0.01, "high": 2.0, "log": True}})
    personal_epochs: int | None = Field(None, ge=1, description="epochs of personal-model training per round "
                                                                "(None: train.local_epochs)",
                                        json_schema_extra={"search": {"choices": [1, 2]}})


@register
class Ditto(GlobalModelMethod):
    name = "ditto"
    order = 100
    family = "pfl"
    Hparams = DittoHparams

    @classmethod
    def epochs_per_round(cls, hparams: DittoHparams, local_epochs: int) -> float:
        """The global model's ``local_epochs`` and then the personal model's ``personal_epochs``."""
        return float(local_epochs + (hparams.personal_epochs or local_epochs))

    def init_client(self, client: int, model: EarlyExitNet, server: dict[str, Any]) -> dict[str, Any]:
        return {"model": extract(model)}

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        train = self.ctx.train
        load_state(model, payload.tensors)
        global_loss = train_epochs(model, data, gen, train, sum_ce_loss)
        upload = Message(extract(model))
        load_state(model, state["model"])
        personal_loss = train_epochs(model, data, gen, train, proximal_objective(payload.tensors, self.hp.lam),
                                     epochs=self.hp.personal_epochs)
        return LocalResult(upload, {"model": extract(model)},
                           {TRAIN_LOSS: global_loss, train_metric("personal_loss"): personal_loss})

    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return state["model"]
