"""The loops ``cafebench perf`` times side by side: the harness's own local update, and the bare PyTorch loop that
runs the same SGD steps on the same batches (eagerly, compiled or in ``channels_last`` memory format)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.fed.device import compile_model, place_model
from bench.fed.engine import Simulation
from bench.fed.executors import SerialExecutor
from bench.fed.local_update import Job, run_local_update
from bench.ground.rng import torch_generator
from bench.methods.api import LocalResult
from bench.perf.timing import synchronize


@dataclass(frozen=True)
class LoopVariant:
    """How the bare loop runs its SGD steps: eagerly, with the model compiled (``torch.compile`` of the forward, whose
    backward AOTAutograd compiles with it), with the optimiser's step compiled too (the whole training step), or eagerly
    in ``channels_last`` memory format."""

    name: str
    compile_model: bool = False
    compile_optimizer: bool = False
    channels_last: bool = False


EAGER = LoopVariant("bare loop")
COMPILED_VARIANTS = (LoopVariant("bare loop, compiled model", compile_model=True),
                     LoopVariant("bare loop, compiled step", compile_model=True, compile_optimizer=True),
                     LoopVariant("bare loop, channels_last", channels_last=True),
                     LoopVariant("bare loop, channels_last, compiled step", compile_model=True,
                                 compile_optimizer=True, channels_last=True))


class BareLoop:
    """The same SGD steps on the same batches as a ``fedavg`` round, in plain PyTorch: one model, one state dict, one
    optimiser whose momentum is zeroed for every client (the same steps as a fresh one: 0·m + g = g exactly)."""

    def __init__(self, sim: Simulation, variant: LoopVariant = EAGER):
        self.sim, self.variant = sim, variant
        self.model = sim.fed.new_model()
        if variant.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if variant.compile_model else self.model
        t = sim.fed.method.ctx.train
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=t.lr, momentum=t.momentum,
                                         weight_decay=t.weight_decay)
        self.optimizer_step = torch.compile(self.optimizer.step) if variant.compile_optimizer else self.optimizer.step
        self.global_state = {k: v.clone() for k, v in sim.state.server["model"].items()}
        self.updates: list[tuple[dict[str, torch.Tensor], int]] = []

    def client_update(self, client: int, round: int) -> None:
        fed, t = self.sim.fed, self.sim.fed.method.ctx.train
        data = fed.client_data(client)
        self.model.load_state_dict(self.global_state)
        self.model.train()
        for state in self.optimizer.state.values():
            if state.get("momentum_buffer") is not None:
                state["momentum_buffer"].zero_()
        gen = torch_generator(self.sim.config.seed, "local-update", round, client)
        for xb, yb in data.batches.train_batches(data.train_idx, t.batch_size, gen, epochs=t.local_epochs):
            if self.variant.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            self.optimizer.zero_grad(set_to_none=True)
            loss = sum(F.cross_entropy(z, yb) for z in self.forward(xb))
            loss.backward()
            self.optimizer_step()
        self.updates.append(({k: v.detach().clone() for k, v in self.model.state_dict().items()}, data.num_train))

    def aggregate(self) -> None:
        total = sum(n for _, n in self.updates)
        for key, value in self.global_state.items():
            if value.is_floating_point():
                value.copy_(sum(s[key] * (n / total) for s, n in self.updates))
        self.updates = []

    def round(self, round: int) -> None:
        for c in range(self.sim.fed.num_clients):
            self.client_update(c, round)
        self.aggregate()


HARNESS = "harness"
HARNESS_COMPILED = "harness, run.compile=true"
HARNESS_CHANNELS_LAST = "harness, run.channels_last=true"


class SideBySideExecutor(SerialExecutor):
    """Runs each client's harness update and, right beside it, the same client's update by every loop of ``loops``.

    The order rotates from client to client, so every loop meets the same machine conditions; each loop's seconds are
    accumulated in ``seconds`` (the harness's under :data:`HARNESS`).
    """

    def __init__(self, fed, loops: dict[str, Callable[[Job, int], object]]):
        super().__init__(fed)
        self.loops = loops
        self.seconds = dict.fromkeys([HARNESS, *loops], 0.0)

    def run_round(self, round: int, jobs: Sequence[Job]) -> list[LocalResult]:
        results: list[LocalResult] = []
        names = list(self.seconds)
        for i, job in enumerate(jobs):
            for name in names[i % len(names):] + names[:i % len(names)]:
                synchronize(self.fed.device)
                started = time.perf_counter()
                if name == HARNESS:
                    results.append(run_local_update(self.fed, self.model, round, job))
                else:
                    self.loops[name](job, round)
                synchronize(self.fed.device)
                self.seconds[name] += time.perf_counter() - started
        return results


def bare_loops(sim: Simulation, compiled: bool) -> tuple[dict[str, BareLoop], dict[str, Callable[[Job, int], object]]]:
    """The bare loops (eager, and with ``compiled`` its compiled and ``channels_last`` variants) and every loop's
    per-client update for :class:`SideBySideExecutor` (with ``compiled``, also the harness's with ``run.compile``)."""
    bares = {v.name: BareLoop(sim, v) for v in (EAGER, *(COMPILED_VARIANTS if compiled else ()))}
    loops: dict[str, Callable[[Job, int], object]] = {
        name: (lambda job, round, bare=bare: bare.client_update(job.client, round)) for name, bare in bares.items()}
    if compiled:
        fed = sim.fed
        compiled_model = compile_model(fed.new_model(), fed.device)
        channels_last_model = place_model(fed.new_model(), fed.device, channels_last=True)
        loops[HARNESS_COMPILED] = lambda job, round: run_local_update(fed, compiled_model, round, job)
        loops[HARNESS_CHANNELS_LAST] = lambda job, round: run_local_update(fed, channels_last_model, round, job)
    return bares, loops
