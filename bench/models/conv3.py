"""The three-block CNN early-exit network (the paper's CIFAR-10 model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.base import EarlyExitNet

#: Maxpooling stops once the feature map is this small, so tiny inputs (8×8) keep a spatial extent.
SMALLEST_POOLED_SIZE = 2


def global_average_pool(h: torch.Tensor) -> torch.Tensor:
    """``N×C×H×W`` feature maps → ``N×C`` channel means (the vector an image exit head reads)."""
    return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)


class Conv3(EarlyExitNet):
    """Conv blocks (3×3 conv → BN → ReLU → 2×2 maxpool), one exit after each block.

    ``channels`` gives each block's output channels; the maxpool is left out of a block whose input
    is already at most :data:`SMALLEST_POOLED_SIZE` pixels on a side. Heads are a linear layer on the
    globally average-pooled block output.
    """

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, channels: tuple[int, ...]
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        size = min(height, width)
        stages = []
        for out_channels in channels:
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            if size > SMALLEST_POOLED_SIZE:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.exits = nn.ModuleList(nn.Linear(c, num_classes) for c in channels)

    def pool(self, h: torch.Tensor, k: int) -> torch.Tensor:
        return global_average_pool(h)
