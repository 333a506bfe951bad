"""FedPAC — Xu, Tong & Huang, "Personalized Federated Learning with Feature Alignment and Classifier
Collaboration", ICLR 2023.

Local training, per round, as in the authors' code (``methods/fedpac.py``, ``train_round_fedpac``):

1. *Statistics*, before any training, on the received model (the global feature extractor with the client's
   combined classifier), on the client's train split in eval mode without augmentation: the class prototypes
   ``μ_i,c`` (per-class mean features) and the feature statistics the server's QP needs (``h_i``, ``V_i`` below).
   The authors take them here (``statistics_extraction`` before ``local_training``), so every client's ``h`` is
   measured in the same feature space, the global extractor's, and ``h_i − h_j`` compares like with like.
2. The personal classifier for ``head_epochs`` epochs with the feature extractor fixed.
3. The feature extractor (classifier frozen) on cross-entropy plus the feature-alignment regulariser
   ``λ · ‖f(x) − c_y‖² / d`` (mean over the batch and the d feature dimensions, as ``nn.MSELoss`` in the
   authors' code). The target ``c_y`` is the server's global prototype of the sample's class, or, for a class
   that has none yet, the client's own prototype of step 1, so every sample is aligned (as the authors do). The
   regulariser is on from the second round (0-based round ``r > 0``, as the authors' ``if round > 0``): before
   the first aggregation there are no global prototypes.
4. After training, the class prototypes again: these are uploaded for the global prototypes (the authors'
   ``local_protos2``).

BatchNorm of the fixed extractor in step 2: the authors' CNNs have no BatchNorm, so their code settles nothing
here; the default ``head_batchnorm=train`` (batch statistics, running statistics updated) is the convention of
every head phase in this project, FedRep's authors' ``model.train()``; ``head_batchnorm=eval`` uses the stored
statistics instead.

Server: the feature extractor is averaged (weighted by train size); the global prototype of a class is the
sample-count-weighted average of the clients' (post-training) prototypes of that class; and each client's
classifier becomes ``Σ_j α_ij φ_j``, a combination of the round's classifiers whose weights solve the paper's QP

    min_{α ∈ simplex}  Σ_j α_j² V_j + ‖Σ_j α_j (h_i − h_j)‖²_F,

with ``h_j`` the client's class-prior-weighted prototypes of step 1 (row c = ``p_j(c)·μ_j,c``) and
``V_j = (1/n_j) Σ_c [p_j(c)·E_c‖f‖² − p_j(c)²·‖μ_j,c‖²]`` the variance of that estimate (the authors' feature
statistics). The QP has one variable per client of the round, so it is solved exactly, by an active-set
method on its KKT system (:func:`bench.methods.simplex_qp.minimize_on_simplex`), instead of a generic QP
solver.

Early-exit extension ("-EE"): the features are the pooled features each exit reads, so prototypes, the
alignment term (summed over exits) and the classifier collaboration (one QP per exit) are per exit. The
classifiers are the exit heads chosen by ``personal_heads`` (``all``, or only the ``last``; shared heads are
then averaged with the backbone). The server holds each client's combined classifiers and sends them with the
backbone and the global prototypes; the evaluated model is the global backbone with the client's classifiers.
The upload carries both sets of prototypes (step 1's for ``h``, step 4's for the global prototypes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from bench.ground.tensor_ops import TensorDict, class_prototypes, weighted_average
from bench.methods.api import ClientData, LocalResult, Message, Method
from bench.methods.losses import exit_ce_losses, exit_logits
from bench.methods.model_state import extract, head_index, load_state
from bench.methods.personalization import PersonalHeadsSplit
from bench.methods.phases import HeadPhaseHparams, train_head_then_body
from bench.methods.registry import register
from bench.methods.simplex_qp import minimize_on_simplex
from bench.models.base import EarlyExitNet
from bench.record_names import TRAIN_LOSS

PROTOTYPE = "prototype."  # payload/upload keys of the per-exit prototypes: "prototype.{k}"
STATISTIC_PROTOTYPE = "statistic_prototype."  # upload keys of the pre-training prototypes behind h: ".{k}"
CLASS_COUNTS = "class_counts"
VARIANCE = "feature_variance"


class FedPACHparams(HeadPhaseHparams):
    align_weight: float = Field(1.0, ge=0, description="λ of the feature-alignment regulariser",
                                json_schema_extra={"search": {"low": 0.1, "high": 10.0, "log": True}})
    head_epochs: int = Field(1, ge=1, description="epochs of classifier training (features frozen) per round",
                             json_schema_extra={"search": {"choices": [1, 2]}})


@dataclass
class FeatureStatistics:
    """A client's per-exit feature statistics on its train split."""

    prototypes: list[torch.Tensor]  # per exit: num_classes×d class means
    counts: torch.Tensor  # num_classes samples per class
    variances: torch.Tensor  # per exit: V of the class-prior-weighted prototypes


