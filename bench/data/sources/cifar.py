"""CIFAR-10 and CIFAR-100 from the python-pickle batches, read with a numpy-only unpickler."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data.dataset import Dataset
from bench.data.sources.errors import CorruptDataError, require_labels_in_range
from bench.data.sources.image_dataset import make_image_dataset
from bench.data.sources.limits import require_bool
from bench.data.sources.roots import candidate_dirs, data_roots, downloads_enabled, locate
from bench.data.sources.safe_pickle import load_numpy_pickle

log = logging.getLogger(__name__)

_PIXELS = 3 * 32 * 32  # one row of b"data": 1024 red, then 1024 green, then 1024 blue bytes


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and under which keys."""

    name: str
    folder: str  # the folder the standard tarball extracts to
    batch_files: tuple[str, ...]  # train batches first, then test
    meta_file: str
    labels_key: bytes
    names_key: bytes
    num_classes: int
    tarball: str  # the standard archive, which extracts to ``folder``
    torchvision_class: str  # the torchvision dataset class whose url / filename / tgz_md5 we download

    @property
    def how_to_get(self) -> str:
        return (
            f"download {self.tarball} from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it into a data root (giving "
            f"<data root>/{self.folder}/), or allow a download (option download=True, $CAFEBENCH_NO_DOWNLOAD "
            "unset, network access)."
        )


CIFAR10 = CifarLayout(
    name="cifar10",
    folder="cifar-10-batches-py",
    batch_files=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
    meta_file="batches.meta",
    labels_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
    tarball="cifar-10-python.tar.gz",
    torchvision_class="CIFAR10",
)
CIFAR100 = CifarLayout(
    name="cifar100",
    folder="cifar-100-python",
    batch_files=("train", "test"),
    meta_file="meta",
    labels_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
    tarball="cifar-100-python.tar.gz",
    torchvision_class="CIFAR100",
)


def _entry(record: Any, key: bytes, path: Path) -> Any:
    if not isinstance(record, dict) or key not in record:
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise CorruptDataError(f"{path}: expected a dict with key {key!r}, found {found}")
    return record[key]


def _read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    record = load_numpy_pickle(path)
    data = _entry(record, b"data", path)
    labels = np.asarray(_entry(record, layout.labels_key, path))
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _PIXELS
    ):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CorruptDataError(f"{path}: b'data' must be a uint8 array N×{_PIXELS}, found {found}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise CorruptDataError(
            f"{path}: expected {len(data)} integer labels, found {labels.dtype} {labels.shape}"
        )
    require_labels_in_range(labels, layout.num_classes, path)
    return data, labels


def _read_class_names(path: Path, layout: CifarLayout) -> list[str]:
    names = _entry(load_numpy_pickle(path), layout.names_key, path)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise CorruptDataError(f"{path}: {layout.names_key!r} must list {layout.num_classes} class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _fetch(layout: CifarLayout, destination: Path) -> Path:
    import torchvision.datasets
    from torchvision.datasets.utils import download_and_extract_archive

    source = getattr(torchvision.datasets, layout.torchvision_class)
    log.info("downloading %s to %s", source.url, destination)
    download_and_extract_archive(source.url, str(destination), filename=source.filename, md5=source.tgz_md5)
    return destination / layout.folder


def _load_cifar(layout: CifarLayout, root: str | os.PathLike | None, download: bool) -> Dataset:
    require_bool(layout.name, "download", download)
    destination = data_roots(root)[0]
    directory = locate(
        layout.name,
        candidate_dirs(root, [layout.folder, ""]),  # "": a root that is the batch folder itself
        lambda d: all((d / f).is_file() for f in (*layout.batch_files, layout.meta_file)),
        expected=", ".join((*layout.batch_files, layout.meta_file)),
        how_to_get=layout.how_to_get,
        fetch=(lambda: _fetch(layout, destination)) if downloads_enabled(download) else None,
    )
    batches = [_read_batch(directory / f, layout) for f in layout.batch_files]
    class_names = _read_class_names(directory / layout.meta_file, layout)
    x = torch.from_numpy(np.concatenate([data for data, _ in batches])).reshape(-1, 3, 32, 32)
    y = torch.from_numpy(np.concatenate([labels for _, labels in batches]).astype(np.int64))
    log.info("loaded %s from %s: %d images", layout.name, directory, len(y))
    return make_image_dataset(layout.name, x, y, layout.num_classes, class_names)


def load_cifar10(root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """CIFAR-10, train and test pooled: 60,000 uint8 images 3×32×32 in 10 classes."""
    return _load_cifar(CIFAR10, root, download)


def load_cifar100(root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """CIFAR-100 with its 100 fine labels, train and test pooled: 60,000 uint8 images 3×32×32."""
    return _load_cifar(CIFAR100, root, download)
