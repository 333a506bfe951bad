"""A round's unit of work: the :class:`Job` of one client and the pure function every executor runs on it.

Every executor (serial, process, Ray) calls :func:`run_local_update` with the same generator, so they all give
bitwise-identical results for the same config and seed. Executors import this module; it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from bench.fed.federation import Federation
from bench.ground.rng import torch_generator
from bench.ground.tensor_ops import to_device
from bench.methods.api import LocalResult, Message
from bench.models.base import EarlyExitNet


@dataclass
class Job:
    client: int
    payload: Message
    state: dict[str, Any]

    def to(self, device: torch.device | str) -> Job:
        """The job with its tensors on ``device`` (jobs cross to worker processes and back through the host)."""
        return Job(self.client, Message(to_device(self.payload.tensors, device), to_device(self.payload.meta, device)),
                   to_device(self.state, device))


def result_to(result: LocalResult, device: torch.device | str) -> LocalResult:
    """``result`` with its upload and state on ``device``."""
    upload = Message(to_device(result.upload.tensors, device), to_device(result.upload.meta, device))
    return LocalResult(upload, to_device(result.state, device), result.metrics)


def run_local_update(fed: Federation, model: EarlyExitNet, round: int, job: Job) -> LocalResult:
    gen = torch_generator(fed.config.seed, "local-update", round, job.client)
    return fed.method.local_update(model, round, job.payload, job.state, fed.client_data(job.client), gen)


def run_remote_update(fed: Federation, model: EarlyExitNet, round: int, job: Job) -> LocalResult:
    """:func:`run_local_update` in a worker: the job arrives in host memory and the result goes back there."""
    return result_to(run_local_update(fed, model, round, job.to(fed.device)), "cpu")


JobDone = Callable[[int, Job, int, int], None]
"""Told as each job of a round finishes, in the order they finish: ``(round, job, jobs done so far, jobs in the
round)``. An executor takes one to report progress; it only observes: the results, and their order in the list
``run_round`` returns, are the same without it."""


class Executor(Protocol):
    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]: ...

    def close(self) -> None: ...
