"""``npz``: a NumPy ``.npz`` archive with uint8 images ``x`` (N×H×W, N×H×W×C or N×C×H×W) and labels ``y``."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from bench.data.dataset import Dataset
from bench.data.sources.errors import CorruptDataError
from bench.data.sources.image_dataset import make_image_dataset
from bench.data.sources.limits import require_memory
from bench.data.sources.registry import register_dataset
from bench.data.sources.user_files import class_ids, find_user_path

CHANNEL_COUNTS = (1, 3, 4)
ARRAYS = ("x", "y")
_NPY_ERRORS = (OSError, zipfile.BadZipFile, EOFError, ValueError)


def declared_arrays(file: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of the arrays ``x`` and ``y`` of an archive as their ``.npy`` headers declare them, read
    without loading the data (NumPy allocates the declared size before reading an array from a zip archive)."""
    declared = {}
    try:
        with zipfile.ZipFile(file) as archive:
            members = set(archive.namelist())
            for key in ARRAYS:
                if f"{key}.npy" not in members:
                    continue
                with archive.open(f"{key}.npy") as stream:
                    version = np.lib.format.read_magic(stream)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(stream)
                declared[key] = (shape, dtype)
    except _NPY_ERRORS as err:
        raise CorruptDataError(f"{file}: not a readable .npz archive ({err})") from err
    return declared


def channels_first(x: np.ndarray, layout: str, where: str) -> np.ndarray:
    """Images as N×C×H×W: grey N×H×W gains a channel; 4-D arrays follow ``layout`` (``auto``: the axis of 1, 3
    or 4 channels, refused when both or neither of axes 1 and 3 could be it)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise CorruptDataError(f"{where}: x has shape {x.shape}; expected N×H×W, N×H×W×C or N×C×H×W images")
    if layout == "auto":
        last, first = x.shape[3] in CHANNEL_COUNTS, x.shape[1] in CHANNEL_COUNTS
        if last == first:
            raise CorruptDataError(f"{where}: cannot tell from x's shape {x.shape} whether it is N×H×W×C or "
                                   "N×C×H×W; set data.options.layout to nhwc or nchw")
        layout = "nhwc" if last else "nchw"
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "nhwc" else x


@register_dataset("npz")
def load_npz(path: str, root: str | os.PathLike | None = None,
             layout: Literal["auto", "nhwc", "nchw"] = "auto") -> Dataset:
    """Your arrays: x (uint8 images) and y (integer labels 0..K-1 or class names) in one .npz; options path, layout."""
    if layout not in ("auto", "nhwc", "nchw"):
        raise ValueError(f"npz: layout must be auto, nhwc or nchw, got {layout!r}")
    file = find_user_path("npz", path, root, folder=False)
    declared = declared_arrays(file)
    require_memory(str(file), " and ".join(f"{key} {shape} {dtype}" for key, (shape, dtype) in declared.items()),
                   sum(math.prod(shape) * dtype.itemsize for shape, dtype in declared.values()))
    try:
        with np.load(file, allow_pickle=False) as arrays:
            names = list(arrays.files)
            x, y = (arrays[k] if k in names else None for k in ("x", "y"))
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise CorruptDataError(f"{file}: not a readable .npz archive ({err})") from err
    except ValueError as err:  # object arrays need pickle, which is never allowed for data files
        raise CorruptDataError(f"{file}: holds Python objects ({err}); save numbers or strings") from err
    for array, key, what in ((x, "x", "images"), (y, "y", "labels")):
        if array is None:
            raise CorruptDataError(f"{file}: no array {key!r} (the {what}); arrays in it: {', '.join(names) or 'none'}")
    if x.dtype != np.uint8:
        raise CorruptDataError(f"{file}: x is {x.dtype}; expected uint8 images (0..255)")
    if len(x) != len(y):
        raise CorruptDataError(f"{file}: x holds {len(x)} images but y holds {len(y)} labels")
    images = torch.from_numpy(channels_first(x, layout, str(file)))
    ids, names = class_ids(y, file)
    return make_image_dataset("npz", images, torch.from_numpy(ids), len(names), names)
