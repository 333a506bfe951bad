"""Tensor operations shared by the engine and the methods (written once, used everywhere)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

TensorDict = dict[str, torch.Tensor]


def normalized_weights(weights: Sequence[float] | torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.ndim != 1 or len(w) == 0:
        raise ValueError("weights must be a non-empty 1-D sequence")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
    return w / w.sum()


def weighted_average(dicts: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | torch.Tensor,
                     keys: Iterable[str] | None = None) -> TensorDict:
    """Entry-wise weighted average of tensor dicts (weights are normalised to sum to one).

    Integer tensors (e.g. BatchNorm's ``num_batches_tracked``) are not averaged: the first dict's value is kept.
    """
    if len(dicts) != len(weights):
        raise ValueError(f"{len(dicts)} dicts but {len(weights)} weights")
    w = normalized_weights(weights)
    out: TensorDict = {}
    for key in keys if keys is not None else dicts[0].keys():
        first = dicts[0][key]
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for d, wi in zip(dicts, w.tolist(), strict=True):
            acc.add_(d[key], alpha=wi)
        out[key] = acc.to(first.dtype)
    return out


def flatten(tensors: Mapping[str, torch.Tensor], keys: Iterable[str] | None = None) -> torch.Tensor:
    """All floating-point entries (in key order) as one float64 vector."""
    names = sorted(tensors) if keys is None else list(keys)
    parts = [tensors[k].detach().reshape(-1).double() for k in names if tensors[k].is_floating_point()]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def cosine_similarity_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of the rows of ``vectors`` (n×d); a zero row has similarity 0 to all others."""
    v = vectors.double()
    norms = v.norm(dim=1, keepdim=True)
    unit = v / norms.clamp_min(1e-12)
    sim = unit @ unit.T
    return sim.clamp(-1.0, 1.0)


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of a vector onto the probability simplex (sort-based, O(n log n)).

    Solves ``argmin_{w >= 0, sum w = 1} ||w - v||^2``: ``w = max(v - theta, 0)`` with the threshold
    ``theta`` found from the sorted entries.
    """
    if v.ndim != 1 or v.numel() == 0:
        raise ValueError("project_simplex expects a non-empty 1-D tensor")
    x = v.double()
    u, _ = torch.sort(x, descending=True)
    cumulative = torch.cumsum(u, dim=0) - 1.0
    ranks = torch.arange(1, x.numel() + 1, dtype=torch.float64, device=x.device)
    support = u - cumulative / ranks > 0
    rho = int(torch.nonzero(support).max())
    theta = cumulative[rho] / (rho + 1)
    return torch.clamp(x - theta, min=0.0).to(v.dtype if v.is_floating_point() else torch.float64)


def state_nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Bytes occupied by the tensors' elements (what a payload costs on the wire, without framing)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def subtract(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> TensorDict:
    """``a - b`` over ``a``'s floating-point keys."""
    return {k: a[k] - b[k] for k in a if a[k].is_floating_point()}


def class_prototypes(features: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean of the rows of ``features`` (n×d) and the class counts.

    Returns ``(prototypes, counts)``: a ``num_classes×d`` float64 tensor whose row c is the mean feature of
    the samples labelled c (zeros for a class without samples) and the ``num_classes`` integer counts.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"class_prototypes expects n×d features and n labels, got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    counts = torch.bincount(labels, minlength=num_classes)
    if counts.numel() > num_classes:
        raise ValueError(f"labels reach {int(labels.max())} but num_classes is {num_classes}")
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, labels, features.detach().double())
    return sums / counts.clamp_min(1).unsqueeze(1), counts


def to_device(tree: Any, device: torch.device | str) -> Any:
    """A nested structure (dicts, lists, tuples) with every tensor moved to ``device`` (the same object where
    nothing moves); other leaves are kept."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {key: to_device(value, device) for key, value in tree.items()}
    if isinstance(tree, list):
        return [to_device(value, device) for value in tree]
    if isinstance(tree, tuple):
        return tuple(to_device(value, device) for value in tree)
    return tree
