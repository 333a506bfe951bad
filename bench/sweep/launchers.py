"""Where a sweep's jobs (its runs and the studies of its tune stage) execute: in this process, in spawned local
processes, or as Ray tasks; :func:`run_jobs` feeds them ``workers`` at a time and stops them on SIGINT or SIGTERM
(SIGTERM to the workers, SIGKILL after :data:`STOP_GRACE_S`), a second stop signal ignored meanwhile."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from bench.config import ExperimentConfig
from bench.track.interrupt import raise_on_sigterm
from bench.track.store import quiet_database_errors

log = logging.getLogger(__name__)
STOP_GRACE_S = 10.0  # how long stopped workers get to mark their runs KILLED before they are killed outright


class Launcher(Protocol):
    """Where a sweep's jobs (runs, and the studies of its tune stage) execute: ``submit(fn, args, threads)``
    calls ``fn(*args)`` with ``threads`` CPUs and returns its future; ``stop()`` ends the jobs still running (the
    sweep was interrupted), their runs marked KILLED."""

    def submit(self, fn: Callable[..., Any], args: tuple, threads: int) -> cf.Future: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class InProcessLauncher:
    """One job at a time in this process (``workers=1``): the simplest to debug."""

    def submit(self, fn: Callable[..., Any], args: tuple, threads: int) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def stop(self) -> None:
        pass  # the interrupt has reached the job already: it ran in this process

    def close(self) -> None:
        pass


def _worker_setup() -> None:
    """A worker process leaves SIGINT to the sweep (Ctrl-C reaches the whole process group; the sweep then stops its
    workers itself), while idle ends quietly on SIGTERM (see :func:`_stoppable`), and leaves the reporting of database
    errors to the sweep."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    quiet_database_errors()


