"""The named early-exit networks and :func:`build_model`, the one way to construct them.

``width`` scales every hidden channel count / model dimension to ``max(1, round(c * width))`` and keeps
the architecture otherwise identical, so a width-``w`` model's parameters have the shapes of leading
slices of the full model's (what ScaleFL's width-sliced sub-models need).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import torch

from bench.models.base import EarlyExitNet
from bench.models.conv3 import Conv3
from bench.models.resnet import ResNet
from bench.models.transformer import TransformerEncoderNet

logger = logging.getLogger(__name__)

#: Attention head width of ``transformer4``: the head count follows the width (4 heads at width 1), so
#: a width-sliced model's heads are the full model's leading heads.
TRANSFORMER_HEAD_DIM = 32

ImageModelBuilder = Callable[[tuple[int, int, int], int, float], EarlyExitNet]
TextModelBuilder = Callable[[int, int, int, float], EarlyExitNet]


def scaled(channels: int, width: float) -> int:
    """``channels`` scaled by ``width``, rounded, at least 1."""
    return max(1, round(channels * width))


def _conv3(input_shape: tuple[int, int, int], num_classes: int, width: float) -> EarlyExitNet:
    return Conv3(input_shape, num_classes, channels=tuple(scaled(c, width) for c in (32, 64, 128)))


def _resnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: float,
    *,
    stage_channels: tuple[int, ...],
    blocks_per_stage: int,
) -> EarlyExitNet:
    return ResNet(
        input_shape,
        num_classes,
        stem_channels=scaled(stage_channels[0], width),
        stage_channels=tuple(scaled(c, width) for c in stage_channels),
        blocks_per_stage=blocks_per_stage,
    )


def _transformer4(max_length: int, num_classes: int, vocab_size: int, width: float) -> EarlyExitNet:
    d_model = scaled(128, width)
    num_heads = max(1, round(d_model / TRANSFORMER_HEAD_DIM))
    return TransformerEncoderNet(
        max_length,
        num_classes,
        vocab_size,
        d_model=d_model - d_model % num_heads,
        num_heads=num_heads,
        ff_dim=scaled(256, width),
        depth=4,
    )


IMAGE_MODELS: dict[str, ImageModelBuilder] = {
    "conv3": _conv3,
    "resnet8": partial(_resnet, stage_channels=(16, 32, 64), blocks_per_stage=1),
    "resnet20": partial(_resnet, stage_channels=(16, 32, 64), blocks_per_stage=3),
    "resnet18": partial(_resnet, stage_channels=(64, 128, 256, 512), blocks_per_stage=2),
}
TEXT_MODELS: dict[str, TextModelBuilder] = {"transformer4": _transformer4}
MODELS: dict[str, Callable[..., EarlyExitNet]] = {**IMAGE_MODELS, **TEXT_MODELS}


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    vocab_size: int = 0,
    width: float = 1.0,
    seed: int | None = None,
) -> EarlyExitNet:
    """Build model ``name`` for inputs of ``input_shape`` (``(C, H, W)`` images or ``(L,)`` token ids).

    ``vocab_size`` is required for text models. With ``seed`` the initial weights come from that seed
    and the global RNG state is left untouched; without it they come from the global RNG.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(sorted(MODELS))}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if not width > 0:
        raise ValueError(f"width must be positive (1.0 is the full model), got {width}")
    shape = tuple(input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must hold positive sizes, got {shape}")
    if name in IMAGE_MODELS and len(shape) != 3:
        raise ValueError(
            f"model {name!r} takes images of shape (C, H, W), but input_shape is {shape}; "
            f"for token sequences of shape (L,) use one of: {', '.join(sorted(TEXT_MODELS))}"
        )
    if name in TEXT_MODELS and len(shape) != 1:
        raise ValueError(
            f"model {name!r} takes token ids of shape (L,), but input_shape is {shape}; "
            f"for images use one of: {', '.join(sorted(IMAGE_MODELS))}"
        )
    if name in TEXT_MODELS and vocab_size < 2:
        raise ValueError(f"model {name!r} needs the dataset's vocab_size (at least 2), got {vocab_size}")

    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if name in IMAGE_MODELS:
            model = IMAGE_MODELS[name](shape, num_classes, width)
        else:
            model = TEXT_MODELS[name](shape[0], num_classes, vocab_size, width)
    logger.debug(
        "built %s (width %g) for input %s: %d exits, %d parameters",
        name, width, shape, model.num_exits, sum(p.numel() for p in model.parameters()),
    )
    return model
