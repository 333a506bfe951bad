"""In-memory batching with whole-batch tensor augmentation: the training hot path.

Batches are gathered from the dataset tensor by index; random crops and horizontal flips are applied
to a whole batch with one flat ``index_select``, never by a Python loop over samples. The data, the indices and
every batch stay on the maker's device (no host-device copy per batch). All random draws come from the
caller-supplied CPU ``torch.Generator``: on the CPU directly, on another device from a generator on that device
seeded by one draw of it, so batches are reproducible bitwise on each kind of device (a CPU and a GPU draw
different streams).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.data.dataset import Dataset

# Datasets whose classes change meaning under a mirror image (digits, characters): no horizontal flip.
MIRROR_SENSITIVE = frozenset({"mnist", "emnist", "kmnist", "digits", "svhn", "usps"})


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop from a zero-padded image (0 = off) and random horizontal flip."""

    crop_padding: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip


def default_augment(dataset: Dataset) -> Augment | None:
    """The standard augmentation for ``dataset``, or None where none fits.

    Text: none. Images smaller than 28 px (e.g. 8×8 digits): none, as a one-pixel shift is already a
    large distortion. 28-31 px (MNIST-like): crop padding 2; 32 px and larger (CIFAR, TinyImageNet):
    crop padding 4. Horizontal flips for natural images and clothing, not for the mirror-sensitive
    datasets in :data:`MIRROR_SENSITIVE` (digits and characters).
    """
    if dataset.kind == "text":
        return None
    height = dataset.x.shape[-2]
    if height < 28:
        return None
    padding = 2 if height < 32 else 4
    return Augment(crop_padding=padding, hflip=dataset.name.lower() not in MIRROR_SENSITIVE)


class BatchMaker:
    """Makes model-ready batches of a dataset held in memory on ``device``.

    Images (uint8) come out as float32 ``(x / 255 - mean) / std`` per channel; token ids pass through.
    """

    def __init__(self, dataset: Dataset, augment: Augment | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.is_image = dataset.kind == "image"
        if self.is_image:
            self._check_image_dataset(dataset)
        elif augment is not None and augment.active:
            raise ValueError(
                f"dataset {dataset.name!r} is text: image augmentation does not apply; pass None"
            )
        self.augment = augment if augment is not None and augment.active else None
        self.x = dataset.x.to(self.device)
        self.y = dataset.y.to(self.device)
        if self.is_image:
            mean = torch.tensor(dataset.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
            std = torch.tensor(dataset.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
            self._scale = 1.0 / (255.0 * std)
            self._shift = -mean / std

    @staticmethod
    def _check_image_dataset(dataset: Dataset) -> None:
        if dataset.x.dtype != torch.uint8 or dataset.x.ndim != 4:
            raise ValueError(
                f"dataset {dataset.name!r}: images must be uint8 N×C×H×W, got {dataset.x.dtype} "
                f"of shape {tuple(dataset.x.shape)}"
            )
        channels = dataset.x.shape[1]
        if len(dataset.mean) != channels or len(dataset.std) != channels:
            raise ValueError(
                f"dataset {dataset.name!r}: mean and std need {channels} values (one per channel), "
                f"got {len(dataset.mean)} and {len(dataset.std)}"
            )
        if any(s <= 0 for s in dataset.std):
            raise ValueError(f"dataset {dataset.name!r}: std must be positive, got {dataset.std}")

    def to_input(self, xb: torch.Tensor) -> torch.Tensor:
        """Model input from raw data: uint8 images are normalised to float32; token ids pass through."""
        xb = xb.to(self.device)
        if not self.is_image:
            return xb
        return xb.to(torch.float32).mul_(self._scale).add_(self._shift)

    def num_batches(self, n: int, batch_size: int, drop_last: bool = False) -> int:
        """Number of batches one pass over ``n`` samples yields."""
        _check_batch_size(batch_size)
        return n // batch_size if drop_last else math.ceil(n / batch_size)

    def train_batches(
        self,
        idx: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        epochs: int = 1,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented, normalised ``(inputs, labels)`` batches of the samples ``idx``.

        Each epoch reshuffles ``idx`` with ``generator`` (a CPU generator; see :meth:`device_generator`); crop
        offsets and flips are drawn from it for a whole batch at once. Deterministic given the generator's state.
        """
        idx = self._check_indices(idx)
        _check_batch_size(batch_size)
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        generator = self.device_generator(generator)
        for _ in range(epochs):
            order = idx[torch.randperm(len(idx), generator=generator, device=self.device)]
            for batch in _chunks(order, batch_size, drop_last):
                xb, yb = self._gather(batch)
                if self.augment is not None:
                    xb = _crop_and_flip(xb, self.augment, generator)
                yield self.to_input(xb), yb

    def eval_batches(self, idx: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised ``(inputs, labels)`` batches of ``idx`` in the given order, without augmentation."""
        idx = self._check_indices(idx)
        _check_batch_size(batch_size)
        for batch in _chunks(idx, batch_size, drop_last=False):
            xb, yb = self._gather(batch)
            yield self.to_input(xb), yb

    def device_generator(self, generator: torch.Generator) -> torch.Generator:
        """The generator the batches draw from: ``generator`` itself on the CPU; on another device, a generator on
        it seeded by one draw of ``generator``."""
        if self.device.type == "cpu":
            return generator
        on_device = torch.Generator(self.device)
        on_device.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        return on_device

    def _check_indices(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError(
                f"idx must be a 1-D integer index tensor, got {idx.dtype} of shape {tuple(idx.shape)}"
            )
        return idx.to(device=self.device, dtype=torch.int64)

    def _gather(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x.index_select(0, batch), self.y.index_select(0, batch)


def _crop_and_flip(xb: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the zero-padded images and random horizontal flip of a batch, as one gather.

    Output pixel ``(r, c)`` of image ``i`` reads padded pixel ``(r + dy_i, c + dx_i)``, or
    ``(r + dy_i, W - 1 - c + dx_i)`` when the image is flipped; offsets and flips are drawn per image.
    """
    n, channels, height, width = xb.shape
    pad, device = augment.crop_padding, xb.device
    rows = torch.arange(height, device=device).expand(n, height)
    cols = torch.arange(width, device=device).expand(n, width)
    if pad > 0:
        xb = F.pad(xb, (pad, pad, pad, pad))
        rows = rows + torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
        cols = cols + torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
    if augment.hflip:
        flip = torch.rand(n, 1, generator=generator, device=device) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)
    # One flat index_select is far cheaper than 4-D advanced indexing, especially with several threads.
    padded_height, padded_width = xb.shape[-2:]
    plane = torch.arange(n * channels, device=device).view(n, channels, 1, 1) * (padded_height * padded_width)
    flat = plane + (rows * padded_width).view(n, 1, height, 1) + cols.view(n, 1, 1, width)
    return xb.reshape(-1).index_select(0, flat.view(-1)).view(n, channels, height, width)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _chunks(order: torch.Tensor, batch_size: int, drop_last: bool) -> Iterator[torch.Tensor]:
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]