def _stoppable(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker process, where SIGTERM (from the sweep stopping it, or a batch scheduler ending the
    job) raises :class:`~bench.track.interrupt.Terminated` in it: its run is marked KILLED, its trial FAILED."""
    raise_on_sigterm()
    try:
        return fn(*args)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class ProcessPoolLauncher:
    """Jobs in fresh (spawned) processes on this machine."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = self._new_pool()
        self.futures: list[cf.Future] = []  # the submitted jobs, for stop()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_setup)

    def submit(self, fn: Callable[..., Any], args: tuple, threads: int) -> cf.Future:
        try:
            future = self.pool.submit(_stoppable, fn, *args)
        except BrokenProcessPool:  # a worker died (out of memory, killed): its jobs failed, the rest go on
            log.warning("a sweep worker process died; starting new ones")
            self.pool = self._new_pool()
            future = self.pool.submit(_stoppable, fn, *args)
        self.futures.append(future)
        return future

    def stop(self) -> None:
        """SIGTERM to every worker process: a running job ends (its run KILLED) and sends its result, then a second
        SIGTERM ends the idle process; SIGKILL to any still alive :data:`STOP_GRACE_S` after the first."""
        processes = list((self.pool._processes or {}).values())  # the executor has no public list of its processes
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            if process.is_alive():
                process.terminate()
        cf.wait([f for f in self.futures if not f.done()], timeout=STOP_GRACE_S)
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()  # idle now: SIGTERM ends it at once
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("sweep worker %d did not stop within %.0f s of SIGTERM; killed", process.pid,
                            STOP_GRACE_S)
                process.kill()
                process.join(1)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayLauncher:
    """Each job a Ray task declaring ``threads`` CPUs and ``gpus_per_run`` GPUs (default: one where the cluster
    has GPUs; 0.25 packs four runs on one GPU). Ray shows the task only the GPUs it was given, so a run with
    ``run.device`` ``auto`` or ``cuda`` computes on its own share."""

    def __init__(self, address: str | None, gpus_per_run: float | None = None):
        from bench.fed.ray_executor import connect_ray

        self.ray, self.started = connect_ray(address)
        self.tasks: dict[Callable[..., Any], Any] = {}
        self.refs: list[Any] = []  # the submitted tasks, for stop()
        if gpus_per_run is None:
            gpus_per_run = 1.0 if self.ray.cluster_resources().get("GPU", 0) else 0.0
        self.gpus = gpus_per_run

    def submit(self, fn: Callable[..., Any], args: tuple, threads: int) -> cf.Future:
        if fn not in self.tasks:  # no retries: a retry would start a second MLflow run
            self.tasks[fn] = self.ray.remote(max_retries=0)(fn)
        ref = self.tasks[fn].options(num_cpus=threads, num_gpus=self.gpus).remote(*args)
        self.refs.append(ref)
        return ref.future()

    def stop(self) -> None:
        """Cancel the tasks: Ray raises KeyboardInterrupt in those running, so their runs are marked KILLED."""
        for ref in self.refs:
            self.ray.cancel(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def run_jobs(launcher: Launcher, jobs: Sequence[int], workers: int,
             start: Callable[[int, int], tuple[Callable[..., Any], tuple, int]],
             finished: Callable[[int, cf.Future], None], running: Callable[[int], None] = lambda n: None) -> None:
    """Run ``jobs`` (indices) through ``launcher``, at most ``workers`` at a time. ``start(job, slot)`` gives
    the call ``(fn, args, threads)`` for a job about to start on a free worker slot (0 ≤ slot < workers; on a
    machine whose GPUs are shared out, the slot's GPU); ``finished(job, future)`` is told of each job done;
    ``running(n)`` of the number running after each start and each end. On an exception (SIGINT or SIGTERM to
    this process, a full disk) the jobs still running are stopped (``launcher.stop()``) before it is raised."""
    pending = list(jobs)
    in_flight: dict[cf.Future, tuple[int, int]] = {}  # future -> (job, slot)
    try:
        while pending or in_flight:
            while pending and len(in_flight) < workers:
                job = pending.pop(0)
                slot = min(set(range(workers)) - {slot for _, slot in in_flight.values()})
                running(len(in_flight) + 1)
                fn, args, threads = start(job, slot)
                in_flight[launcher.submit(fn, args, threads)] = (job, slot)
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for future in done:
                job, _ = in_flight.pop(future)
                finished(job, future)
            running(len(in_flight))
    except BaseException:
        ignore_stop_signals()
        if in_flight:
            log.info("stopping %d running jobs", len(in_flight))
            launcher.stop()
        raise


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stop_signal_blocks = 0  # how deep the main thread is in stop_signals_restored blocks


@contextmanager
def stop_signals_restored() -> Iterator[None]:
    """A block within which :func:`ignore_stop_signals` may turn SIGINT and SIGTERM off; their handlers of before are
    back when the outermost such block ends (in the main thread; elsewhere signals cannot be handled anyway)."""
    global _stop_signal_blocks
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    _stop_signal_blocks += 1
    try:
        yield
    finally:
        _stop_signal_blocks -= 1
        if not _stop_signal_blocks:
            for number, handler in previous.items():
                signal.signal(number, handler)


def ignore_stop_signals() -> None:
    """Once the sweep is stopping, a second SIGINT or SIGTERM (``timeout -s INT`` followed by a supervisor's SIGTERM)
    must not cut short the stopping of its workers and the closing of its runs: ignore them until the outermost
    :func:`stop_signals_restored` block ends."""
    if _stop_signal_blocks and threading.current_thread() is threading.main_thread():
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)


def on_slot_device(data: dict[str, Any], slot: int, slot_devices: list[str] | None) -> dict[str, Any]:
    """Config data whose ``run.device`` ``auto`` or ``cuda`` becomes the worker slot's GPU, where this machine's
    GPUs are shared out (``slot_devices``); other devices are kept."""
    if slot_devices and data["run"]["device"] in ("auto", "cuda"):
        data["run"]["device"] = slot_devices[slot]
    return data


def local_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_launcher(backend: str, workers: int, address: str | None, gpus_per_run: float | None = None) -> Launcher:
    """Where the runs go; no Ray cluster or process pool is started when nothing is left to run."""
    if backend == "ray" and workers:
        return RayLauncher(address, gpus_per_run)
    if workers > 1:
        return ProcessPoolLauncher(workers)
    return InProcessLauncher()


def runtime_config(config: ExperimentConfig, uri: str, threads: int | None) -> dict[str, Any]:
    """The config as a plain dict with run-section paths made absolute (workers may run elsewhere)."""
    data = config.model_dump(mode="json")
    run = data["run"]
    run.update(tracking_uri=uri, checkpoint_dir=str(Path(run["checkpoint_dir"]).resolve()),
               cache_dir=str(Path(run["cache_dir"]).resolve()))
    if threads is not None:
        run["threads"] = threads
    return data
