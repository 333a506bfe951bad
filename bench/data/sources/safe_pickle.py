"""Unpickling restricted to plain numeric numpy arrays, for the python-pickle CIFAR batches.

A pickle can name any importable callable and have it called while loading. The CIFAR files only ever need
numpy's array reconstruction, so this unpickler resolves those few names itself and refuses every other one — no
module is imported on behalf of the file. Nor is any file-supplied state handed to numpy's C code: the names
resolve to stand-ins that record the array's shape, dtype and bytes, and accept only plain numeric dtypes (no
object, structured or sub-array dtypes, which would let the file choose what memory numpy reads). The arrays are
then rebuilt from the recorded bytes with ``frombuffer(...).reshape(...).copy()``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.sources.errors import CorruptDataError

_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
_BYTE_ORDERS = ("<", ">", "=", "|")

# What a damaged pickle stream can raise while being parsed (MemoryError: a huge declared size; RuntimeError and
# SystemError: states the interpreter cannot build).
_DAMAGED_STREAM_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RuntimeError,
    SystemError,
    MemoryError,
)


class _NdarrayName:
    """What the name ``numpy.ndarray`` resolves to: a marker, never the class itself."""


class _DtypeStandIn:
    """``numpy.dtype(name, align, copy)`` as a pickle calls it; ``__setstate__`` then sets the byte order."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(name, str | bytes):
            raise pickle.UnpicklingError(f"dtype name must be a string, found {type(name).__name__}")
        dtype = np.dtype(name.decode("ascii") if isinstance(name, bytes) else name)
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise pickle.UnpicklingError(f"dtype {dtype.str!r} is not a plain numeric dtype")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, itemsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise pickle.UnpicklingError("malformed dtype state")
        order = state[1].decode("ascii") if isinstance(state[1], bytes) else state[1]
        if order not in _BYTE_ORDERS or any(part is not None for part in state[2:5]):
            raise pickle.UnpicklingError("dtype state declares fields, a sub-array or an unknown byte order")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


class _ArrayStandIn:
    """``numpy.core.multiarray._reconstruct(ndarray, shape, typecode)``; ``__setstate__`` records the array."""

    def __init__(self, cls: Any, shape: Any = (0,), typecode: Any = b"b") -> None:
        if cls is not _NdarrayName:
            raise pickle.UnpicklingError("_reconstruct is only accepted for numpy.ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, raw bytes), or without the version in old files
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed array state")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(dtype, _DtypeStandIn) or not isinstance(raw, bytes):
            raise pickle.UnpicklingError("array state must hold a numeric dtype and raw bytes")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise pickle.UnpicklingError(f"array shape must be non-negative integers, found {shape!r}")
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.dtype.itemsize != len(raw):
            raise pickle.UnpicklingError(f"array of shape {shape} and dtype {dtype.dtype.str} needs "
                                         f"{count * dtype.dtype.itemsize} bytes, the file holds {len(raw)}")
        flat = np.frombuffer(raw, dtype=dtype.dtype, count=count)
        self.array = flat.reshape(shape, order="F" if fortran else "C").copy()


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _ArrayStandIn,
    ("numpy._core.multiarray", "_reconstruct"): _ArrayStandIn,
    ("numpy", "ndarray"): _NdarrayName,
    ("numpy", "dtype"): _DtypeStandIn,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array reconstruction globals, to stand-ins.

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


def _materialize(value: Any, path: Path) -> Any:
    """``value`` with every stand-in replaced by the array (or dtype) it recorded."""
    if isinstance(value, _ArrayStandIn):
        if value.array is None:
            raise CorruptDataError(f"{path}: an array without its data")
        return value.array
    if isinstance(value, _DtypeStandIn):
        return value.dtype
    if isinstance(value, dict):
        return {_materialize(k, path): _materialize(v, path) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_materialize(v, path) for v in value)
    return value


def load_numpy_pickle(path: Path) -> Any:
    """Unpickle ``path`` (keys come back as bytes, like the CIFAR files were written) with only numeric numpy
    arrays allowed.

    Raises:
        CorruptDataError: naming ``path``, for a refused global, a refused dtype or a damaged pickle stream.
    """
    with path.open("rb") as stream:
        try:
            return _materialize(NumpyOnlyUnpickler(stream, path).load(), path)
        except CorruptDataError:
            raise
        except _DAMAGED_STREAM_ERRORS as err:
            raise CorruptDataError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err
