"""Local training only: each client trains its own early-exit network and never communicates.

The floor every federated method must beat. All clients start from the same initial weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from bench.methods.api import ClientData, LocalResult, Message, Method
from bench.methods.losses import sum_ce_loss
from bench.methods.model_state import extract, load_state
from bench.methods.registry import register
from bench.methods.training import train_epochs
from bench.models.base import EarlyExitNet
from bench.record_names import TRAIN_LOSS


@register
class Local(Method):
    name = "local"
    order = 20
    family = "base"

    def init_server(self, model: EarlyExitNet) -> dict[str, Any]:
        return {}

    def init_client(self, client: int, model: EarlyExitNet, server: dict[str, Any]) -> dict[str, Any]:
        return {"model": extract(model)}

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        return Message()

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, state["model"])
        loss = train_epochs(model, data, gen, self.ctx.train, sum_ce_loss)
        return LocalResult(Message(), {"model": extract(model)}, {TRAIN_LOSS: loss})

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        return server

    def eval_params(self, client: int, server: dict[str, Any], state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return state["model"]
