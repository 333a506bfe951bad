"""Reader for the IDX format of (Fashion-)MNIST: a small header, then big-endian typed data."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bench.data.sources.errors import CorruptDataError
from bench.data.sources.limits import require_memory

_UBYTE_TYPE_CODE = 0x08  # the only element type (Fashion-)MNIST files use


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed when its name ends in ``.gz``).

    The header is read first and the size it declares checked against the memory available, so a crafted header
    or a gzip bomb is refused before the data is read.

    Raises:
        CorruptDataError: the file is truncated, longer than its header says, not gzip when named
            ``.gz``, or its magic number is not that of an IDX file of unsigned bytes.
        DataTooLargeError: the data its header declares would not fit in the memory available.
    """
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as stream:
            return _read_stream(path, stream)
    except (OSError, EOFError, zlib.error) as err:
        if path.suffix != ".gz":
            raise
        raise CorruptDataError(f"{path}: not a readable gzip file ({err})") from err


def _read_stream(path: Path, stream: BinaryIO) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4:
        raise CorruptDataError(f"{path}: only {len(magic)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", magic)
    if zero != 0 or type_code != _UBYTE_TYPE_CODE or ndim == 0:
        raise CorruptDataError(
            f"{path}: magic number 0x{magic.hex()} is not that of an IDX file of unsigned bytes "
            f"(expected 0x0000{_UBYTE_TYPE_CODE:02x}NN with NN the number of dimensions)"
        )
    header_size = 4 + 4 * ndim
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise CorruptDataError(
            f"{path}: truncated header ({4 + len(raw_dims)} bytes, {ndim} dimensions need {header_size})"
        )
    dims = struct.unpack(f">{ndim}I", raw_dims)
    count = math.prod(dims)
    expected = header_size + count
    require_memory(str(path), f"the {'×'.join(map(str, dims))} bytes its header declares", count)
    data = stream.read(count + 1)  # one byte more tells a file longer than its header says
    if len(data) != count:
        found = header_size + len(data) if len(data) < count else "more"
        problem = "truncated" if len(data) < count else "longer than its header says"
        raise CorruptDataError(
            f"{path}: {problem}: header declares dimensions {dims}, i.e. {expected} bytes; "
            f"the file has {found}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims).copy()
