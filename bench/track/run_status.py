"""Closing an MLflow run that an exception stops: KILLED when interrupted, FAILED otherwise."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.tracking import MlflowClient

from bench.record_names import ERROR_TAG

log = logging.getLogger(__name__)


@contextmanager
def closed_on_exception(client: MlflowClient, run_id: str, record_reason: bool = True) -> Iterator[None]:
    """Meanwhile an exception ends the run ``run_id``: KILLED on an interrupt (Ctrl-C, SIGTERM), else FAILED, with
    the reason as its ``error`` tag when ``record_reason``. A store that cannot record it (a full disk) is logged,
    and the exception goes on as it was."""
    try:
        yield
    except BaseException as exc:
        try:
            if record_reason:
                client.set_tag(run_id, ERROR_TAG, f"{type(exc).__name__}: {exc}"[:5000])
            client.set_terminated(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        except Exception as err:
            log.warning("run %s could not be marked stopped: %s", run_id, err)
        raise
