"""Training one part of the network while the other stays fixed: head phases, body phases, fine-tuning.

* :class:`HeadPhaseHparams` — the ``head_batchnorm = "train" | "eval"`` option of methods with a head phase
  (FedRep, FedPAC, FedBABU's head fine-tuning): the backbone's weights are fixed in a head phase, and its
  BatchNorm layers either normalise with the batch statistics and update their running statistics, as the
  authors' code does (``"train"``, the default: it calls ``model.train()`` and freezes only the weights), or use
  the stored statistics and leave the backbone completely unchanged (``"eval"``);
* :func:`head_loss` — the summed exit cross-entropy with the backbone fixed, for either BatchNorm mode;
* :func:`train_heads`, :func:`train_body`, :func:`train_head_then_body` — FedRep's and FedPAC's two phases;
* :func:`fine_tune` — fine-tuning before evaluation (FedAvg+FT, FedBABU): the whole network, or the heads only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from bench.methods.api import ClientData, TrainSettings
from bench.methods.losses import LossFn, exit_ce_losses, exit_logits, sum_ce_loss
from bench.methods.personalization import KeyFilter, PersonalHeadsHparams, frozen, parameters_where
from bench.methods.training import train_epochs
from bench.models.base import EarlyExitNet

BatchNormMode = Literal["train", "eval"]


class HeadPhaseHparams(PersonalHeadsHparams):
    """Mixin field of methods that train the heads on a fixed backbone."""

    head_batchnorm: BatchNormMode = Field(
        "train", description="BatchNorm of the fixed backbone while the heads train: 'train' (batch statistics, "
                             "running statistics updated, as the authors) or 'eval' (stored statistics)")


def head_loss(batchnorm: BatchNormMode) -> LossFn:
    """Sum of the exits' cross-entropy losses computed on backbone features that get no gradient.

    With ``batchnorm="train"`` the backbone runs as :func:`~bench.methods.training.train_epochs` left it (train
    mode: batch statistics, running statistics updated); with ``"eval"`` it runs in eval mode, so neither its
    weights nor its statistics change. Only the heads get gradients.
    """
    if batchnorm not in ("train", "eval"):
        raise ValueError(f"head_batchnorm must be 'train' or 'eval', got {batchnorm!r}")

    def loss(model: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if batchnorm == "eval":
            for child in model.children():
                if child is not model.exits:
                    child.eval()
        with torch.no_grad():
            feats = model.features(x)
        return torch.stack(exit_ce_losses(exit_logits(model, feats), y)).sum()

    return loss


def train_heads(model: EarlyExitNet, data: ClientData, gen: torch.Generator, train: TrainSettings,
                heads: KeyFilter, epochs: int, batchnorm: BatchNormMode) -> float:
    """Train the parameters that pass ``heads`` on a fixed backbone; returns the mean loss."""
    with frozen(model, lambda name: not heads(name)):
        return train_epochs(model, data, gen, train, head_loss(batchnorm), params=parameters_where(model, heads),
                            epochs=epochs)


def train_body(model: EarlyExitNet, data: ClientData, gen: torch.Generator, train: TrainSettings,
               heads: KeyFilter, loss_fn: LossFn = sum_ce_loss, epochs: int | None = None) -> float:
    """Train everything but the parameters that pass ``heads`` (which stay fixed); returns the mean loss."""
    with frozen(model, heads):
        return train_epochs(model, data, gen, train, loss_fn,
                            params=parameters_where(model, lambda name: not heads(name)), epochs=epochs)


def train_head_then_body(model: EarlyExitNet, data: ClientData, gen: torch.Generator, train: TrainSettings,
                         heads: KeyFilter, head_epochs: int, batchnorm: BatchNormMode,
                         body_loss: LossFn = sum_ce_loss, body_epochs: int | None = None) -> tuple[float, float]:
    """The heads for ``head_epochs`` on a fixed body, then the body on fixed heads; returns both mean losses."""
    head = train_heads(model, data, gen, train, heads, head_epochs, batchnorm)
    body = train_body(model, data, gen, train, heads, body_loss, body_epochs)
    return head, body


def fine_tune(model: EarlyExitNet, data: ClientData, gen: torch.Generator, train: TrainSettings, epochs: int,
              heads: KeyFilter | None = None, batchnorm: BatchNormMode = "train") -> EarlyExitNet:
    """Fine-tune ``model`` in place on the client's train split before evaluation, and return it.

    ``heads=None`` trains the whole network on the summed exit cross-entropy; otherwise only the parameters
    that pass ``heads``, on a fixed backbone (:func:`train_heads`). ``epochs=0`` leaves the model as it is.
    """
    if epochs and heads is None:
        train_epochs(model, data, gen, train, sum_ce_loss, epochs=epochs)
    elif epochs:
        train_heads(model, data, gen, train, heads, epochs, batchnorm)
    return model
