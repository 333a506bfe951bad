"""The objectives methods train early-exit networks with: per-exit cross-entropy, their sum, distillation."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.models.base import EarlyExitNet

# (model, inputs, labels) → the scalar loss of a batch, what :func:`bench.methods.training.train_epochs` minimises.
LossFn = Callable[[EarlyExitNet, torch.Tensor, torch.Tensor], torch.Tensor]


def exit_logits(model: EarlyExitNet, features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every exit head applied to the pooled features it reads (``model.features(x)``)."""
    return [head(f) for head, f in zip(model.exits, features, strict=True)]


def exit_ce_losses(logits: list[torch.Tensor], y: torch.Tensor) -> list[torch.Tensor]:
    """The cross-entropy loss of each exit's logits."""
    return [F.cross_entropy(z, y) for z in logits]


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, tau: float) -> torch.Tensor:
    """Knowledge distillation: ``τ²·KL(teacher ‖ softmax(z/τ))``, averaged over the batch."""
    log_student = F.log_softmax(student_logits / tau, dim=-1)
    return tau * tau * F.kl_div(log_student, teacher_probs, reduction="batchmean")


def sum_ce_loss(model: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The "-EE" default objective: the sum of the cross-entropy losses of all exits."""
    return torch.stack(exit_ce_losses(model(x), y)).sum()
