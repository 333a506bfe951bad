"""The in-memory dataset every source returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Dataset:
    """A whole dataset held in memory.

    ``x`` is uint8 ``N×C×H×W`` for images or int64 ``N×L`` token ids for text; ``y`` is int64 ``N``.
    The sources pool their official train and test parts: clients draw train/val/test from their own
    Dirichlet share (see :mod:`bench.data.partition`). ``mean``/``std`` are per-channel statistics on
    the 0..1 scale used for normalisation (empty for text).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    kind: str = "image"  # "image" | "text"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    vocab_size: int = 0
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"dataset {self.name!r}: {self.x.shape[0]} inputs but {self.y.shape[0]} labels")
        if self.kind not in ("image", "text"):
            raise ValueError(f"dataset {self.name!r}: kind must be 'image' or 'text', not {self.kind!r}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input: ``(C, H, W)`` for images, ``(L,)`` for token ids."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.y.shape[0])
