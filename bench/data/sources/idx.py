"""Reader for the IDX format of (Fashion-)MNIST: a small header, then big-endian typed data."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from bench.data.sources.errors import CorruptDataError

_UBYTE_TYPE_CODE = 0x08  # the only element type (Fashion-)MNIST files use


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed when its name ends in ``.gz``).

    Raises:
        CorruptDataError: the file is truncated, longer than its header says, not gzip when named
            ``.gz``, or its magic number is not that of an IDX file of unsigned bytes.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise CorruptDataError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code != _UBYTE_TYPE_CODE or ndim == 0:
        raise CorruptDataError(
            f"{path}: magic number 0x{raw[:4].hex()} is not that of an IDX file of unsigned bytes "
            f"(expected 0x0000{_UBYTE_TYPE_CODE:02x}NN with NN the number of dimensions)"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise CorruptDataError(
            f"{path}: truncated header ({len(raw)} bytes, {ndim} dimensions need {header_size})"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = header_size + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise CorruptDataError(
            f"{path}: {problem}: header declares dimensions {dims}, i.e. {expected} bytes; "
            f"the file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptDataError(f"{path}: not a readable gzip file ({err})") from err
