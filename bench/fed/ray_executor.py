"""Run a round's local updates on a Ray cluster (``run.executor=ray``).

``run.workers`` actors each build the :class:`Federation` once from the config, with the dataset put in the
object store once and passed by reference; each round, the jobs (payload and personal state) go to idle actors
as task arguments. The actors hold no run state and call the same pure :func:`run_local_update` with
``run.threads`` torch threads, so the metrics are bitwise-identical to the serial executor's on the same kind of
device. When the run is on a GPU, each actor asks Ray for an equal share of the cluster's GPUs (at most one).
Ray is the optional extra ``cafebench[ray]``; it is imported only when this executor or a Ray sweep is used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from bench.config import validate_config
from bench.data.dataset import Dataset
from bench.fed.federation import Federation
from bench.fed.local_update import Job, JobDone, result_to, run_remote_update
from bench.fed.worker import federation_in_this_process
from bench.methods.api import LocalResult

log = logging.getLogger(__name__)


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise RuntimeError("the Ray backend needs Ray: pip install 'cafebench[ray]'") from None
    return ray


def connect_ray(address: str | None) -> tuple[ModuleType, bool]:
    """The ``ray`` module, connected to ``address`` (default: a new local cluster) unless already connected.

    The flag says whether this call connected, i.e. whether the caller should ``ray.shutdown()`` when done.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    log.info("connecting to Ray at %s", address or "a new local cluster")
    ray.init(address=address)
    return ray, True


class FederationWorker:
    """A Ray actor: the federation built once, then local updates on demand."""

    def __init__(self, config_data: dict[str, Any], dataset: Dataset, threads: int):
        config = validate_config(config_data)  # Ray shows the actor only the GPUs it was given
        self.fed = federation_in_this_process(config, config.run.device, threads, dataset)
        self.model = self.fed.work_model()

    def update(self, round: int, job: Job) -> LocalResult:
        return run_remote_update(self.fed, self.model, round, job)


class RayExecutor:
    def __init__(self, fed: Federation, workers: int, threads: int, address: str | None,
                 on_done: JobDone | None = None):
        self.actors: list[Any] = []
        self.on_done = on_done
        self.ray, self.started = connect_ray(address)
        cpus = self.ray.cluster_resources().get("CPU", 0)
        if workers * threads > cpus:
            self.close()
            raise ValueError(f"the Ray cluster has {cpus:g} CPUs but run.workers × run.threads = "
                             f"{workers} × {threads}: lower run.workers or run.threads")
        from ray.util import ActorPool

        self.device = fed.device
        gpus = self.ray.cluster_resources().get("GPU", 0) if fed.device.type == "cuda" else 0
        if fed.device.type == "cuda" and not gpus:
            self.close()
            raise ValueError(f"the run is on {fed.device} but the Ray cluster has no GPUs: use run.device=cpu")
        dataset = self.ray.put(fed.dataset)
        actor = self.ray.remote(num_cpus=threads, num_gpus=min(1.0, gpus / workers))(FederationWorker)
        config_data = fed.config.model_dump(mode="json")
        if fed.device.type == "cuda":
            config_data["run"]["device"] = "cuda"  # whichever GPU Ray gives the actor
        self.actors = [actor.remote(config_data, dataset, threads) for _ in range(workers)]
        self.pool = ActorPool(self.actors)

    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]:
        results = []  # the pool yields them in the jobs' order, each as soon as it and those before it are back
        for job, result in zip(jobs, self.pool.map(lambda actor, job: actor.update.remote(round, job),
                                                   [job.to("cpu") for job in jobs]), strict=True):
            results.append(result_to(result, self.device))
            if self.on_done is not None:
                self.on_done(round, job, len(results), len(jobs))
        return results

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started:
            self.ray.shutdown()
