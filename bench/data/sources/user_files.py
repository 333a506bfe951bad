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
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, *(base / given for base in data_roots(root))]
    unique = list(dict.fromkeys(candidates))
    kind = "folder" if folder else "file"
    return locate(dataset, unique, Path.is_dir if folder else Path.is_file, expected=f"the {kind} {str(path)!r}",
                  how_to_get=f"set data.options.path to the {kind}: an absolute path, or one relative to the working "
                             "directory or to a data root (data.root, $CAFEBENCH_DATA, ./datasets)")


def _where(path: Path, index: int, first_line: int | None) -> str:
    return f"{path}:{index + first_line}" if first_line is not None else f"{path}: sample {index}"


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
        ids = labels.astype(np.int64)
        if ids.min() < 0:
            first = int(np.flatnonzero(ids < 0)[0])
            raise CorruptDataError(f"{_where(path, first, first_line)}: negative label {ids[first]}")
        counts = np.bincount(ids)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise CorruptDataError(f"{path}: labels run {ids.min()}..{ids.max()} but class {int(empty[0])} has no "
                                   "sample; number the classes 0..K-1 with none empty, or use class names")
        class_names = [str(k) for k in range(len(counts))]
    if len(class_names) < MIN_CLASSES:
        raise CorruptDataError(f"{path}: all samples have the one label {class_names[0]!r}; "
                               f"a classification dataset needs at least {MIN_CLASSES} classes")
    return np.asarray(ids, dtype=np.int64), class_names
