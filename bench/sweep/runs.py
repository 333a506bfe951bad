"""Running a sweep: its parent run, its tune stage, then each run that no earlier or concurrent run has taken, on
the sweep's launcher (the format and the rules: :mod:`bench.sweep`)."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from mlflow.tracking import MlflowClient

from bench.config import validate_config
from bench.defaults import DEFAULT_STORAGE
from bench.fed.device import worker_devices
from bench.fed.engine import Callback
from bench.record_names import MLFLOW_PARENT_TAG, NOTE_TAG, SWEEP_TAG
from bench.sweep.launchers import (
    Launcher,
    local_cores,
    local_gpus,
    make_launcher,
    on_slot_device,
    run_jobs,
    runtime_config,
    stop_signals_restored,
)
from bench.sweep.outcomes import RunOutcome, SweepProgress, SweepResult, outcome_of, summary, taken_outcome
from bench.sweep.spec import Sweep
from bench.sweep.tune_stage import run_tune_stage, tune_cost_note
from bench.track.claim import ClaimedElsewhere, claim_point, run_key
from bench.track.disk_full import DiskFullError, reported_disk_full
from bench.track.locations import absolute_tracking_uri, artifact_locations
from bench.track.mlflow_tracker import RunInUseError, get_or_create_experiment, open_parent_run, tracking_uri
from bench.track.prior_runs import prior_runs
from bench.track.run_status import closed_on_exception
from bench.track.runner import run_experiment
from bench.track.store_lock import store_lock

log = logging.getLogger(__name__)


def run_sweep(sweep: Sweep, backend: Literal["local", "ray"] = "local", workers: int = 1,
              address: str | None = None, progress: Callable[[SweepProgress], None] | None = None,
              threads: int | None = None, gpus_per_run: float | None = None,
              gpus: int | None = None, run_callbacks: Callable[[int], list[Callback]] | None = None) -> SweepResult:
    """Run the sweep's tune stage, if it has one, then its unfinished configs, ``workers`` at a time; failures
    of runs are collected, not raised (a study that fails raises).

    ``threads`` (torch threads per run) defaults to the local cores // ``workers`` on the local backend and to
    each config's ``run.threads`` on Ray. ``address`` is the Ray cluster's (default: start a local one).
    On the local backend, the ``workers`` concurrent runs whose ``run.device`` is ``auto`` or ``cuda`` each get a
    GPU of this machine's ``gpus`` (default: all it has), round-robin: worker slot i runs on ``cuda:{i mod gpus}``.
    On Ray each run asks for ``gpus_per_run`` GPUs (see :class:`RayLauncher`). ``run_callbacks(i)`` gives the
    engine callbacks of config ``i``'s run (e.g. a progress bar; they travel to the worker, so with several workers
    or on Ray they must pickle).
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown sweep backend {backend!r}; use 'local' or 'ray'")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if address is not None and backend != "ray":
        raise ValueError("an address is only for the ray backend (add --backend ray)")
    if gpus_per_run is not None and (backend != "ray" or gpus_per_run < 0):
        raise ValueError(f"--gpus-per-run is for the ray backend and must be >= 0, got {gpus_per_run}")
    gpu_count = local_gpus() if gpus is None and backend == "local" else gpus or 0
    slot_devices = worker_devices("cuda", workers, gpu_count) if gpu_count else None
    if backend == "local" and threads is None:
        threads = max(1, local_cores() // workers)

    def launcher(jobs: int) -> Launcher:
        return make_launcher(backend, min(workers, jobs), address, gpus_per_run)

    uri = absolute_tracking_uri(tracking_uri(sweep.configs[0].run.tracking_uri))
    stores = [uri, absolute_tracking_uri(sweep.tune.storage or DEFAULT_STORAGE)] if sweep.tune else [uri]
    with stop_signals_restored(), reported_disk_full(stores):
        with store_lock(uri):  # a new store gets its tables once, and two sweeps started together one parent run
            client = MlflowClient(tracking_uri=uri)
            parent_run_id = open_parent_run(client, get_or_create_experiment(client, sweep.experiment),
                                            f"sweep:{sweep.name}", f"sweep {sweep.name}",
                                            f"Sweep **{sweep.name}**: {len(sweep.configs)} runs"
                                            + (", tuning first." if sweep.tune else "."))
        with closed_on_exception(client, parent_run_id, record_reason=False):
            sweep = run_tune_stage(sweep, parent_run_id, launcher, workers, threads, slot_devices)
            stage = RunStage(sweep, uri, parent_run_id, threads, slot_devices, run_callbacks)
            log.info("sweep %s: %d runs, %d already finished or running elsewhere", sweep.name, len(sweep.configs),
                     len(stage.outcomes))
            client.set_tag(parent_run_id, NOTE_TAG, f"Sweep **{sweep.name}**: {len(sweep.configs)} runs, "
                                                    f"{len(stage.pending)} to run." + tune_cost_note(sweep))
            result = stage.run(launcher, workers, progress)
        client.set_tag(parent_run_id, NOTE_TAG, f"Sweep **{sweep.name}**: {len(sweep.configs)} runs; {summary(result)}."
                                                + tune_cost_note(sweep))
        client.set_terminated(parent_run_id, "FAILED" if result.failed else "FINISHED")
    return result


class RunStage:
    """The runs of a sweep once its tune stage is done: those that no earlier or concurrent run has taken run
    ``workers`` at a time; :meth:`start` and :meth:`finished` are what :func:`run_jobs` calls for each."""

    def __init__(self, sweep: Sweep, uri: str, parent_run_id: str, threads: int | None,
                 slot_devices: list[str] | None, run_callbacks: Callable[[int], list[Callback]] | None = None):
        self.sweep, self.uri, self.threads, self.slot_devices = sweep, uri, threads, slot_devices
        self.run_callbacks = run_callbacks
        self.tags = {SWEEP_TAG: sweep.name, MLFLOW_PARENT_TAG: parent_run_id}
        self.prior = prior_runs(uri, sweep.experiment)
        self.digests = [run_key(config.content_hash(), extra)
                        for config, extra in zip(sweep.configs, sweep.tags, strict=True)]
        self.outcomes: dict[int, RunOutcome] = {}
        self.pending: list[int] = []  # the configs to run
        for i, (digest, label) in enumerate(zip(self.digests, sweep.labels, strict=True)):
            if digest in self.prior.finished:
                self.outcomes[i] = RunOutcome(label, digest, "skipped", self.prior.finished[digest])
            elif digest in self.prior.running:
                self.outcomes[i] = taken_outcome(label, digest, self.prior.running[digest])
            else:
                self.pending.append(i)
        self.progress: Callable[[SweepProgress], None] | None = None  # set by run()
        self.started = 0.0

    def run(self, launcher: Callable[[int], Launcher], workers: int,
            progress: Callable[[SweepProgress], None] | None = None) -> SweepResult:
        """Run the pending configs where ``launcher(jobs)`` puts them, telling ``progress`` as runs start and end."""
        self.progress, self.started = progress, time.perf_counter()
        pool = launcher(len(self.pending))
        try:
            self.report(0)
            run_jobs(pool, self.pending, workers, self.start, self.finished, self.report)
        finally:
            pool.close()
        return SweepResult([self.outcomes[i] for i in range(len(self.sweep.configs))])

    def report(self, running: int) -> None:
        if self.progress is not None:
            counts = [o.status for o in self.outcomes.values()]
            self.progress(SweepProgress(len(self.sweep.configs), counts.count("done"), running,
                                        counts.count("failed"), counts.count("skipped") + counts.count("elsewhere"),
                                        time.perf_counter() - self.started, dict(self.outcomes)))

    def start(self, i: int, slot: int) -> tuple[Callable[..., Any], tuple, int]:
        sweep = self.sweep
        resume = self.prior.killed.get(self.digests[i])
        data = on_slot_device(runtime_config(sweep.configs[i], self.uri, (resume and resume.threads) or self.threads),
                              slot, self.slot_devices)
        if resume:
            log.info("sweep %s: resuming the interrupted run %s of %r", sweep.name, resume.run_id, sweep.labels[i])
        run_tags = {**(sweep.tags[i] if sweep.tags else {}), **self.tags}
        callbacks = self.run_callbacks(i) if self.run_callbacks is not None else []
        return run_config, (data, run_tags, resume and resume.run_id, callbacks), data["run"]["threads"]

    def finished(self, i: int, future: cf.Future) -> None:
        outcome = self.outcomes[i] = outcome_of(future, self.sweep.labels[i], self.digests[i])
        if outcome.status in ("failed", "elsewhere"):
            log.warning("sweep %s: run %r %s: %s", self.sweep.name, self.sweep.labels[i], outcome.status,
                        outcome.reason)


def run_config(config_data: dict[str, Any], tags: dict[str, str], resume_run_id: str | None = None,
               callbacks: Sequence[Callback] = ()) -> tuple[str | None, str | None]:
    """Run one experiment (or resume the run ``resume_run_id`` of the same config) in this process, once its grid
    point is claimed (:mod:`bench.track.claim`): ``(run_id, None)``, or ``(None, reason)`` if it failed. Raises
    :class:`ClaimedElsewhere` when another process has run the point or is running it, and
    :class:`DiskFullError` when a disk is full (every run after it would fail alike)."""
    uri = tracking_uri(config_data["run"]["tracking_uri"])

    def claim() -> Any:
        experiment_id = get_or_create_experiment(MlflowClient(tracking_uri=uri), config.run.experiment)
        return claim_point(uri, experiment_id, run_key(config.content_hash(), tags))

    run = config_data["run"]
    try:
        with reported_disk_full([uri, run["checkpoint_dir"], run["cache_dir"], *artifact_locations(uri, run)]):
            config = validate_config(config_data)
            return run_experiment(config, list(callbacks), tags=tags, resume_run_id=resume_run_id,
                                  claim=claim).run_id, None
    except (ClaimedElsewhere, DiskFullError):
        raise
    except RunInUseError:  # another sweep reopened the interrupted run first
        raise ClaimedElsewhere(str(resume_run_id), "RUNNING", None) from None
    except Exception as exc:
        log.debug("run failed", exc_info=True)
        return None, f"{type(exc).__name__}: {exc}"
