"""An experiment's earlier runs, as a sweep finds them before it starts: finished (skipped), interrupted with a
checkpoint (resumed), running in a live process (left to it); runs left RUNNING by a process that has died are marked
KILLED first."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.record_names import CHECKPOINT_TAG, CONFIG_HASH_TAG, ERROR_TAG, OWNER_TAG
from bench.track.checkpoint import list_checkpoints
from bench.track.claim import ClaimedElsewhere, run_key
from bench.track.mlflow_tracker import get_or_create_experiment, search_all_runs
from bench.track.owner import owner_alive, why_left_running

log = logging.getLogger(__name__)


@dataclass
class Resumable:
    """An interrupted run (Ctrl-C, SIGTERM, or its process died) with a checkpoint to resume from."""

    run_id: str
    threads: int | None  # the run's torch threads (param run.threads): resuming with them is bitwise-identical


@dataclass
class PriorRuns:
    """Run key (:func:`run_key`) -> an experiment's earlier runs that a sweep does not start again."""

    finished: dict[str, str]  # run ids, skipped
    killed: dict[str, Resumable]  # resumed
    running: dict[str, ClaimedElsewhere] = field(default_factory=dict)  # RUNNING in a live process: left to it


def close_orphaned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED, with the reason as the ``error`` tag, the experiment's RUNNING runs whose owner process has
    ended; returns their ids. They then resume (or start over) like runs stopped with Ctrl-C."""
    closed = []
    for run in search_all_runs(client, experiment_id, "attributes.status = 'RUNNING'"):
        owner = run.data.tags.get(OWNER_TAG)
        if owner_alive(owner) is False:
            client.set_tag(run.info.run_id, ERROR_TAG, why_left_running(owner))
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    return closed


def prior_runs(uri: str, experiment: str) -> PriorRuns:
    """The FINISHED runs, the resumable KILLED runs (newest first) and the runs RUNNING in live processes (another
    sweep's) of an experiment, creating it if missing. RUNNING runs whose process has died on this machine are
    marked KILLED first."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = get_or_create_experiment(client, experiment)
    for run_id in close_orphaned_runs(client, experiment_id):
        log.warning("run %s was left RUNNING by a process that no longer exists; marked KILLED", run_id)
    prior = PriorRuns({}, {})
    for run in search_all_runs(client, experiment_id, "attributes.status = 'RUNNING'"):
        owner = run.data.tags.get(OWNER_TAG)
        if owner_alive(owner):
            prior.running.setdefault(run_key(run.data.tags.get(CONFIG_HASH_TAG, ""), run.data.tags),
                                     ClaimedElsewhere(run.info.run_id, "RUNNING", owner))
    for run in search_all_runs(client, experiment_id, "attributes.status != 'RUNNING'"):
        digest, status = run_key(run.data.tags.get(CONFIG_HASH_TAG, ""), run.data.tags), run.info.status
        checkpoints = run.data.tags.get(CHECKPOINT_TAG)
        if status == "FINISHED":
            prior.finished.setdefault(digest, run.info.run_id)
        elif status == "KILLED" and checkpoints and list_checkpoints(Path(checkpoints)):
            threads = run.data.params.get("run.threads")
            prior.killed.setdefault(digest, Resumable(run.info.run_id, int(threads) if threads else None))
    return prior
