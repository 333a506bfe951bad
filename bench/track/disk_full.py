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
from urllib.parse import unquote, urlparse

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
    folder = folder if folder.is_dir() else folder.parent
    usage = shutil.disk_usage(folder)
    return f"{_size(usage.free)} free of {_size(usage.total)} on {folder}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def disk_full_error(exc: BaseException, places: Sequence[str] = ()) -> DiskFullError | None:
    """The :class:`DiskFullError` for ``exc`` if a full disk caused it, else None. ``places`` are where the command
    writes (tracking and Optuna storage URIs, ``file:`` artifact locations, folders): a full SQLite database, told
    by its text only, is named as the SQLite one among them whose disk has the least space left, and an ``OSError``
    that names no file (PyTorch's and MLflow's copies) as the place of any kind with the least."""
    for cause in causes(exc):
        if isinstance(cause, DiskFullError):
            return cause
        if isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            written = cause.filename2 or cause.filename  # shutil's copies name the source first
            if written is not None:
                return DiskFullError(f"the disk is full: {written} could not be written "
                                     f"({free_space(Path(written))})")
            return DiskFullError(_fullest(places, "cannot be written"))
        if SQLITE_FULL in str(cause):
            return DiskFullError(_fullest([p for p in places if p.startswith("sqlite:")], "cannot grow"))
    return None


def _fullest(places: Sequence[str], what: str) -> str:
    """The message naming the place whose disk has the least space left."""
    paths = {place: path for place in places if (path := _place_path(place)) is not None}
    if not paths:
        return f"the disk is full: a file {what.replace('cannot', 'could not')}"
    place = min(paths, key=lambda p: shutil.disk_usage(_existing(paths[p])).free)
    return f"the disk is full: {place} {what} ({free_space(paths[place])}); free some space there or use another disk"


def _place_path(place: str) -> Path | None:
    """The local path of a SQLite URI, a ``file:`` URI or a path; None for a server or an in-memory database."""
    if place.startswith("sqlite:"):
        return sqlite_path(place)
    if place.startswith("file:"):
        return Path(unquote(urlparse(place).path))
    return None if "://" in place else Path(place)


def _existing(path: Path) -> Path:
    """``path``, or its nearest parent that exists."""
    folder = path.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextmanager
def reported_disk_full(places: Sequence[str] = ()) -> Iterator[None]:
    """Meanwhile an exception that a full disk caused is raised as its :class:`DiskFullError` (see
    :func:`disk_full_error`), without the chain of failures that followed it."""
    try:
        yield
    except Exception as exc:
        full = disk_full_error(exc, places)
        if full is None or full is exc:
            raise
        raise full from None
