"""Unpickling restricted to numpy arrays, for the python-pickle CIFAR batches.

A pickle can name any importable callable and have it called while loading. The CIFAR files only
ever need numpy's array reconstruction, so this unpickler resolves those few names itself and
refuses every other one — no module is imported on behalf of the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.sources.errors import CorruptDataError

try:  # numpy >= 2 moved the implementation to numpy._core; older files name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

# What a damaged pickle stream can raise while being parsed.
_DAMAGED_STREAM_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array reconstruction globals.

    Any other global raises :class:`CorruptDataError` naming the file, before anything is called.
    """

    def __init__(self, stream: Any, path: Path) -> None:
        super().__init__(stream, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CorruptDataError(
                f"{self.path}: refusing to unpickle {module}.{name}; a genuine CIFAR file holds only "
                "numpy arrays, lists and bytes"
            ) from None


def load_numpy_pickle(path: Path) -> Any:
    """Unpickle ``path`` (keys come back as bytes, like the CIFAR files were written) with only numpy allowed.

    Raises:
        CorruptDataError: naming ``path``, for a refused global or a damaged pickle stream.
    """
    with path.open("rb") as stream:
        try:
            return NumpyOnlyUnpickler(stream, path).load()
        except CorruptDataError:
            raise
        except _DAMAGED_STREAM_ERRORS as err:
            raise CorruptDataError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err
