"""A sweep's claim on a grid point: two sweeps of one grid on one store run each point once.

A grid point is its run key (:func:`run_key`). Just before a sweep's worker creates the point's run (or reopens its
interrupted one) it takes the store's lock (:mod:`bench.track.store_lock`) and looks for a run of the same key that
has FINISHED or is RUNNING in a live process; finding one, it raises :class:`ClaimedElsewhere` instead of running the
point. The check and the creation happen under the lock, so of two sweeps started together one runs the point and
the other sees its run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from bench.record_names import CONFIG_HASH_TAG, MAIN, OWNER_TAG, ROLE_TAG
from bench.track.mlflow_tracker import search_all_runs
from bench.track.owner import describe, owner_alive
from bench.track.store_lock import store_lock


def run_key(config_hash: str, tags: Mapping[str, str]) -> str:
    """What makes a sweep's run distinct: its config hash, and its role unless ``main``. A sensitivity row that
    fixes a hyperparameter at its default (``mu: 1.0``) has the main run's config before tuning, but is a run of
    its own."""
    role = tags.get(ROLE_TAG, MAIN)
    return config_hash if role == MAIN else f"{config_hash}/{role}"


class ClaimedElsewhere(Exception):
    """The grid point already has a FINISHED run, or a run RUNNING in a live process (another sweep's)."""

    def __init__(self, run_id: str, status: str, owner: str | None):
        super().__init__(run_id, status, owner)
        self.run_id, self.status, self.owner = run_id, status, owner

    def __str__(self) -> str:
        if self.status == "FINISHED":
            return f"run {self.run_id} has FINISHED it"
        return f"run {self.run_id} is running it in {describe(self.owner) if self.owner else 'another process'}"


def taken_by(client: MlflowClient, experiment_id: str, key: str) -> Run | None:
    """The experiment's run of run key ``key`` that has FINISHED or is RUNNING in a live process of this machine, if
    any (a run left RUNNING on another machine cannot be told from an orphan: it starts again, as the sweep's doc
    says)."""
    config_hash = key.split("/", 1)[0]
    for run in search_all_runs(client, experiment_id, f"tags.{CONFIG_HASH_TAG} = '{config_hash}'"):
        if run_key(run.data.tags.get(CONFIG_HASH_TAG, ""), run.data.tags) != key:
            continue
        status = run.info.status
        if status == "FINISHED" or (status == "RUNNING" and owner_alive(run.data.tags.get(OWNER_TAG))):
            return run
    return None


@contextmanager
def claim_point(uri: str, experiment_id: str, key: str) -> Iterator[None]:
    """Hold the store's lock while the caller creates (or reopens) the run of grid point ``key``; raise
    :class:`ClaimedElsewhere` first if the point is already taken."""
    with store_lock(uri):
        run = taken_by(MlflowClient(tracking_uri=uri), experiment_id, key)
        if run is not None:
            raise ClaimedElsewhere(run.info.run_id, run.info.status, run.data.tags.get(OWNER_TAG))
        yield
