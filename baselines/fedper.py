"""FedPer — Arivazhagan, Aggarwal, Singh & Choudhary, "Federated Learning with Personalization Layers",
arXiv:1912.00818, 2019.

The base layers are averaged across clients; the personalization layers (the head) never leave the client.
Both are trained together every round. Early-exit extension: the backbone is averaged, the exit heads are
personal (``personal_heads="all"``; with ``"last"`` only the last head is personal and the shallow heads are
averaged with the backbone); local training minimises the sum of all exits' cross-entropy losses.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.methods.api import ClientData, LocalResult, Message
from bench.methods.losses import sum_ce_loss
from bench.methods.model_state import load_state
from bench.methods.personalization import PersonalHeadsHparams, PersonalHeadsMethod
from bench.methods.registry import register
from bench.methods.training import train_epochs
from bench.models.base import EarlyExitNet
from bench.record_names import TRAIN_LOSS


@register
class FedPer(PersonalHeadsMethod):
    name = "fedper"
    order = 40
    family = "pfl"
    Hparams = PersonalHeadsHparams

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, payload.tensors, state["heads"])
        loss = train_epochs(model, data, gen, self.ctx.train, sum_ce_loss)
        upload, new_state = self.split_trained(model)
        return LocalResult(upload, new_state, {TRAIN_LOSS: loss})
