"""ScaleFL — Ilhan, Su & Liu, "ScaleFL: Resource-Adaptive Federated Learning with Heterogeneous Clients",
CVPR 2023.

Each complexity level scales the global early-exit network in depth and width: a client at level
``(fraction, depth, width)`` holds the first ``depth`` stages and exits of the width-``width`` model, whose
parameters are the leading slices of the full model's (widths are multipliers of the base architecture
like ``model.width``, which they must not exceed). Its local loss weights the held exits by position and
normalises, as the authors' code does:

    L = Σ_{j=1..d} j·ℓ_j / (d(d+1)/2),   ℓ_j = CE(z_j, y) + [r > T/4]·γ·τ²·KL_mean(softmax(z_d/τ) ‖ softmax(z_j/τ))

for the ``d`` held exits (``ℓ_d`` is the last exit's cross-entropy alone; its softened prediction is the teacher
of the earlier exits). Self-distillation is on after 25% of the ``T`` rounds: 0-based round index
``r > 0.25·T``, the authors' ``gamma_active = round > args.num_rounds * 0.25`` (with 8 rounds, from round 3 on).
``KL_mean`` is the authors' scale: PyTorch's ``nn.KLDivLoss()`` with its default element-wise mean, i.e. the
per-sample KL divergence averaged over the batch *and divided by the number of classes C*; ``γ = kd_weight``
(0.05, the authors' AG News setting) is meant for that scale, and ``τ = temperature`` (3, the authors' default).
The teacher is not detached (``detach_teacher=false``, the default): the authors' ``softmax(soft_target / T)``
keeps its graph, so the KD term also moves the last exit (and the stages under it) towards the earlier exits;
``detach_teacher=true`` stops that gradient, the usual one-way distillation.

The server averages every weight entry over the clients that hold it, element by element for width slices,
*uniformly* (``aggregation=uniform``, the default: the authors' ``average_weights`` sums the holders' values and
divides by their count); ``aggregation=train_size`` weights the holders by train size, like every other method.

Two details of the authors' width-scaled models, both on by default:

* ``activation_scaler``: in a sub-model narrower than the full one, every convolution's output is divided by
  its width rate (its output channels over the full model's, e.g. 0.5), in training and at evaluation, so the
  narrow model's activations keep the scale of the full model's (HeteroFL's scaler). Models without
  convolutions (``transformer4``) have nothing to scale.
* ``static_batchnorm``: BatchNorm layers never track running statistics in training (every client model, full
  ones included, normalises with its batch statistics; the global model's running statistics stay at their
  initial values). The authors then also normalise test batches with their own statistics; here evaluation
  must score each sample on its own, so before testing each client re-estimates the statistics of its model
  from one pass over its train split (HeteroFL's "static BatchNorm"), then evaluates in eval mode.
  ``static_batchnorm=false`` tracks and averages the running statistics like every other method.

Option ``levels``: a list of ``[fraction, depth, width]`` (default: every client holds the full model);
clients are assigned to levels deterministically from (seed, fractions), see
:mod:`bench.methods.heterogeneous`. Each client is evaluated on the global model cut to its level.

Why the first exit lags (the review found 14.5% at exit 1 with 10 classes after 30 rounds on Fashion-MNIST,
defaults): the authors' loss is a *normalised* position-weighted mean, so with three exits the first exit's
cross-entropy enters with weight 1/6 where the "-EE" sum of FedAvg gives it weight 1, and the backbone's
gradient is scaled down likewise (by 1/6 … 1/2 per exit's share). With the same learning rate the first head
and the stages under it therefore learn several times more slowly than under FedAvg. The KD term is not the
cause: on Fashion-MNIST (a fixed 2,400 images, 10 clients, α = 0.3, conv3 at width 0.25, 8 rounds) exit 1
reads 10.3% with γ = 0, chance, against 24.1% for FedAvg, and exit 2 23.9% against 29.4%
(``test_scalefl_first_exit_lags_fedavg_by_its_position_weight``, uniform aggregation; with the train-size
weighted aggregation ScaleFL had before, 10.3% and 21.5%). Measured with that earlier aggregation, a detached
teacher and KD from round ``r ≥ T/4``: with 3,000 images and 10 rounds exit 1 read 9.3% with γ = 0 and with
the default γ alike, against 26.2% for FedAvg; and before the KD term had the authors' scale it was C times
stronger (a per-sample ``batchmean`` KL with the same γ), which on the tiny synthetic test config (4 clients,
12 rounds, α = 0.3) moved exit 1 by about one point (15.8% with γ = 0.5, the old strength, against 17.0% with
γ = 0 and with the default γ).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from bench.methods.api import ClientData, Hparams, LocalResult, Message, Predictor
from bench.methods.batchnorm import batch_statistics_only, estimate_batchnorm_statistics
from bench.methods.heterogeneous import CapacityLevel, TieredMethod, check_fractions
from bench.methods.losses import LossFn, distillation_loss, exit_ce_losses
from bench.methods.model_state import extract
from bench.methods.registry import register
from bench.models.base import EarlyExitNet
from bench.record_names import TRAIN_LOSS

#: Self-distillation starts after this fraction of the rounds (0-based round > fraction·rounds).
KD_START_FRACTION = 0.25


class ScaleFLHparams(Hparams):
    kd_weight: float = Field(0.05, ge=0, description="γ: weight of the early exits' KD towards the last one "
                                                     "(on the authors' element-wise-mean KL scale)",
                             json_schema_extra={"search": {"low": 0.01, "high": 1.0, "log": True}})
    temperature: float = Field(3.0, gt=0, description="softmax temperature of the self-distillation")
    levels: list[tuple[float, int, float]] | None = Field(
        None, description="complexity levels [fraction, depth, width] (default: everyone the full model)")
    activation_scaler: bool = Field(True, description="divide narrow sub-models' convolution outputs by their "
                                                      "width rate (the authors' scaler)")
    static_batchnorm: bool = Field(True, description="BatchNorm without tracked statistics in training, "
                                                     "re-estimated on the client's train split to evaluate")
    detach_teacher: bool = Field(False, description="stop the KD term's gradient into the last exit (the "
                                                    "authors' teacher keeps its graph)")
    aggregation: Literal["uniform", "train_size"] = Field(
        "uniform", description="average each entry over its holders uniformly (the authors) or by train size")

    @field_validator("levels")
    @classmethod
    def _fractions_sum_to_one(cls, levels: list[tuple[float, int, float]] | None):
        if levels is not None:
            check_fractions([fraction for fraction, _, _ in levels])
        return levels


def scalefl_objective(kd_weight: float, temperature: float, detach_teacher: bool = False) -> LossFn:
    """Position-weighted, normalised exit losses; with ``kd_weight > 0`` earlier exits distil the last one.

    The distillation term is ``γ·τ²·KL/C``: the per-sample KL averaged over the batch and divided by the
    number of classes, the element-wise mean of the authors' ``nn.KLDivLoss()``. The teacher keeps its graph
    unless ``detach_teacher``.
    """

    def loss(model: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        terms = exit_ce_losses(logits, y)
        if kd_weight > 0:
            last = logits[-1].detach() if detach_teacher else logits[-1]
            teacher = F.softmax(last / temperature, dim=-1)
            num_classes = logits[-1].shape[-1]
            for j in range(len(logits) - 1):
                kd = distillation_loss(logits[j], teacher, temperature) / num_classes
                terms[j] = terms[j] + kd_weight * kd
        depth = len(logits)
        weighted = torch.stack([(j + 1) * term for j, term in enumerate(terms)]).sum()
        return weighted / (depth * (depth + 1) / 2)

    return loss


@register
class ScaleFL(TieredMethod):
    name = "scalefl"
    order = 130
    Hparams = ScaleFLHparams

    def capacity_levels(self) -> list[CapacityLevel]:
        if self.hp.levels is None:
            return [CapacityLevel(1.0, self.ctx.num_exits)]
        return [CapacityLevel(fraction, depth, width) for fraction, depth, width in self.hp.levels]

    def uses_activation_scaler(self) -> bool:
        return self.hp.activation_scaler

    def kd_active(self, round: int) -> bool:
        """Whether 0-based round ``round`` distils: ``round > T/4``, as the authors' ``gamma_active``."""
        return round > KD_START_FRACTION * self.ctx.rounds

    def objective(self, round: int) -> LossFn:
        """The local loss of round ``round`` (self-distillation only after 25% of the rounds)."""
        return scalefl_objective(self.hp.kd_weight if self.kd_active(round) else 0.0, self.hp.temperature,
                                 self.hp.detach_teacher)

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        sub = self.plan.model_for(data.client, model)
        with batch_statistics_only(sub) if self.hp.static_batchnorm else nullcontext():
            sub, loss = self.train_sub_model(model, payload.tensors, data, gen, self.objective(round))
        return LocalResult(Message(extract(sub)), state, {TRAIN_LOSS: loss})

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        uniform = self.hp.aggregation == "uniform"
        return {**server, "model": self.plan.aggregate(server["model"], uploads, uniform=uniform)}

    def eval_model(self, model: EarlyExitNet, client: int, server: dict[str, Any], state: dict[str, Any],
                   data: ClientData, gen: torch.Generator) -> Predictor:
        sub = super().eval_model(model, client, server, state, data, gen)
        if self.hp.static_batchnorm:
            estimate_batchnorm_statistics(sub, data, self.ctx.train.batch_size)
        return sub
