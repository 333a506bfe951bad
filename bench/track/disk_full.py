"""A full disk, told apart from other failures: one line naming what could not be written and the space left.

A full disk surfaces as an ``OSError`` (``ENOSPC``, or ``EDQUOT`` past a quota) from a checkpoint, an artifact or a
cache file, or as SQLite's ``database or disk is full`` from the tracking store or the Optuna storage, wrapped by
SQLAlchemy, MLflow or Optuna, and often followed by further failures of the code that tried to record the first
one. :func:`disk_full_error` finds it anywhere in an exception's chain and gives a :class:`DiskFullError` that says
where, so that a command stops with that line instead of failing run after run with tracebacks.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.track.store import sqlite_path

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL = "database or disk is full"


class DiskFullError(RuntimeError):
    """A disk the command writes to is full; the message names the file or store and the space left."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def free_space(path: Path) -> str:
    """E.g. ``12.0 KiB free of 2.0 MiB on /mnt/small``, for the disk that holds ``path`` (or its nearest parent
    that exists)."""
    folder = _existing(path)
    usage = shutil.disk_usage(folder)
    return f"{_size(usage.free)} free of {_size(usage.total)} on {folder}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def disk_full_error(exc: BaseException, stores: Sequence[str] = ()) -> DiskFullError | None:
    """The :class:`DiskFullError` for ``exc`` if a full disk caused it, else None. A full SQLite database is told by
    its text only, so it is named among ``stores`` (tracking or Optuna storage URIs): the SQLite one whose disk has
    the least space left."""
    for cause in causes(exc):
        if isinstance(cause, DiskFullError):
            return cause
        if isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            written = cause.filename2 or cause.filename  # shutil's copies name the source first
            if written is None:
                return DiskFullError(f"the disk is full: {cause.strerror} ({free_space(Path.cwd())})")
            return DiskFullError(f"the disk is full: {written} could not be written ({free_space(Path(written))})")
        if SQLITE_FULL in str(cause):
            return DiskFullError(_full_database(stores))
    return None


def _full_database(stores: Sequence[str]) -> str:
    files = {uri: path for uri in stores if uri.startswith("sqlite:") and (path := sqlite_path(uri)) is not None}
    if not files:
        return "the disk is full: a database reported 'database or disk is full'"
    uri = min(files, key=lambda u: shutil.disk_usage(_existing(files[u])).free)
    return (f"the disk is full: {uri} cannot grow ({free_space(files[uri])}); free some space there or move the "
            "store to a disk with room")


def _existing(path: Path) -> Path:
    """``path``, or its nearest parent that exists."""
    folder = path.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextmanager
def reported_disk_full(stores: Sequence[str] = ()) -> Iterator[None]:
    """Meanwhile an exception that a full disk caused is raised as its :class:`DiskFullError` (see
    :func:`disk_full_error`), without the chain of failures that followed it."""
    try:
        yield
    except Exception as exc:
        full = disk_full_error(exc, stores)
        if full is None or full is exc:
            raise
        raise full from None