@torch.no_grad()
def feature_statistics(model: EarlyExitNet, data: ClientData, num_classes: int,
                       batch_size: int) -> FeatureStatistics:
    """Class prototypes and the variance term of every exit, in eval mode without augmentation."""
    model.eval()
    batches = list(data.batches.eval_batches(data.train_idx, batch_size))
    labels = torch.cat([y for _, y in batches])
    per_exit = [torch.cat(parts) for parts in zip(*(model.features(x) for x, _ in batches), strict=True)]
    counts = torch.bincount(labels, minlength=num_classes)
    prototypes, variances = [], []
    for feats in per_exit:
        means, _ = class_prototypes(feats, labels, num_classes)
        second_moments, _ = class_prototypes(feats.double().pow(2).sum(1, keepdim=True), labels, num_classes)
        prior = counts.double() / counts.sum()
        spread = prior * second_moments[:, 0] - prior.pow(2) * means.pow(2).sum(1)
        prototypes.append(means)
        variances.append(spread.sum() / counts.sum())
    return FeatureStatistics(prototypes, counts, torch.stack(variances))


def alignment_targets(global_prototypes: torch.Tensor, known: torch.Tensor,
                      local_prototypes: torch.Tensor) -> torch.Tensor:
    """Per class: the global prototype where the class has one (``known``), else the client's own prototype."""
    return torch.where(known.unsqueeze(1), global_prototypes.to(local_prototypes.dtype), local_prototypes)


