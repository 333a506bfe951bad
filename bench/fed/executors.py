"""Local executors of a round's updates: serially in this process, or in a pool of local processes.

(``bench.fed.ray_executor`` runs them on Ray; the engine picks one. Both build on :mod:`bench.fed.local_update`.)
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from typing import Any

import torch

from bench.config import ExperimentConfig, validate_config
from bench.fed.device import resolve_device, use_device, worker_devices
from bench.fed.federation import Federation, build_federation
from bench.fed.local_update import Job, result_to, run_local_update, run_remote_update
from bench.methods.api import LocalResult
from bench.models.base import EarlyExitNet


class SerialExecutor:
    """Runs the updates one after another in this process, reusing one scratch model."""

    def __init__(self, fed: Federation):
        self.fed = fed
        self.model = fed.work_model()

    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]:
        return [run_local_update(self.fed, self.model, round, job) for job in jobs]

    def close(self) -> None:
        pass


# -- local process pool -----------------------------------------------------------------------------------------

_worker: tuple[Federation, EarlyExitNet] | None = None


def _init_worker(config_data: dict[str, Any], threads: int, devices: Any) -> None:
    """Build the worker's federation on the next device of the ``devices`` queue (one GPU per worker)."""
    global _worker
    torch.set_num_threads(threads)
    config = validate_config(config_data)
    device = resolve_device(devices.get())
    use_device(device, config.run.deterministic)
    fed = build_federation(config, device=device)
    _worker = (fed, fed.work_model())


def _run_in_worker(args: tuple[int, Job]) -> LocalResult:
    assert _worker is not None, "worker not initialised"
    fed, model = _worker
    return run_remote_update(fed, model, *args)


class ProcessExecutor:
    """A pool of local processes, each holding its own copy of the data and one scratch model.

    On a machine with N GPUs and ``run.device`` ``auto`` or ``cuda``, worker i computes on GPU i mod N; jobs and
    results travel through host memory.
    """

    def __init__(self, config: ExperimentConfig, workers: int, threads: int, device: torch.device):
        ctx = mp.get_context("spawn")
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        devices = ctx.Queue()
        for spec in worker_devices(config.run.device, workers, gpus):
            devices.put(spec)
        self.device = device
        self.pool = ctx.Pool(workers, initializer=_init_worker,
                             initargs=(config.model_dump(mode="json"), threads, devices))

    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]:
        results = self.pool.map(_run_in_worker, [(round, job.to("cpu")) for job in jobs], chunksize=1)
        return [result_to(result, self.device) for result in results]

    def close(self) -> None:
        self.pool.close()
        self.pool.join()
