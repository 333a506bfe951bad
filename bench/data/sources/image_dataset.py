"""Assemble an image :class:`Dataset` with per-channel statistics computed from its pixels."""

from __future__ import annotations

import torch

from bench.data.dataset import Dataset

_STATS_CHUNK = 8192  # images per chunk, so statistics never need a float copy of the whole set


def channel_mean_std(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 ``N×C×H×W`` images on the 0..1 scale."""
    channels = x.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for chunk in x.split(_STATS_CHUNK):
        values = chunk.to(torch.float64).div_(255.0).transpose(0, 1).reshape(channels, -1)
        total += values.sum(dim=1)
        total_sq += values.square().sum(dim=1)
    count = x.numel() // channels
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def make_image_dataset(
    name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, class_names: list[str]
) -> Dataset:
    """A :class:`Dataset` of uint8 ``N×C×H×W`` images and int64 labels, with statistics filled in."""
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"dataset {name!r}: images must be uint8 N×C×H×W, got {x.dtype} {tuple(x.shape)}")
    mean, std = channel_mean_std(x)
    return Dataset(
        name=name,
        x=x.contiguous(),
        y=y.to(torch.int64),
        num_classes=num_classes,
        kind="image",
        mean=mean,
        std=std,
        class_names=class_names,
    )
