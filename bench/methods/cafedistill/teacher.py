"""Cross-client teachers: the [A-2] teacher-weight QP and the teachers' soft targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from bench.ground.tensor_ops import cosine_similarity_matrix, flatten, project_simplex


def head_similarity(heads: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """``s_ij``: cosine similarity of the flattened last-exit head parameters of clients ``i`` and ``j``."""
    return cosine_similarity_matrix(torch.stack([flatten(head) for head in heads]))


def teacher_weights(similarity: torch.Tensor, fractions: torch.Tensor, mu: float) -> torch.Tensor:
    """Row ``i`` is ``w_i = argmin_{w∈Δ} μ‖w − p‖² − w·s_i = Π_Δ(p + s_i/(2μ))`` ([A-2], closed form).

    ``similarity`` is the n×n matrix ``s``, ``fractions`` the clients' data fractions ``p``. Small ``μ`` puts
    all weight on the most similar teacher (the client itself); large ``μ`` gives ``w_i → p``.
    """
    if mu <= 0:
        raise ValueError(f"mu must be positive, got {mu}")
    p = fractions.double().to(similarity.device)
    if similarity.shape != (p.numel(), p.numel()):
        raise ValueError(f"similarity must be {p.numel()}×{p.numel()}, got {tuple(similarity.shape)}")
    if not torch.isfinite(similarity).all():
        raise RuntimeError("teacher weights: the clients' last-exit heads hold NaN or infinite values, so "
                           "training diverged (try a smaller train.lr)")
    return torch.stack([project_simplex(p + row.double() / (2 * mu)) for row in similarity])


def linear_teacher_probs(weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor,
                         tau: float) -> torch.Tensor:
    """``softmax(h(φ)/τ)`` of one linear head ``h`` (the averaged head of Eq. 9, or the client's own)."""
    return F.softmax(F.linear(features, weight, bias) / tau, dim=-1)


def mixture_teacher_probs(weights: torch.Tensor, biases: torch.Tensor, mix: torch.Tensor,
                          features: torch.Tensor, tau: float) -> torch.Tensor:
    """``Σ_j mix_j · softmax(h_j(φ)/τ)`` over stacked heads (``weights``: n×C×D, ``biases``: n×C) ([A-3])."""
    logits = torch.einsum("ncd,bd->bnc", weights, features) + biases
    return torch.einsum("n,bnc->bc", mix.to(features.dtype), F.softmax(logits / tau, dim=-1))

