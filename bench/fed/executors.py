"""Executors run a round's local updates: serially, in local processes, or (``bench.fed.ray_executor``) on Ray.

Every executor calls the same pure function, :func:`run_local_update`, with the same generator, so they all give
bitwise-identical results for the same config and seed.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from bench.config import ExperimentConfig, validate_config
from bench.fed.federation import Federation, build_federation
from bench.ground.rng import torch_generator
from bench.methods.api import LocalResult, Message
from bench.models.base import EarlyExitNet


@dataclass
class Job:
    client: int
    payload: Message
    state: dict[str, Any]


def run_local_update(fed: Federation, model: EarlyExitNet, round: int, job: Job) -> LocalResult:
    gen = torch_generator(fed.config.seed, "local-update", round, job.client)
    return fed.method.local_update(model, round, job.payload, job.state, fed.client_data(job.client), gen)


class Executor(Protocol):
    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs the updates one after another in this process, reusing one scratch model."""

    def __init__(self, fed: Federation):
        self.fed = fed
        self.model = fed.new_model()

    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]:
        return [run_local_update(self.fed, self.model, round, job) for job in jobs]

    def close(self) -> None:
        pass


# -- local process pool -----------------------------------------------------------------------------------------

_worker: tuple[Federation, EarlyExitNet] | None = None


def _init_worker(config_data: dict[str, Any], threads: int) -> None:
    global _worker
    torch.set_num_threads(threads)
    fed = build_federation(validate_config(config_data))
    _worker = (fed, fed.new_model())


def _run_in_worker(args: tuple[int, Job]) -> LocalResult:
    assert _worker is not None, "worker not initialised"
    fed, model = _worker
    return run_local_update(fed, model, *args)


class ProcessExecutor:
    """A pool of local processes, each holding its own copy of the data and one scratch model."""

    def __init__(self, config: ExperimentConfig, workers: int, threads: int):
        ctx = mp.get_context("spawn")
        self.pool = ctx.Pool(workers, initializer=_init_worker,
                             initargs=(config.model_dump(mode="json"), threads))

    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]:
        return self.pool.map(_run_in_worker, [(round, job) for job in jobs], chunksize=1)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


def make_executor(fed: Federation) -> Executor:
    run = fed.config.run
    if run.executor == "serial":
        return SerialExecutor(fed)
    if run.executor == "process":
        return ProcessExecutor(fed.config, run.workers, run.threads)
    from bench.fed.ray_executor import RayExecutor

    return RayExecutor(fed, run.workers, run.threads, run.ray_address)
