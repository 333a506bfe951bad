"""ResNets built from basic blocks, with one exit after each stage."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.base import EarlyExitNet
from bench.models.conv3 import global_average_pool


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers plus a shortcut: identity, or a 1×1 conv-BN projection if the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(EarlyExitNet):
    """CIFAR-style ResNet: a stride-1 3×3 stem, then stages of basic blocks, one exit after each stage.

    Stage ``k`` holds ``blocks_per_stage`` blocks with ``stage_channels[k]`` channels; every stage but
    the first halves the spatial size in its first block. The stem belongs to the first stage, so every
    backbone parameter lives under ``stages.``. The stem keeps stride 1 and has no maxpool for every input
    size (64 px inputs included), which keeps the architecture identical across datasets.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        stem_channels: int,
        stage_channels: tuple[int, ...],
        blocks_per_stage: int,
    ) -> None:
        super().__init__()
        in_channels = stem_channels
        stages = []
        for k, out_channels in enumerate(stage_channels):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if k == 0:
                layers["stem"] = nn.Sequential(
                    nn.Conv2d(input_shape[0], stem_channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(stem_channels),
                    nn.ReLU(inplace=True),
                )
            for b in range(blocks_per_stage):
                stride = 2 if k > 0 and b == 0 else 1
                layers[f"block{b}"] = BasicBlock(in_channels, out_channels, stride)
                in_channels = out_channels
            stages.append(nn.Sequential(layers))
        self.stages = nn.ModuleList(stages)
        self.exits = nn.ModuleList(nn.Linear(c, num_classes) for c in stage_channels)

    def pool(self, h: torch.Tensor, k: int) -> torch.Tensor:
        return global_average_pool(h)
