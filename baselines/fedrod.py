"""FedRoD — Chen & Chao, "On Bridging Generic and Personalized Federated Learning for Image Classification",
ICLR 2022.

Two heads read the same features: a *generic* head, trained with the balanced-softmax loss (the logits shifted
by the log of the client's class prior, so the head learns the class-balanced posterior) and averaged with the
backbone, and a *personal* head that stays on the client and is trained on the residual: the prediction is
``generic + personal`` logits, with cross-entropy on that sum, the generic part detached and the features
detached (so the backbone learns only from the generic loss, as in the paper). Every client's personal heads
start as a copy of the initial generic heads, as in PFLlib's and FL-bench's FedRoD (``copy.deepcopy`` of the
generic head), so before any training a client predicts with twice the initial generic logits.

Early-exit extension ("-EE"): every exit has both heads. The network's ``exits`` are the generic heads; the
personal heads are extra tensors in the client state (only those of the exits chosen by ``personal_heads``:
``all`` exits or only the ``last``; an exit without a personal head predicts with its generic head). The local
loss is the sum over exits of the balanced-softmax losses plus the sum over personal exits of the residual
losses. Evaluation returns a predictor that adds the personal logits to the generic ones.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.methods.aggregation import GlobalModelMethod
from bench.methods.api import ClientData, LocalResult, Message, Predictor
from bench.methods.losses import exit_logits
from bench.methods.model_state import extract, head_index, load_state
from bench.methods.personalization import PersonalHeadsHparams, PersonalHeadsSplit
from bench.methods.registry import register
from bench.methods.training import train_epochs
from bench.models.base import EarlyExitNet, exit_prefix
from bench.record_names import TRAIN_LOSS

HeadTensors = dict[str, torch.Tensor]  # "exits.{k}.weight" / "exits.{k}.bias" of the personal exits


class FedRoDHparams(PersonalHeadsHparams):
    balanced_softmax: bool = Field(True, description="train the generic heads with the balanced-softmax loss "
                                                     "(False: plain cross-entropy, the paper's ablation)")


def balanced_softmax_loss(logits: torch.Tensor, y: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits + log p(class)``: the balanced-softmax loss for the client's class prior."""
    return F.cross_entropy(logits + log_prior, y)


def log_class_prior(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Log of the class frequencies of ``labels`` (−inf for absent classes, which then never get mass)."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.log(counts / counts.sum())


def personal_exits(heads: HeadTensors) -> list[int]:
    return sorted({head_index(name) for name in heads})


def personal_logits(heads: HeadTensors, k: int, features: torch.Tensor) -> torch.Tensor:
    return F.linear(features, heads[exit_prefix(k) + "weight"], heads[exit_prefix(k) + "bias"])


def combined_logits(model: EarlyExitNet, heads: HeadTensors, x: torch.Tensor) -> list[torch.Tensor]:
    """Per exit: generic logits, plus the personal logits where the exit has a personal head."""
    feats = model.features(x)
    logits = exit_logits(model, feats)
    for k in personal_exits(heads):
        logits[k] = logits[k] + personal_logits(heads, k, feats[k])
    return logits


@register
class FedRoD(PersonalHeadsSplit, GlobalModelMethod):
    name = "fedrod"
    order = 90
    family = "pfl"
    Hparams = FedRoDHparams

    def init_client(self, client: int, model: EarlyExitNet, server: dict[str, Any]) -> dict[str, Any]:
        return {"heads": {k: v.clone() for k, v in server["model"].items() if self.is_personal(k)}}

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, payload.tensors)
        heads = {k: v.detach().clone().requires_grad_(True) for k, v in state["heads"].items()}
        log_prior = log_class_prior(data.train_labels(), self.ctx.num_classes)
        if not self.hp.balanced_softmax:
            log_prior = torch.zeros_like(log_prior)

        def loss_fn(net: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            feats = net.features(x)
            generic = exit_logits(net, feats)
            losses = [balanced_softmax_loss(z, y, log_prior) for z in generic]
            for k in personal_exits(heads):
                residual = generic[k].detach() + personal_logits(heads, k, feats[k].detach())
                losses.append(F.cross_entropy(residual, y))
            return torch.stack(losses).sum()

        loss = train_epochs(model, data, gen, self.ctx.train, loss_fn,
                            params=[*model.parameters(), *heads.values()])
        new_heads = {k: v.detach().clone() for k, v in heads.items()}
        return LocalResult(Message(extract(model)), {"heads": new_heads}, {TRAIN_LOSS: loss})

    def eval_model(self, model: EarlyExitNet, client: int, server: dict[str, Any], state: dict[str, Any],
                   data: ClientData, gen: torch.Generator) -> Predictor:
        load_state(model, server["model"])
        model.eval()
        heads = state["heads"]
        return lambda x: combined_logits(model, heads, x)
