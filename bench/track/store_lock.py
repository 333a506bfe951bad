"""An exclusive lock beside a local SQLite database, held by the processes of this machine that share it.

Two sweeps on one store must not both run a grid point, and two processes must not both create a fresh database's
tables (MLflow's migrations then fail with ``duplicate column name``). They hold :func:`store_lock` while they check
and create: a lock file beside the database (``mlflow.db.lock``), taken with ``flock``, which the kernel releases when
its holder ends, however it ends. Stores other than a SQLite file (a tracking server, another database) get no lock
here: their processes may run on several machines, which a file lock cannot reach.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.track.store import sqlite_path

LOCK_SUFFIX = ".lock"


def lock_path(uri: str) -> Path | None:
    """The lock file of a ``sqlite:///`` store or Optuna storage (None for any other)."""
    if not uri.startswith("sqlite:"):
        return None
    path = sqlite_path(uri)
    return None if path is None else path.resolve().with_name(path.name + LOCK_SUFFIX)


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold the store's lock meanwhile (waiting for another holder to let it go); nothing for stores without one."""
    path = lock_path(uri)
    if path is None or not path.parent.is_dir():
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
