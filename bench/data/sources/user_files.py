"""What the generic sources (``imagefolder``, ``npz``, ``textcsv``) share: finding the user's file or folder, and
turning the labels found in it into class ids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.data.sources.errors import CorruptDataError
from bench.data.sources.roots import data_roots, locate

MIN_CLASSES = 2


def find_user_path(dataset: str, path: str | os.PathLike, root: str | os.PathLike | None, folder: bool) -> Path:
    """``path`` itself when absolute; otherwise the first of ``./path`` and ``<data root>/path`` that exists.

    Raises:
        DataNotFoundError: nowhere to be found (the message lists every place looked).
    """
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike | int):  # an int: a name like 2024 in YAML
        raise ValueError(f"{dataset}: path must be a file or folder path, got {path!r}")
    given = Path(str(path) if isinstance(path, int) else path).expanduser()
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, *(base / given for base in data_roots(root))]
    unique = list(dict.fromkeys(candidates))
    kind = "folder" if folder else "file"
    return locate(dataset, unique, Path.is_dir if folder else Path.is_file, expected=f"the {kind} {str(path)!r}",
                  how_to_get=f"set data.options.path to the {kind}: an absolute path, or one relative to the working "
                             "directory or to a data root (data.root, $CAFEBENCH_DATA, ./datasets)")


def _where(path: Path, index: int, first_line: int | None) -> str:
    return f"{path}:{index + first_line}" if first_line is not None else f"{path}: sample {index}"


def _number(value: np.generic) -> str:
    """A label as written: integers in full, floats without a trailing ``.0``."""
    return f"{value:g}" if isinstance(value, np.floating) else str(int(value))


def class_ids(labels: np.ndarray, path: Path, first_line: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Class ids ``0..K-1`` (int64) and class names from one label per sample.

    Labels are either integers ``0..K-1`` with every class present (names ``"0"``..) or names (strings: classes
    in sorted order). ``first_line`` turns sample indices into line numbers of ``path`` in messages.

    Raises:
        CorruptDataError: naming ``path`` and the problem: no samples, a missing label, a label that is neither an
            integer nor a name, a class without samples, or a single class.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise CorruptDataError(f"{path}: labels must be one per sample, got an array of shape {labels.shape}")
    if labels.size == 0:
        raise CorruptDataError(f"{path}: holds no samples")
    if labels.dtype.kind in "OUS":
        missing = [i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and np.isnan(v))]
        if missing:
            raise CorruptDataError(f"{_where(path, missing[0], first_line)}: no label")
        numbers = [i for i, v in enumerate(labels) if not isinstance(v, (str, bytes, np.str_, np.bytes_))]
        if numbers:
            raise CorruptDataError(f"{_where(path, numbers[0], first_line)}: label {labels[numbers[0]]!r} mixes "
                                   "numbers with names; use one or the other")
        names, ids = np.unique(labels.astype(str), return_inverse=True)
        class_names = [str(n) for n in names]
    else:
        if labels.dtype.kind == "f":
            bad = np.flatnonzero(np.isnan(labels) | (labels != np.round(labels)))
            if bad.size:
                value = labels[bad[0]]
                problem = "no label" if np.isnan(value) else f"label {value:g} is neither an integer nor a name"
                raise CorruptDataError(f"{_where(path, int(bad[0]), first_line)}: {problem}")
        elif labels.dtype.kind not in "iub":
            raise CorruptDataError(f"{path}: labels of type {labels.dtype} are neither integers nor names")
        if labels.min() < 0:
            first = int(np.flatnonzero(labels < 0)[0])
            raise CorruptDataError(f"{_where(path, first, first_line)}: negative label {_number(labels[first])}")
        # The classes present, sorted, found without np.bincount, which would allocate (largest label + 1) counters.
        present = np.unique(labels)
        gaps = np.flatnonzero(present != np.arange(len(present)))
        if gaps.size:
            raise CorruptDataError(f"{path}: labels run {_number(present[0])}..{_number(present[-1])} but class "
                                   f"{int(gaps[0])} has no sample; number the classes 0..K-1 with none empty (so "
                                   f"labels lie in 0..{len(labels) - 1:,} for {len(labels):,} samples), or use class "
                                   "names")
        ids = labels.astype(np.int64)
        class_names = [str(k) for k in range(len(present))]
    if len(class_names) < MIN_CLASSES:
        raise CorruptDataError(f"{path}: all samples have the one label {class_names[0]!r}; "
                               f"a classification dataset needs at least {MIN_CLASSES} classes")
    return np.asarray(ids, dtype=np.int64), class_names
