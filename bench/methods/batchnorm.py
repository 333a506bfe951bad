"""BatchNorm without tracked statistics ("static" BatchNorm, HeteroFL / ScaleFL) and width activation scalers.

* :func:`batch_statistics_only` — within the block, BatchNorm layers normalise with the batch's statistics and
  do not update their running statistics (``track_running_stats=False``, the buffers kept);
* :func:`estimate_batchnorm_statistics` — the running statistics re-estimated from a pass over a client's
  train split (cumulative average over its batches, without augmentation), so that a model trained with
  static BatchNorm can predict every sample on its own at evaluation;
* :func:`add_activation_scaler` — divides the output of every convolution of a width-scaled sub-model by its
  width rate (its output channels over the full model's), so that its activations keep the full model's scale.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from bench.methods.api import ClientData

BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BATCHNORM_TYPES)]


@contextmanager
def batch_statistics_only(model: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers in train mode leave their running statistics as they are."""
    layers = [(m, m.track_running_stats) for m in batchnorm_layers(model)]
    for m, _ in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, flag in layers:
            m.track_running_stats = flag


@torch.no_grad()
def estimate_batchnorm_statistics(model: nn.Module, data: ClientData, batch_size: int) -> None:
    """Set every BatchNorm layer's running statistics to their average over the client's train batches.

    Runs the train split once in train mode, in order and without augmentation, with the running statistics
    reset and ``momentum=None`` (an equal-weight average over the batches); leaves the model in eval mode.
    """
    layers = [(m, m.momentum, m.track_running_stats) for m in batchnorm_layers(model)]
    if not layers:
        model.eval()
        return
    for m, _, _ in layers:
        m.reset_running_stats()
        m.momentum = None
        m.track_running_stats = True
    model.train()
    try:
        for x, _ in data.batches.eval_batches(data.train_idx, batch_size):
            model(x)
    finally:
        for m, momentum, flag in layers:
            m.momentum = momentum
            m.track_running_stats = flag
        model.eval()


class DivideOutput:
    """Forward hook that divides a module's output by a fixed rate (picklable, unlike a closure)."""

    def __init__(self, rate: float):
        self.rate = rate

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        return output / self.rate


def add_activation_scaler(model: nn.Module, full_shapes: Mapping[str, torch.Size]) -> int:
    """Hook a scaler after every convolution of ``model`` that is narrower than the full model's.

    The rate of a convolution is its output channels over those of the same convolution in the full model
    (``full_shapes``: the full model's state shapes); convolutions as wide as the full model's are left alone.
    Returns the number of scaled convolutions.
    """
    scaled = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            full = full_shapes[f"{name}.weight"][0]
            if module.out_channels < full:
                module.register_forward_hook(DivideOutput(module.out_channels / full))
                scaled += 1
    return scaled
