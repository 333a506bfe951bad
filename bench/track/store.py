"""Checks of the MLflow tracking store, made once before a command touches it.

Left to MLflow, a store that cannot be used fails slowly and obscurely: an unreachable server is retried for
minutes, a read-only SQLite database is retried for minutes and then ends in an ``OperationalError`` traceback, a
corrupted one in a ``DatabaseError``. :func:`check_store` tells these apart in seconds, without changing the store,
and raises :class:`StoreError` with one line that names the URI and what is wrong.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

log = logging.getLogger(__name__)

# An unreachable server is given up after at most about 15 s: three attempts of at most 3 s with 1 s and 2 s
# (plus jitter) between them. $MLFLOW_HTTP_REQUEST_MAX_RETRIES, _TIMEOUT and _BACKOFF_FACTOR override these.
CHECK_RETRIES = 2
CHECK_TIMEOUT_S = 3
CHECK_BACKOFF_FACTOR = 1.0
MLFLOW_TABLES = ("experiments", "runs")


class StoreError(RuntimeError):
    """The tracking store cannot be used; the message names it and says why."""


MLFLOW_DATABASE_LOGGER = "mlflow.store.db.utils"


def quiet_database_errors() -> None:
    """Silence MLflow's log of every database error with its traceback (``database or disk is full`` fills a screen
    per attempt): the error is raised all the same, and the command reports it in one line."""
    logging.getLogger(MLFLOW_DATABASE_LOGGER).setLevel(logging.CRITICAL)


def check_store(uri: str) -> None:
    """Raise :class:`StoreError` unless the tracking store at ``uri`` can be read and written.

    A SQLite store must be a readable MLflow database (or an empty file, or none yet) in a folder that can be written;
    an HTTP(S) store must answer a search for one experiment. Other stores are not checked here.
    """
    if uri.startswith("sqlite:"):
        _check_sqlite(uri)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI; None for an in-memory database."""
    rest = uri.removeprefix("sqlite://").split("?", 1)[0]
    if rest in ("", "/", "/:memory:"):
        return None
    return Path(rest.removeprefix("/"))


def _check_sqlite(uri: str) -> None:
    path = sqlite_path(uri)
    if path is None:
        return
    folder = path.resolve().parent
    if not folder.is_dir():
        raise StoreError(f"tracking store {uri}: folder {folder} does not exist")
    try:  # SQLite writes its journal beside the database, so the folder itself must be writable
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise StoreError(f"tracking store {uri}: cannot write in {folder} ({err.strerror or err}); "
                         "give a --tracking-uri in a writable folder") from None
    if not path.exists():
        return
    try:
        with path.open("r+b"):  # opened for writing, nothing written
            pass
    except OSError as err:
        raise StoreError(f"tracking store {uri}: {path} cannot be written ({err.strerror or err})") from None
    if path.stat().st_size > 0:
        _check_database(uri, path)


def _check_database(uri: str, path: Path) -> None:
    """A read-only look at the file: an intact SQLite database that holds MLflow's tables (or no tables yet)."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        verdict, tables = str(err), set()
    if verdict != "ok":
        raise StoreError(f"tracking store {uri}: {path.resolve()} is not a readable MLflow database "
                         f"({' '.join(verdict.split())}); it was left as it is")
    if tables and not set(MLFLOW_TABLES) <= tables:
        raise StoreError(f"tracking store {uri}: {path} is a SQLite database without MLflow's tables "
                         f"({', '.join(sorted(tables)[:5])}, ...); it was left as it is")


def _check_server(uri: str) -> None:
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    retries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() if MLFLOW_HTTP_REQUEST_MAX_RETRIES.defined else CHECK_RETRIES
    timeout = MLFLOW_HTTP_REQUEST_TIMEOUT.get() if MLFLOW_HTTP_REQUEST_TIMEOUT.defined else CHECK_TIMEOUT_S
    backoff = (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() if MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.defined
               else CHECK_BACKOFF_FACTOR)
    retry_log = logging.getLogger("urllib3.connectionpool")
    level = retry_log.level
    retry_log.setLevel(logging.ERROR)  # one line from us instead of a warning per retry
    try:
        response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/search", "GET",
                                max_retries=retries, backoff_factor=backoff, timeout=timeout,
                                raise_on_status=False, params={"max_results": 1})
    except Exception as exc:  # requests and urllib3 wrap the cause several times: report the innermost one
        attempts = f"{retries + 1} attempts" if retries else "1 attempt"
        raise StoreError(f"tracking server {uri} could not be reached ({_root_cause(exc)}; {attempts}, "
                         f"{timeout} s timeout each)") from None
    finally:
        retry_log.setLevel(level)
    if response.status_code != 200:
        raise StoreError(f"tracking server {uri} answered HTTP {response.status_code} to a search for experiments "
                         f"({' '.join(response.text.split())[:200]})")
    log.debug("tracking server %s answered", uri)


def _root_cause(exc: BaseException) -> str:
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    return " ".join(str(exc).split()) or type(exc).__name__
