"""FedBABU — Oh, Kim & Yun, "FedBABU: Toward Enhanced Representation for Federated Image Classification",
ICLR 2022.

The head is randomly initialised (the same for every client) and frozen during federated training; only the
body is trained and averaged. Personalization happens at evaluation: each client fine-tunes the model on its
own train split before testing. Early-exit extension: the body is the backbone and the head is the exit heads
(``personal_heads="all"``; with ``"last"`` only the last head is frozen and the shallow heads are trained and
averaged with the backbone). Training and fine-tuning minimise the sum of all exits' cross-entropy losses.
Fine-tuning (``finetune="full"``: the whole network, as in the paper's main results; ``"head"``: the heads
only, the backbone completely fixed) runs on a scratch copy with the evaluation generator, so evaluating
changes no stored state. The paper fine-tunes for a few epochs (up to 5 in its main tables); the default here
is ``finetune_epochs=2``, since fine-tuning runs for every client at every evaluation.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from bench.methods.api import (
    ClientData,
    LocalResult,
    Message,
    Predictor,
    load_state,
    sum_ce_loss,
    train_epochs,
)
from bench.methods.personalization import (
    PersonalHeadsHparams,
    PersonalHeadsMethod,
    frozen,
    frozen_backbone_loss,
    parameters_where,
)
from bench.methods.registry import register
from bench.models.base import EarlyExitNet


class FedBABUHparams(PersonalHeadsHparams):
    finetune_epochs: int = Field(2, ge=0, description="fine-tuning epochs before evaluation (0: none)",
                                 json_schema_extra={"search": {"choices": [1, 2, 5]}})
    finetune: Literal["head", "full"] = Field("full", description="what fine-tuning trains: the heads only "
                                                                   "(backbone fixed) or the whole network")


@register
class FedBABU(PersonalHeadsMethod):
    name = "fedbabu"
    family = "pfl"
    Hparams = FedBABUHparams

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, payload.tensors, state["heads"])
        with frozen(model, self.is_personal):
            loss = train_epochs(model, data, gen, self.ctx.train, sum_ce_loss,
                                params=parameters_where(model, self.is_shared))
        upload, _ = self.split_trained(model)
        return LocalResult(upload, state, {"train/loss": loss})

    def eval_model(self, model: EarlyExitNet, client: int, server: dict[str, Any], state: dict[str, Any],
                   data: ClientData, gen: torch.Generator) -> Predictor:
        load_state(model, self.eval_params(client, server, state))
        epochs, train = self.hp.finetune_epochs, self.ctx.train
        if epochs and self.hp.finetune == "full":
            train_epochs(model, data, gen, train, sum_ce_loss, epochs=epochs)
        elif epochs:
            with frozen(model, self.is_shared):
                train_epochs(model, data, gen, train, frozen_backbone_loss,
                             params=parameters_where(model, self.is_personal), epochs=epochs)
        return model
