"""A fixed class-balanced subset of a dataset (``data.max_samples``), drawn before the partition."""

from __future__ import annotations

import dataclasses
import logging

import torch

from bench.data.dataset import Dataset

log = logging.getLogger(__name__)


def balanced_subset(labels: torch.Tensor, num_samples: int, num_classes: int) -> torch.Tensor:
    """Indices (ascending) of a class-balanced subset of ``num_samples``, drawn by a fixed seeded permutation.

    Each class contributes ``num_samples // num_classes`` samples, and the first ``num_samples % num_classes``
    classes one more (a class with fewer gives all it has); within a class the samples are those that come first in
    the permutation (seed 0), so a smaller subset is contained in a larger one."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    shuffled = labels[order]
    per_class = [num_samples // num_classes + (c < num_samples % num_classes) for c in range(num_classes)]
    chosen = torch.cat([order[shuffled == c][:n] for c, n in enumerate(per_class)])
    return chosen.sort().values


def subsample(dataset: Dataset, max_samples: int | None) -> Dataset:
    """``dataset`` cut to a class-balanced subset of at most ``max_samples`` (:func:`balanced_subset`); the whole
    dataset when ``max_samples`` is None or not smaller. The subset keeps the whole dataset's normalisation
    statistics.

    Raises:
        ValueError: ``max_samples`` is fewer than the dataset's classes (some class would have no sample).
    """
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    if max_samples < dataset.num_classes:
        raise ValueError(f"data.max_samples={max_samples} is fewer than the {dataset.num_classes} classes of "
                         f"{dataset.name!r}: give at least {dataset.num_classes} (one sample per class)")
    keep = balanced_subset(dataset.y, max_samples, dataset.num_classes)
    log.info("data.max_samples: %d of the %d samples of %s, class-balanced", len(keep), len(dataset), dataset.name)
    return dataclasses.replace(dataset, x=dataset.x[keep], y=dataset.y[keep])
