"""FedBABU — Oh, Kim & Yun, "FedBABU: Toward Enhanced Representation for Federated Image Classification",
ICLR 2022.

The head is randomly initialised (the same for every client) and frozen during federated training; only the
body is trained and averaged. Personalization happens at evaluation: each client fine-tunes the model on its
own train split before testing. Early-exit extension: the body is the backbone and the head is the exit heads
(``personal_heads="all"``; with ``"last"`` only the last head is frozen and the shallow heads are trained and
averaged with the backbone). Training and fine-tuning minimise the sum of all exits' cross-entropy losses.

Fine-tuning runs on a scratch copy with the evaluation generator, so evaluating changes no stored state.
``finetune="full"`` (the default) fine-tunes the whole network, as the paper's algorithm and main results do
(its ablation finds fine-tuning the body as well as the head better than the head alone); ``"head"`` fine-tunes
the heads on a fixed backbone, whose BatchNorm runs in train mode as in the authors' code
(``head_batchnorm=eval``: on its stored statistics). The project's baselines doc
(``docs/baselines.md``) lists head fine-tuning first, with the whole model as the option; the default here
departs from it to follow the paper. The paper fine-tunes for a few epochs (up to 5 in its main tables); the
default here is ``finetune_epochs=2``, since fine-tuning runs for every client at every evaluation.

Not explained yet: the review found FedBABU at 49.0% mean accuracy against FedAvg's 65.7% (Fashion-MNIST,
α = 0.3, 20 clients, conv3, 30 rounds, one seed). The tiny synthetic config (4 clients, 12 rounds, α = 0.3)
does not reproduce it: there FedBABU reads 72.4% against FedAvg's 65.3%, though without fine-tuning
(``finetune_epochs=0``) its shallow exits are near chance (exit 1: 10.6% against 23.8%), so its early exits
depend on the fine-tuning more than FedAvg's do.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from bench.methods.api import ClientData, LocalResult, Message, Predictor, load_state
from bench.methods.personalization import PersonalHeadsMethod
from bench.methods.phases import HeadPhaseHparams, fine_tune, train_body
from bench.methods.registry import register
from bench.models.base import EarlyExitNet


class FedBABUHparams(HeadPhaseHparams):
    finetune_epochs: int = Field(2, ge=0, description="fine-tuning epochs before evaluation (0: none)",
                                 json_schema_extra={"search": {"choices": [1, 2, 5]}})
    finetune: Literal["head", "full"] = Field("full", description="what fine-tuning trains: the whole network "
                                                                   "(the paper) or the heads only (backbone fixed)")


@register
class FedBABU(PersonalHeadsMethod):
    name = "fedbabu"
    family = "pfl"
    Hparams = FedBABUHparams

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, payload.tensors, state["heads"])
        loss = train_body(model, data, gen, self.ctx.train, self.is_personal)
        upload, _ = self.split_trained(model)
        return LocalResult(upload, state, {"train/loss": loss})

    def eval_model(self, model: EarlyExitNet, client: int, server: dict[str, Any], state: dict[str, Any],
                   data: ClientData, gen: torch.Generator) -> Predictor:
        load_state(model, self.eval_params(client, server, state))
        heads = None if self.hp.finetune == "full" else self.is_personal
        return fine_tune(model, data, gen, self.ctx.train, self.hp.finetune_epochs, heads, self.hp.head_batchnorm)
