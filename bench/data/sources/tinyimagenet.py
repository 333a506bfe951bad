"""Tiny ImageNet (200 classes, 64×64 RGB) from the standard ``tiny-imagenet-200/`` tree of JPEGs.

Decoding the 110,000 JPEGs takes a minute or two, so the decoded tensors are cached as
``cafebench-decoded.pt`` in that folder (when writable) and reused while the classes and the labels of
the listed images match.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data.dataset import Dataset
from bench.data.sources.errors import CorruptDataError
from bench.data.sources.image_dataset import make_image_dataset
from bench.data.sources.roots import candidate_dirs, locate

log = logging.getLogger(__name__)

FOLDER = "tiny-imagenet-200"
IMAGE_SIZE = 64
CACHE_FILE = "cafebench-decoded.pt"
HOW_TO_GET = (
    "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into a data root "
    f"(giving <data root>/{FOLDER}/wnids.txt, train/, val/)."
)


def _read_wnids(directory: Path) -> list[str]:
    path = directory / "wnids.txt"
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise CorruptDataError(f"{path}: lists a class id more than once")
    return wnids


def _read_class_names(directory: Path, wnids: list[str]) -> list[str]:
    """Human-readable names from the optional ``words.txt`` (``wnid<TAB>names``); the wnid where absent."""
    path = directory / "words.txt"
    words: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid.strip()] = names.strip()
    return [words.get(wnid) or wnid for wnid in wnids]


def _list_images(directory: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """Every labelled image: the training images of each class, then the validation images."""
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    images = []
    for wnid in wnids:
        class_dir = directory / "train" / wnid / "images"
        if not class_dir.is_dir():
            raise CorruptDataError(f"{class_dir}: missing; wnids.txt lists class {wnid}")
        images += [(path, label_of[wnid]) for path in sorted(class_dir.glob("*.JPEG"))]
    annotations = directory / "val" / "val_annotations.txt"
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise CorruptDataError(
                f"{annotations}:{number}: expected 'file<TAB>wnid...' with a wnid from wnids.txt"
            )
        images.append((directory / "val" / "images" / fields[0], label_of[fields[1]]))
    return images


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptDataError(f"{path}: cannot decode image ({err})") from err
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise CorruptDataError(f"{path}: image is {pixels.shape[1]}×{pixels.shape[0]}, expected 64×64")
    return pixels


def _decode_all(paths: list[Path]) -> torch.Tensor:
    x = torch.empty((len(paths), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    for index, path in enumerate(paths):
        x[index] = torch.from_numpy(_decode(path)).permute(2, 0, 1)
    return x


def _read_cache(path: Path, wnids: list[str], y: torch.Tensor) -> torch.Tensor | None:
    """The cached images, if the cache exists and was made from the same classes and labels."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        log.warning("ignoring unreadable cache %s (%s)", path, err)
        return None
    entries = cached if isinstance(cached, dict) else {}
    cached_x, cached_y = entries.get("x"), entries.get("y")
    matches = (
        entries.get("wnids") == wnids
        and isinstance(cached_y, torch.Tensor)
        and torch.equal(cached_y, y)
        and isinstance(cached_x, torch.Tensor)
        and cached_x.dtype == torch.uint8
        and cached_x.shape == (len(y), 3, IMAGE_SIZE, IMAGE_SIZE)
    )
    if not matches:
        log.info("cache %s does not match the image tree; decoding the images again", path)
        return None
    return cached_x


def _write_cache(path: Path, wnids: list[str], x: torch.Tensor, y: torch.Tensor) -> None:
    partial = path.with_suffix(".partial")
    try:
        torch.save({"wnids": wnids, "x": x, "y": y}, partial)
        partial.replace(path)
    except OSError as err:
        log.warning("could not cache the decoded images at %s (%s)", path, err)
        partial.unlink(missing_ok=True)


def load_tinyimagenet(root: str | os.PathLike | None = None, cache: bool = True) -> Dataset:
    """Tiny ImageNet, train and labelled validation images pooled: 110,000 uint8 images 3×64×64, 200 classes.

    Classes are numbered in ``wnids.txt`` order. With ``cache`` the decoded tensors are kept in
    ``tiny-imagenet-200/cafebench-decoded.pt``; delete that file to force decoding again.
    """
    directory = locate(
        "tinyimagenet",
        candidate_dirs(root, [FOLDER]),
        lambda d: all((d / f).exists() for f in ("wnids.txt", "train", "val/val_annotations.txt")),
        expected="wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt",
        how_to_get=HOW_TO_GET,
    )
    wnids = _read_wnids(directory)
    images = _list_images(directory, wnids)
    y = torch.tensor([label for _, label in images], dtype=torch.int64)
    cache_path = directory / CACHE_FILE
    x = _read_cache(cache_path, wnids, y) if cache else None
    if x is None:
        log.info("decoding %d Tiny ImageNet images from %s", len(images), directory)
        x = _decode_all([path for path, _ in images])
        if cache:
            _write_cache(cache_path, wnids, x, y)
    return make_image_dataset("tinyimagenet", x, y, len(wnids), _read_class_names(directory, wnids))
