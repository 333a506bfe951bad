"""The round loop: sample clients, send payloads, run local updates, aggregate, evaluate, call back.

The engine owns every piece of state (server state, each client's personal state, the communication ledger),
so a checkpoint of :class:`RunState` is enough to continue a run exactly where it stopped. It runs on the device
``run.device`` names: the server state and models there, clients' personal states where ``run.state_device``
says (the device, or pinned host memory).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.config import ExperimentConfig
from bench.data.partition import class_histogram
from bench.fed.client_states import ClientStates
from bench.fed.device import out_of_memory_message, use_device
from bench.fed.executors import ProcessExecutor, SerialExecutor
from bench.fed.federation import Federation
from bench.fed.local_update import Executor, Job, JobDone
from bench.fed.worker import federation_in_this_process
from bench.ground.rng import sample_clients, torch_generator
from bench.ground.tensor_ops import to_device
from bench.measure.accuracy import exit_outcomes_of, summarize_exits
from bench.measure.dynamic import ClientRecords
from bench.measure.summary import FinalMeasures, FinishedRun, final_measures
from bench.record_names import (
    BYTES_DOWN,
    BYTES_UP,
    DOWNLOAD,
    EVAL_SECONDS,
    LOCAL,
    PARTICIPATING,
    TEST,
    TRAIN_SECONDS,
    UPLOAD,
    VAL,
    bytes_so_far,
)

log = logging.getLogger(__name__)


@dataclass
class CommLedger:
    """Bytes sent down (payloads) and up (uploads), per client, accumulated over rounds."""

    down: list[int]
    up: list[int]

    @classmethod
    def empty(cls, num_clients: int) -> CommLedger:
        return cls([0] * num_clients, [0] * num_clients)


@dataclass
class RunState:
    """All that a run carries from one round to the next (what a checkpoint stores)."""

    next_round: int
    server: dict[str, Any]
    clients: ClientStates
    comm: CommLedger

    def to_checkpoint(self) -> dict[str, Any]:
        return {"next_round": self.next_round, "server": self.server, "clients": list(self.clients),
                "comm_down": self.comm.down, "comm_up": self.comm.up}

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any], device: torch.device | str = "cpu",
                        pinned: bool = False) -> RunState:
        """The state a checkpoint holds (loaded on the host), with its tensors on ``device``."""
        return cls(data["next_round"], to_device(data["server"], device),
                   ClientStates(to_device(data["clients"], device), device, pinned),
                   CommLedger(list(data["comm_down"]), list(data["comm_up"])))


@dataclass
class Evaluation:
    """Per-client exit records on the val and test splits after a round."""

    round: int
    val: ClientRecords
    test: ClientRecords
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientProgress:
    """A client's local update has finished: the ``done``-th of the ``total`` of round ``round`` (1-based, as
    :meth:`Callback.on_round_end` counts), in the order the updates finish."""

    round: int
    client: int
    done: int
    total: int
    samples: int  # sample passes it made: its train split × the method's epochs per round (Method.epochs_per_round)


class Callback:
    """Hooks into the round loop (progress, MLflow, checkpoints). All are optional; they observe and change nothing
    of the results."""

    def on_start(self, sim: Simulation) -> None: ...

    def on_client_end(self, sim: Simulation, progress: ClientProgress) -> None: ...

    def on_round_end(self, sim: Simulation, round: int, metrics: dict[str, float]) -> None: ...

    def on_end(self, sim: Simulation) -> None: ...


def make_executor(fed: Federation, on_done: JobDone | None = None) -> Executor:
    run = fed.config.run
    if run.executor == "serial":
        return SerialExecutor(fed, on_done)
    if run.executor == "process":
        return ProcessExecutor(fed.config, run.workers, run.threads, fed.device, on_done)
    from bench.fed.ray_executor import RayExecutor

    return RayExecutor(fed, run.workers, run.threads, run.ray_address, on_done)


class Simulation:
    def __init__(self, config: ExperimentConfig, callbacks: list[Callback] | None = None,
                 fed: Federation | None = None):
        self.config = config
        if fed is None:
            fed = federation_in_this_process(config, config.run.device)
        else:
            use_device(fed.device, config.run.deterministic)
        self.fed, self.device = fed, fed.device
        self.callbacks = list(callbacks or [])
        self.eval_model = self.fed.work_model()
        self.state = self.initial_state()
        self.last_eval: Evaluation | None = None
        self.measures: FinalMeasures | None = None  # the end-of-run measures, once run() has finished
        self.history: list[dict[str, float]] = []

    @property
    def rounds(self) -> int:
        return self.config.train.rounds

    def clients_in_round(self, round: int) -> int:
        """How many clients train in round ``round`` (0-based)."""
        cfg = self.config
        return len(sample_clients(cfg.seed, round, self.fed.num_clients, cfg.train.participation))

    def local_samples(self, client: int) -> int:
        """Sample passes of one local update of ``client``: its train split × the method's epochs per round."""
        epochs = self.fed.method.epochs_per_round(self.fed.method.hp, self.config.train.local_epochs)
        return round(self.fed.method.ctx.client_train_sizes[client] * epochs)

    def _job_done(self, round: int, job: Job, done: int, total: int) -> None:
        progress = ClientProgress(round + 1, job.client, done, total, self.local_samples(job.client))
        for cb in self.callbacks:
            cb.on_client_end(self, progress)

    def initial_state(self) -> RunState:
        method = self.fed.method
        server = method.init_server(self.fed.new_model())
        model = self.fed.new_model()
        clients = ClientStates((method.init_client(c, model, server) for c in range(self.fed.num_clients)),
                               self.device, self.config.run.state_device == "pinned")
        return RunState(0, server, clients, CommLedger.empty(self.fed.num_clients))

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint (as :func:`~bench.track.checkpoint.load_latest_checkpoint` returns it)."""
        self.state = RunState.from_checkpoint(checkpoint, self.device, self.config.run.state_device == "pinned")

    def run(self, measure: bool = True) -> Evaluation:
        """Run the remaining rounds (all of them, unless ``state`` came from a checkpoint), then, with ``measure``,
        compute the end-of-run measures into :attr:`measures` (MACs, dynamic inference, per-client results;
        :func:`~bench.measure.summary.final_measures`) before the callbacks' ``on_end``.

        Running out of device memory raises a :class:`RuntimeError` that says which settings to lower.
        """
        torch.set_num_threads(self.config.run.threads)
        try:
            for cb in self.callbacks:
                cb.on_start(self)
            executor = make_executor(self.fed, self._job_done)
            try:
                while self.state.next_round < self.rounds:
                    self.run_round(executor, self.state.next_round)
            finally:
                executor.close()
            if self.last_eval is None or self.last_eval.round != self.rounds:
                self.last_eval = self.evaluate(self.rounds)
        except torch.OutOfMemoryError as exc:
            raise RuntimeError(out_of_memory_message(self.device, self.config.run.state_device,
                                                     self.config.train.batch_size)) from exc
        if measure:
            self.measures = final_measures(self.finished_run())
        for cb in self.callbacks:
            cb.on_end(self)
        return self.last_eval

    def finished_run(self) -> FinishedRun:
        """What the end-of-run measures read of this run: its last evaluation, model, clients' tiers and bytes."""
        fed, cfg, ev = self.fed, self.config, self.last_eval
        if ev is None:
            raise RuntimeError("the run has no evaluation yet: call run() before measuring it")
        clients = range(fed.num_clients)
        return FinishedRun(
            model_of_width=fed.new_model, input_shape=fed.dataset.input_shape,
            num_exits=fed.method.ctx.num_exits, full_width=cfg.model.width,
            widths=[fed.method.client_width(c) for c in clients],
            exits_held=[fed.method.client_exits(c) for c in clients],
            split_sizes=fed.partition.sizes(),
            class_histogram=class_histogram(fed.partition, fed.dataset.y, fed.dataset.num_classes),
            test=ev.test, val=ev.val, bytes_up=list(self.state.comm.up), bytes_down=list(self.state.comm.down),
            thresholds=cfg.eval.thresholds, report_threshold=cfg.eval.report_threshold)

    def run_round(self, executor: Executor, round: int) -> dict[str, float]:
        """Run round ``round`` (0-based); its metrics are logged with step ``round + 1``."""
        started = time.perf_counter()
        method, state, cfg = self.fed.method, self.state, self.config
        clients = sample_clients(cfg.seed, round, self.fed.num_clients, cfg.train.participation)
        jobs = [Job(c, method.payload(round, c, state.server), state.clients[c]) for c in clients]
        results = executor.run_round(round, jobs)
        down = up = 0
        for job, result in zip(jobs, results, strict=True):
            state.clients[job.client] = result.state
            state.comm.down[job.client] += job.payload.nbytes
            state.comm.up[job.client] += result.upload.nbytes
            down += job.payload.nbytes
            up += result.upload.nbytes
        uploads = {job.client: result.upload for job, result in zip(jobs, results, strict=True)}
        received = state.server
        state.server = method.aggregate(round, uploads, state.server)
        state.next_round = round + 1
        metrics: dict[str, float] = {BYTES_DOWN: float(down), BYTES_UP: float(up),
                                     bytes_so_far(DOWNLOAD): float(sum(state.comm.down)),
                                     bytes_so_far(UPLOAD): float(sum(state.comm.up)),
                                     PARTICIPATING: float(len(clients))}
        losses: dict[str, list[float]] = {}
        for result in results:
            for key, value in result.metrics.items():
                losses.setdefault(key, []).append(value)
        metrics.update({key: float(np.mean(v)) for key, v in losses.items()})
        metrics[TRAIN_SECONDS] = time.perf_counter() - started
        if state.next_round % cfg.eval.every == 0 or state.next_round == self.rounds:
            t0 = time.perf_counter()
            if cfg.eval.point != "local":
                self.last_eval = self.evaluate(state.next_round)
                metrics.update(self.last_eval.metrics)
            if cfg.eval.point != "aggregated":
                # the server state as if the client alone had uploaded: its own trained model, for every method
                # whose aggregate averages the uploads (an average of one upload is that upload)
                local = self.evaluate(state.next_round, lambda c: method.aggregate(round, {c: uploads[c]}, received),
                                      LOCAL)
                metrics.update(local.metrics)
            metrics[EVAL_SECONDS] = time.perf_counter() - t0
        self.history.append({"round": float(state.next_round), **metrics})
        for cb in self.callbacks:
            cb.on_round_end(self, state.next_round, metrics)
        return metrics

    def evaluate(self, round: int, server_of: Callable[[int], dict[str, Any]] | None = None,
                 prefix: str = "") -> Evaluation:
        """Every client's model, per exit, on its own val and test splits (one forward pass per batch).

        ``server_of(client)`` gives the server state a client's model is built from (default: the current one);
        metric names start with ``prefix``."""
        method, state, bs = self.fed.method, self.state, self.config.eval.batch_size
        precision = self.config.train.precision
        clients, sizes = range(self.fed.num_clients), self.fed.partition.sizes()
        exits = [method.client_exits(c) for c in clients]
        test = ClientRecords({c: (sizes[c, 2], exits[c]) for c in clients}, self.device)
        val = ClientRecords({c: (sizes[c, 1], exits[c]) for c in clients if sizes[c, 1]}, self.device)
        for c in clients:
            data = self.fed.client_data(c)
            gen = torch_generator(self.config.seed, "evaluation", round, c)
            server = state.server if server_of is None else server_of(c)
            predict = method.eval_model(self.eval_model, c, server, state.clients[c], data, gen)
            test.write(c, *exit_outcomes_of(predict, self.fed.batches, data.test_idx, bs, precision))
            if c in val:
                val.write(c, *exit_outcomes_of(predict, self.fed.batches, data.val_idx, bs, precision))
        m = self.fed.method.ctx.num_exits
        metrics = summarize_exits(test, m, prefix + TEST)
        if val:
            metrics.update(summarize_exits(val, m, prefix + VAL))
        return Evaluation(round, val, test, metrics)