def alignment_loss(features: torch.Tensor, y: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``‖f − t_y‖² / d`` averaged over all samples of the batch (``targets``: one row per class)."""
    return (features - targets[y].to(features.dtype)).pow(2).mean()


def combination_weights(weighted_prototypes: torch.Tensor, variances: torch.Tensor,
                        client: int) -> torch.Tensor:
    """Weights (on the simplex) of the n clients' classifiers in client ``client``'s combined classifier.

    ``weighted_prototypes`` is n×C×d (client j's ``h_j``), ``variances`` the n values ``V_j``.
    """
    diffs = (weighted_prototypes[client].unsqueeze(0) - weighted_prototypes).flatten(1).double()
    return minimize_on_simplex(diffs @ diffs.T + torch.diag(variances.double()))


def aggregate_prototypes(uploads: list[TensorDict],
                         num_exits: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Global per-exit prototypes: per class, the sample-count-weighted mean of the clients' prototypes."""
    counts = torch.stack([u[CLASS_COUNTS] for u in uploads]).double()
    totals = counts.sum(0)
    prototypes = []
    for k in range(num_exits):
        stacked = torch.stack([u[f"{PROTOTYPE}{k}"] for u in uploads]).double()
        prototypes.append(((stacked * counts.unsqueeze(2)).sum(0) / totals.clamp_min(1).unsqueeze(1)).float())
    return prototypes, totals.long()


@register
class FedPAC(PersonalHeadsSplit, Method):
    name = "fedpac"
    order = 110
    family = "pfl"
    Hparams = FedPACHparams

    @classmethod
    def epochs_per_round(cls, hparams: FedPACHparams, local_epochs: int) -> float:
        """``head_epochs`` of the classifier, then ``local_epochs`` of the body (the feature statistics' forward
        passes are not counted)."""
        return float(hparams.head_epochs + local_epochs)

    def init_server(self, model: EarlyExitNet) -> dict[str, Any]:
        heads = extract(model, self.is_personal)
        device = model.exits[0].weight.device
        return {"shared": extract(model, self.is_shared),
                "heads": [heads for _ in range(self.ctx.num_clients)],
                "prototypes": [torch.zeros(self.ctx.num_classes, head.in_features, device=device)
                               for head in model.exits],
                "class_counts": torch.zeros(self.ctx.num_classes, dtype=torch.long, device=device)}

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        prototypes = {f"{PROTOTYPE}{k}": p for k, p in enumerate(server["prototypes"])}
        return Message({**server["shared"], **server["heads"][client], **prototypes,
                        CLASS_COUNTS: server["class_counts"]})

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, {k: v for k, v in payload.tensors.items()
                           if not k.startswith(PROTOTYPE) and k != CLASS_COUNTS})
        train = self.ctx.train
        received = feature_statistics(model, data, self.ctx.num_classes, train.batch_size)
        known = payload.tensors[CLASS_COUNTS] > 0
        targets = [alignment_targets(payload.tensors[f"{PROTOTYPE}{k}"], known, local)
                   for k, local in enumerate(received.prototypes)]
        align_weight = self.hp.align_weight if round > 0 else 0.0

        def loss_fn(net: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            feats = net.features(x)
            ce = torch.stack(exit_ce_losses(exit_logits(net, feats), y)).sum()
            if not align_weight:
                return ce
            align = [alignment_loss(f, y, t) for f, t in zip(feats, targets, strict=True)]
            return ce + align_weight * torch.stack(align).sum()

        _, loss = train_head_then_body(model, data, gen, train, self.is_personal, self.hp.head_epochs,
                                       self.hp.head_batchnorm, body_loss=loss_fn)
        trained = feature_statistics(model, data, self.ctx.num_classes, train.batch_size)
        upload = {**extract(model),
                  **{f"{PROTOTYPE}{k}": p.float() for k, p in enumerate(trained.prototypes)},
                  **{f"{STATISTIC_PROTOTYPE}{k}": p.float() for k, p in enumerate(received.prototypes)},
                  CLASS_COUNTS: received.counts, VARIANCE: received.variances}
        return LocalResult(Message(upload), state, {TRAIN_LOSS: loss})

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        clients = list(uploads)
        tensors = [uploads[c].tensors for c in clients]
        sizes = [self.ctx.client_train_sizes[c] for c in clients]
        shared = weighted_average(tensors, sizes, keys=list(server["shared"]))
        prototypes, class_counts = aggregate_prototypes(tensors, self.ctx.num_exits)
        counts = torch.stack([t[CLASS_COUNTS] for t in tensors]).double()
        priors = counts / counts.sum(1, keepdim=True)
        head_names = list(server["heads"][0])
        combined: dict[int, TensorDict] = {client: {} for client in clients}
        for k in sorted({head_index(name) for name in head_names}):
            weighted = torch.stack([t[f"{STATISTIC_PROTOTYPE}{k}"] for t in tensors]).double() * priors.unsqueeze(2)
            variances = torch.stack([t[VARIANCE][k] for t in tensors])
            names = [name for name in head_names if head_index(name) == k]
            for row, client in enumerate(clients):
                alpha = combination_weights(weighted, variances, row)
                combined[client].update(weighted_average(tensors, alpha, keys=names))
        heads = [combined.get(client, old) for client, old in enumerate(server["heads"])]
        return {"shared": shared, "heads": heads, "prototypes": prototypes, "class_counts": class_counts}

    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return {**server["shared"], **server["heads"][client]}
