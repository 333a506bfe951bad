"""``imagefolder``: a folder with one sub-folder of images per class (torchvision's ``ImageFolder`` layout).

Images are converted to ``channels`` (3: RGB, 1: grey) and, with ``size``, resized (bilinear) to that size;
without it every image must already have the same size. Decoding is done once: the uint8 tensors are cached in
the folder as ``.cafebench-<H>x<W>-c<channels>.pt``, keyed by a hash of every image file's path and bytes, so
adding, removing or changing an image decodes the folder again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data.dataset import Dataset
from bench.data.sources.decoded_cache import read_decoded_cache, write_decoded_cache
from bench.data.sources.errors import CorruptDataError
from bench.data.sources.image_dataset import make_image_dataset
from bench.data.sources.limits import MAX_IMAGE_SIDE, require_bool, require_fits, require_memory
from bench.data.sources.registry import register_dataset
from bench.data.sources.user_files import MIN_CLASSES, find_user_path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
MODES = {1: "L", 3: "RGB"}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_classes(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and every image with its class id."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        loose = "holds images but no class folders" if _image_files(folder) else "holds no class folders"
        raise CorruptDataError(f"{folder}: {loose}, so its images have no labels; put each class's images in a "
                               "sub-folder named after the class")
    if len(classes) < MIN_CLASSES:
        raise CorruptDataError(f"{folder}: only one class folder ({classes[0]}); a classification dataset needs "
                               f"at least {MIN_CLASSES}")
    images = []
    for label, name in enumerate(classes):
        files = _image_files(folder / name)
        if not files:
            raise CorruptDataError(f"{folder / name}: class {name!r} holds no images "
                                   f"({', '.join(IMAGE_SUFFIXES)})")
        images += [(path, label) for path in files]
    return classes, images


def content_key(folder: Path, images: list[tuple[Path, int]], size: tuple[int, int] | None, channels: int) -> str:
    """A hash of the decoding settings and every image's path (relative to ``folder``) and bytes."""
    digest = hashlib.sha256(f"{size} {channels}".encode())
    for path, label in images:
        digest.update(f"\0{path.relative_to(folder).as_posix()}\0{label}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _decode(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.array(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptDataError(f"{path}: cannot decode image ({err})") from err
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def decode_images(folder: Path, paths: list[Path], size: tuple[int, int] | None, channels: int) -> torch.Tensor:
    """uint8 ``N×C×H×W``; without ``size`` every image must have the size of the first."""
    first = _decode(paths[0], MODES[channels], size)
    require_memory(str(folder), f"{len(paths):,} images of {channels}×{first.shape[0]}×{first.shape[1]} "
                                f"({paths[0].relative_to(folder)}'s size; set data.options.size to resize them)",
                   len(paths) * channels * first.shape[0] * first.shape[1])
    x = torch.empty((len(paths), channels, *first.shape[:2]), dtype=torch.uint8)
    for index, path in enumerate(paths):
        pixels = first if index == 0 else _decode(path, MODES[channels], size)
        if pixels.shape != first.shape:
            raise CorruptDataError(
                f"{folder}: images differ in size ({paths[0].relative_to(folder)} is {first.shape[1]}×"
                f"{first.shape[0]}, {path.relative_to(folder)} is {pixels.shape[1]}×{pixels.shape[0]}); declare "
                "the size to resize them to with data.options.size")
        x[index] = torch.from_numpy(pixels).permute(2, 0, 1)
    return x


def _read_cache(path: Path, key: str) -> torch.Tensor | None:
    cached = read_decoded_cache(path)
    if cached is None:
        return None
    if cached.get("key") != key or not isinstance(cached.get("x"), torch.Tensor):
        log.info("cache %s was made from other images; decoding the folder again", path)
        return None
    return cached["x"]


def image_size_option(size: object) -> tuple[int, int] | None:
    """The ``size`` option as (height, width): an integer side or ``[height, width]``, each in
    ``1..MAX_IMAGE_SIDE``; None keeps the images' own size."""
    if size is None:
        return None
    sides = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
    if (not isinstance(sides, list | tuple) or len(sides) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_IMAGE_SIDE for s in sides)):
        raise ValueError(f"imagefolder: size must be an integer in 1..{MAX_IMAGE_SIDE} or [height, width] of such "
                         f"integers, got {size!r}")
    return sides[0], sides[1]


@register_dataset("imagefolder")
def load_imagefolder(path: str, root: str | os.PathLike | None = None, size: int | list[int] | None = None,
                     channels: int = 3, cache: bool = True) -> Dataset:
    """Your images, one sub-folder per class: options path, size (H or [H, W]), channels (1 or 3), cache."""
    if isinstance(channels, bool) or channels not in MODES:
        raise ValueError(f"imagefolder: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    require_bool("imagefolder", "cache", cache)
    target = image_size_option(size)
    folder = find_user_path("imagefolder", path, root, folder=True)
    classes, images = list_classes(folder)
    if target is not None:
        require_fits("imagefolder", "size", target[0], 1, len(images) * channels * target[1],
                     f"{len(images):,} images of {channels}×{target[0]}×{target[1]} (size is the height here)")
    y = torch.tensor([label for _, label in images], dtype=torch.int64)
    key = content_key(folder, images, target, channels)
    cache_path = folder / f".cafebench-{'x'.join(map(str, target or ('native',)))}-c{channels}.pt"
    x = _read_cache(cache_path, key) if cache else None
    if x is None:
        log.info("decoding %d images of %d classes from %s", len(images), len(classes), folder)
        x = decode_images(folder, [p for p, _ in images], target, channels)
        if cache:
            write_decoded_cache(cache_path, {"key": key, "x": x})
    return make_image_dataset("imagefolder", x, y, len(classes), classes)
