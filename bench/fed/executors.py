"""Local executors of a round's updates: serially in this process, or in a pool of local processes.

(``bench.fed.ray_executor`` runs them on Ray; the engine picks one. Both build on :mod:`bench.fed.local_update`.)
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from typing import Any

import torch

from bench.config import ExperimentConfig, validate_config
from bench.fed.device import worker_devices
from bench.fed.federation import Federation
from bench.fed.local_update import Job, JobDone, result_to, run_local_update, run_remote_update
from bench.fed.worker import federation_in_this_process
from bench.methods.api import LocalResult
from bench.models.base import EarlyExitNet


class SerialExecutor:
    """Runs the updates one after another in this process, reusing one scratch model."""

    def __init__(self, fed: Federation, on_done: JobDone | None = None):
        self.fed = fed
        self.model = fed.work_model()
        self.on_done = on_done

    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]:
        results = []
        for job in jobs:
            results.append(run_local_update(self.fed, self.model, round, job))
            if self.on_done is not None:
                self.on_done(round, job, len(results), len(jobs))
        return results

    def close(self) -> None:
        pass


# -- local process pool -----------------------------------------------------------------------------------------

_worker: tuple[Federation, EarlyExitNet] | None = None


def _init_worker(config_data: dict[str, Any], threads: int, devices: Any) -> None:
    """Build the worker's federation on the next device of the ``devices`` queue (one GPU per worker)."""
    global _worker
    fed = federation_in_this_process(validate_config(config_data), devices.get(), threads)
    _worker = (fed, fed.work_model())


def _run_in_worker(args: tuple[int, int, Job]) -> tuple[int, LocalResult]:
    """``(index, round, job)`` → ``(index, result)``: the index puts results that finish out of order back in place."""
    assert _worker is not None, "worker not initialised"
    fed, model = _worker
    index, round, job = args
    return index, run_remote_update(fed, model, round, job)


class ProcessExecutor:
    """A pool of local processes, each holding its own copy of the data and one scratch model.

    On a machine with N GPUs and ``run.device`` ``auto`` or ``cuda``, worker i computes on GPU i mod N; jobs and
    results travel through host memory.
    """

    def __init__(self, config: ExperimentConfig, workers: int, threads: int, device: torch.device,
                 on_done: JobDone | None = None):
        ctx = mp.get_context("spawn")
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        devices = ctx.Queue()
        for spec in worker_devices(config.run.device, workers, gpus):
            devices.put(spec)
        self.device = device
        self.on_done = on_done
        self.pool = ctx.Pool(workers, initializer=_init_worker,
                             initargs=(config.model_dump(mode="json"), threads, devices))

    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]:
        results: list[LocalResult | None] = [None] * len(jobs)
        tasks = [(i, round, job.to("cpu")) for i, job in enumerate(jobs)]
        for done, (i, result) in enumerate(self.pool.imap_unordered(_run_in_worker, tasks, chunksize=1), 1):
            results[i] = result_to(result, self.device)
            if self.on_done is not None:
                self.on_done(round, jobs[i], done, len(jobs))
        return results  # type: ignore[return-value]  # every slot is filled

    def close(self) -> None:
        self.pool.close()
        self.pool.join()
