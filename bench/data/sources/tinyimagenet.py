"""Tiny ImageNet (200 classes, 64×64 RGB) from the standard ``tiny-imagenet-200/`` tree of JPEGs.

The validation images may also come reorganised into class folders (``val/<wnid>/[images/]*.JPEG``).
Decoding the 110,000 JPEGs takes a minute or two, so the decoded tensors are cached as
``cafebench-decoded.pt`` in that folder (when writable) and reused while the classes and the labels of
the listed images match.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data.dataset import Dataset
from bench.data.sources.decoded_cache import read_decoded_cache, write_decoded_cache
from bench.data.sources.errors import CorruptDataError
from bench.data.sources.image_dataset import make_image_dataset
from bench.data.sources.limits import require_bool, require_memory
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


def _require_equal_counts(counts: dict[str, int], where: Path) -> None:
    """Every class holds as many images as every other (500 training and 50 validation images in the real set)."""
    fewest, most = min(counts, key=counts.__getitem__), max(counts, key=counts.__getitem__)
    if counts[fewest] == 0 or counts[fewest] != counts[most]:
        raise CorruptDataError(
            f"{where}: class {fewest} has {counts[fewest]} images but {most} has {counts[most]}; every class "
            "should have as many (a partly extracted archive?)"
        )


def _natural_key(path: Path) -> list[int | str]:
    """``val_9`` before ``val_10``: the order of ``val_annotations.txt``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _list_val_annotated(val: Path, label_of: dict[str, int]) -> list[tuple[Path, int]]:
    """The standard layout: ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``."""
    annotations = val / "val_annotations.txt"
    images = []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise CorruptDataError(
                f"{annotations}:{number}: expected 'file<TAB>wnid...' with a wnid from wnids.txt"
            )
        images.append((val / "images" / fields[0], label_of[fields[1]]))
    missing = [path for path, _ in images if not path.is_file()]
    if missing:
        raise CorruptDataError(
            f"{annotations}: {len(missing)} of the {len(images)} listed images are missing, e.g. {missing[0]} "
            "(a partly extracted archive?)"
        )
    return images


def _list_val_by_class(val: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """A reorganised ``val/``: one folder per class, ``val/<wnid>/images/*.JPEG`` or ``val/<wnid>/*.JPEG``,
    in file-name order (that of ``val_annotations.txt``)."""
    found = {wnid: sorted((val / wnid).rglob("*.JPEG")) for wnid in wnids}
    _require_equal_counts({wnid: len(paths) for wnid, paths in found.items()}, val)
    images = [(path, label) for label, wnid in enumerate(wnids) for path in found[wnid]]
    return sorted(images, key=lambda item: _natural_key(item[0]))


def _list_images(directory: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """Every labelled image: the training images of each class, then the validation images. Counts are checked
    (every class as many images, every annotated image present) before anything is decoded."""
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    train = {}
    for wnid in wnids:
        class_dir = directory / "train" / wnid / "images"
        if not class_dir.is_dir():
            raise CorruptDataError(f"{class_dir}: missing; wnids.txt lists class {wnid}")
        train[wnid] = sorted(class_dir.glob("*.JPEG"))
    _require_equal_counts({wnid: len(paths) for wnid, paths in train.items()}, directory / "train")
    images = [(path, label_of[wnid]) for wnid in wnids for path in train[wnid]]
    val = directory / "val"
    if (val / "val_annotations.txt").is_file() and (val / "images").is_dir():
        return images + _list_val_annotated(val, label_of)
    if any((val / wnid).is_dir() for wnid in wnids):
        return images + _list_val_by_class(val, wnids)
    raise CorruptDataError(f"{val}: expected images/ with val_annotations.txt, or one folder per class")


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptDataError(f"{path}: cannot decode image ({err})") from err
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise CorruptDataError(f"{path}: image is {pixels.shape[1]}×{pixels.shape[0]}, expected 64×64")
    return pixels


def _decode_all(paths: list[Path], directory: Path) -> torch.Tensor:
    require_memory(str(directory), f"{len(paths):,} images of 3×{IMAGE_SIZE}×{IMAGE_SIZE}",
                   len(paths) * 3 * IMAGE_SIZE * IMAGE_SIZE)
    x = torch.empty((len(paths), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    for index, path in enumerate(paths):
        x[index] = torch.from_numpy(_decode(path)).permute(2, 0, 1)
    return x


def _read_cache(path: Path, wnids: list[str], y: torch.Tensor) -> torch.Tensor | None:
    """The cached images, if the cache exists and was made from the same classes and labels."""
    entries = read_decoded_cache(path)
    if entries is None:
        return None
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


def load_tinyimagenet(root: str | os.PathLike | None = None, cache: bool = True) -> Dataset:
    """Tiny ImageNet, train and labelled validation images pooled: 110,000 uint8 images 3×64×64, 200 classes.

    Classes are numbered in ``wnids.txt`` order. With ``cache`` the decoded tensors are kept in
    ``tiny-imagenet-200/cafebench-decoded.pt``; delete that file to force decoding again.
    """
    require_bool("tinyimagenet", "cache", cache)
    directory = locate(
        "tinyimagenet",
        candidate_dirs(root, [FOLDER]),
        lambda d: all((d / f).exists() for f in ("wnids.txt", "train", "val")),
        expected="wnids.txt, train/<wnid>/images/*.JPEG, and val/images/*.JPEG with val/val_annotations.txt "
                 "(or val/<wnid>/ class folders)",
        how_to_get=HOW_TO_GET,
    )
    wnids = _read_wnids(directory)
    images = _list_images(directory, wnids)
    y = torch.tensor([label for _, label in images], dtype=torch.int64)
    cache_path = directory / CACHE_FILE
    x = _read_cache(cache_path, wnids, y) if cache else None
    if x is None:
        log.info("decoding %d Tiny ImageNet images from %s", len(images), directory)
        x = _decode_all([path for path, _ in images], directory)
        if cache:
            write_decoded_cache(cache_path, {"wnids": wnids, "x": x, "y": y})
    return make_image_dataset("tinyimagenet", x, y, len(wnids), _read_class_names(directory, wnids))
