"""Fashion-MNIST from IDX files: the data roots, the Debian package, or a torchvision download."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from bench.data.dataset import Dataset
from bench.data.sources.errors import CorruptDataError, require_labels_in_range
from bench.data.sources.idx import read_idx
from bench.data.sources.image_dataset import make_image_dataset
from bench.data.sources.limits import require_bool, require_int
from bench.data.sources.roots import candidate_dirs, data_roots, downloads_enabled, locate
from bench.data.subset import balanced_subset

log = logging.getLogger(__name__)

SYSTEM_DIRS = [Path("/usr/share/datasets/fashion-mnist")]  # Debian package dataset-fashion-mnist
SUBDIRS = ["", "fashion-mnist", "FashionMNIST/raw"]
PARTS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FULL_SIZE = 70_000  # the train and test images pooled
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
HOW_TO_GET = (
    "`sudo apt-get install dataset-fashion-mnist` (installs to /usr/share/datasets/fashion-mnist), "
    "or put the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist "
    "into <data root>/fashion-mnist/, "
    "or allow a download (option download=True, $CAFEBENCH_NO_DOWNLOAD unset, network access)."
)


def idx_file(directory: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``directory``, raw or gzip-compressed; None when neither exists."""
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _holds_fmnist(directory: Path) -> bool:
    return all(idx_file(directory, stem) for pair in PARTS.values() for stem in pair)


def _fetch(destination: Path) -> Path:
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_url

    log.info("downloading Fashion-MNIST to %s", destination)
    for filename, md5 in FashionMNIST.resources:
        errors = []
        for mirror in FashionMNIST.mirrors:
            try:
                download_url(f"{mirror}{filename}", str(destination), filename=filename, md5=md5)
                break
            except (OSError, RuntimeError) as err:
                errors.append(f"{mirror}{filename}: {err}")
        else:
            raise OSError("; ".join(errors))
    return destination


def _require_balanced(labels: np.ndarray, path: Path) -> None:
    """Fashion-MNIST's label fingerprint: each part holds every class equally often (6,000 and 1,000 images).

    MNIST's files carry the same names, and a data root holding them would otherwise load as Fashion-MNIST."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    if counts.min() != counts.max():
        raise CorruptDataError(
            f"{path}: not Fashion-MNIST's labels: class counts range over {counts.min()}..{counts.max()}, while "
            "Fashion-MNIST holds every class equally often (are these MNIST's files, which have the same names?)"
        )


def load_fmnist(root: str | os.PathLike | None = None, download: bool = True,
                num_samples: int | None = None) -> Dataset:
    """Fashion-MNIST, train and test pooled: 70,000 uint8 images 1×28×28 in 10 classes.

    ``num_samples`` keeps a class-balanced subset of that many images (a fixed seeded draw over the pooled set,
    see :func:`balanced_subset`), for runs of seconds on real data (the tests); None keeps all 70,000."""
    require_bool("fmnist", "download", download)
    if num_samples is not None:  # one image per class at least, all 70,000 at most
        require_int("fmnist", "num_samples", num_samples, len(CLASS_NAMES), FULL_SIZE)
    candidates = candidate_dirs(root, SUBDIRS, SYSTEM_DIRS)
    destination = data_roots(root)[0] / "fashion-mnist"
    directory = locate(
        "fmnist",
        candidates,
        _holds_fmnist,
        expected="train-/t10k- images-idx3-ubyte and labels-idx1-ubyte (raw or .gz)",
        how_to_get=HOW_TO_GET,
        fetch=(lambda: _fetch(destination)) if downloads_enabled(download) else None,
    )
    images, labels = [], []
    for images_stem, labels_stem in PARTS.values():
        images_path, labels_path = idx_file(directory, images_stem), idx_file(directory, labels_stem)
        part_images, part_labels = read_idx(images_path), read_idx(labels_path)
        if part_images.ndim != 3:
            raise CorruptDataError(
                f"{images_path}: expected 3 dimensions (N, H, W), found {part_images.shape}"
            )
        if part_labels.ndim != 1 or len(part_labels) != len(part_images):
            raise CorruptDataError(
                f"{labels_path}: expected {len(part_images)} labels for {images_path.name}, "
                f"found shape {part_labels.shape}"
            )
        require_labels_in_range(part_labels, len(CLASS_NAMES), labels_path)
        _require_balanced(part_labels, labels_path)
        images.append(torch.from_numpy(part_images))
        labels.append(torch.from_numpy(part_labels))
    x = torch.cat(images).unsqueeze(1)
    y = torch.cat(labels).to(torch.int64)
    if num_samples is not None:
        keep = balanced_subset(y, num_samples, len(CLASS_NAMES))
        x, y = x[keep], y[keep]
    log.info("loaded Fashion-MNIST from %s: %d images", directory, len(y))
    return make_image_dataset("fmnist", x, y, len(CLASS_NAMES), CLASS_NAMES)
