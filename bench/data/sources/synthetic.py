"""A fast, deterministic and learnable image dataset for tests and smoke runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.data.dataset import Dataset
from bench.data.sources.image_dataset import make_image_dataset
from bench.data.sources.limits import MAX_IMAGE_SIDE, require_fits, require_int

NOISE_STD = 0.35  # per-pixel Gaussian noise on the 0..1 scale around each class template
_TEMPLATE_RESOLUTION = 4  # templates are coarse random patterns upsampled to the image size
MAX_CHANNELS = 4  # grey, RGB, RGBA
# Peak bytes per pixel while drawing: the float32 noise, the class templates gathered per sample, the sum and its
# clamped copy (4 bytes each), then the uint8 image.
BYTES_PER_PIXEL = 4 * 4 + 1


def load_synthetic(
    num_samples: int = 2000, num_classes: int = 10, image_size: int = 16, channels: int = 1, seed: int = 0
) -> Dataset:
    """Images of ``num_classes`` fixed random templates plus noise, quantised to uint8; balanced labels.

    Each class template is a smooth random pattern; every sample is its class template plus
    Gaussian noise (std :data:`NOISE_STD`), so a small CNN separates the classes well above
    chance within a few hundred steps. Identical for identical arguments.
    """
    require_int("synthetic", "channels", channels, 1, MAX_CHANNELS)
    require_int("synthetic", "image_size", image_size, 1, MAX_IMAGE_SIDE)
    require_int("synthetic", "seed", seed, -(2**63), 2**63 - 1)
    require_int("synthetic", "num_samples", num_samples, 2, None)
    require_fits("synthetic", "num_samples", num_samples, 2, channels * image_size * image_size * BYTES_PER_PIXEL,
                 f"images of {channels}×{image_size}×{image_size} ({BYTES_PER_PIXEL} bytes a pixel while drawn)")
    require_int("synthetic", "num_classes", num_classes, 2, max(num_samples, 2))  # a sample for every class
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(
        num_classes, channels, _TEMPLATE_RESOLUTION, _TEMPLATE_RESOLUTION, generator=generator
    )
    templates = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.arange(num_samples) % num_classes
    y = y[torch.randperm(num_samples, generator=generator)]
    noise = torch.randn(num_samples, channels, image_size, image_size, generator=generator) * NOISE_STD
    x = (templates[y] + noise).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    class_names = [f"class_{label}" for label in range(num_classes)]
    return make_image_dataset("synthetic", x, y, num_classes, class_names)
