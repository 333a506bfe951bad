"""Performance benchmark: the harness measured side by side against the bare PyTorch loop.

* **round overhead** — one ``fedavg`` round (10 clients, 1 local epoch, ``conv3`` on ``fmnist``) through the engine,
  against a bare loop that runs the same SGD steps on the same batches with the same model (``load_state_dict``,
  SGD, sum of the exits' cross-entropy, a sample-weighted average) — target ≤ 1.05;
* **evaluation** — one forward pass per client plus a 100-threshold dynamic-inference sweep, against the same with
  one threshold — target ≤ 1.05;
* **memory** — peak RSS growth from 100 to 1,000 clients of ``fedper``, per client, against the bytes of one client's
  personal state — target ≤ 1.5 (each size measured in a fresh subprocess);
* **throughput** — training images per second of the harness and of the bare loop.

Timings alternate harness and bare runs and take the median of the repetitions.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import ExperimentConfig, load_config
from bench.fed.engine import Simulation
from bench.fed.executors import SerialExecutor
from bench.fed.rng import torch_generator
from bench.fed.tensor_ops import state_nbytes
from bench.measure.accuracy import exit_records
from bench.measure.dynamic import dynamic_curve
from bench.methods.api import load_state

ROUND_CONFIG = ["data.dataset=fmnist", "data.clients=10", "data.alpha=0.3", "model.name=conv3",
                "method.name=fedavg", "train.local_epochs=1", "train.batch_size=64", "train.rounds=1000",
                "eval.every=1000"]


@dataclass
class PerfReport:
    round_harness_s: float
    round_bare_s: float
    round_overhead: float
    harness_images_per_s: float
    bare_images_per_s: float
    eval_100_s: float
    eval_1_s: float
    eval_ratio: float
    memory_per_client_bytes: float | None
    personal_state_bytes: int | None
    memory_ratio: float | None

    def lines(self) -> list[str]:
        out = [
            f"round overhead   {self.round_overhead:.3f}  (harness {self.round_harness_s:.2f} s, bare loop "
            f"{self.round_bare_s:.2f} s; target <= 1.05)",
            f"throughput       harness {self.harness_images_per_s:,.0f} img/s, bare loop "
            f"{self.bare_images_per_s:,.0f} img/s",
            f"evaluation       {self.eval_ratio:.3f}  (100 thresholds {self.eval_100_s:.2f} s, 1 threshold "
            f"{self.eval_1_s:.2f} s; target <= 1.05)",
        ]
        if self.memory_ratio is not None:
            out.append(f"memory           {self.memory_ratio:.2f}  ({self.memory_per_client_bytes:,.0f} B of peak "
                       f"RSS per client vs {self.personal_state_bytes:,} B of personal state; target <= 1.5)")
        return out


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bare_round(sim: Simulation, model: torch.nn.Module, global_state: dict[str, torch.Tensor], round: int) -> None:
    """The same SGD steps on the same batches as a ``fedavg`` round, in plain PyTorch."""
    fed, t = sim.fed, sim.fed.method.ctx.train
    states, sizes = [], []
    for c in range(fed.num_clients):
        data = fed.client_data(c)
        model.load_state_dict(global_state)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        gen = torch_generator(sim.config.seed, "local-update", round, c)
        for xb, yb in data.batches.train_batches(data.train_idx, t.batch_size, gen, epochs=t.local_epochs):
            opt.zero_grad(set_to_none=True)
            loss = sum(F.cross_entropy(z, yb) for z in model(xb))
            loss.backward()
            opt.step()
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        sizes.append(data.num_train)
    total = sum(sizes)
    for key, value in global_state.items():
        if value.is_floating_point():
            value.copy_(sum(s[key] * (n / total) for s, n in zip(states, sizes, strict=True)))


def measure_round(config: ExperimentConfig, repeats: int) -> tuple[float, float, int]:
    sim = Simulation(config)
    executor = SerialExecutor(sim.fed)
    bare_model = sim.fed.new_model()
    bare_state = {k: v.clone() for k, v in sim.state.server["model"].items()}
    harness_times, bare_times = [], []
    for r in range(repeats + 1):  # the first pair warms up
        started = time.perf_counter()
        sim.run_round(executor, r)
        harness = time.perf_counter() - started
        started = time.perf_counter()
        bare_round(sim, bare_model, bare_state, r)
        bare = time.perf_counter() - started
        if r:
            harness_times.append(harness)
            bare_times.append(bare)
    images = sum(sim.fed.client_data(c).num_train for c in range(sim.fed.num_clients)) * config.train.local_epochs
    return statistics.median(harness_times), statistics.median(bare_times), images


def measure_evaluation(config: ExperimentConfig, repeats: int) -> tuple[float, float]:
    sim = Simulation(config)
    fed, model = sim.fed, sim.eval_model
    load_state(model, sim.state.server["model"])
    exit_macs = [1.0, 2.0, 3.0]
    many = np.linspace(0.0, 1.0, 100)

    def evaluate(thresholds) -> None:
        for c in range(fed.num_clients):
            data = fed.client_data(c)
            dynamic_curve(exit_records(model, fed.batches, data.test_idx, config.eval.batch_size), exit_macs,
                          thresholds)

    evaluate([0.6])
    t100, t1 = [], []
    for _ in range(repeats):
        t100.append(median_time(lambda: evaluate(many), 1))
        t1.append(median_time(lambda: evaluate([0.6]), 1))
    return statistics.median(t100), statistics.median(t1)


def memory_probe(clients: int, method: str) -> dict[str, float]:
    """Peak RSS of a 1-round run with ``clients`` clients (run in a fresh interpreter by :func:`measure_memory`)."""
    import resource

    config = load_config("demo", ["data.dataset=fmnist", f"data.clients={clients}", "data.alpha=1.0",
                                  "data.min_samples=20", f"method.name={method}", "model.name=conv3",
                                  "train.rounds=1", "train.participation=0.01", "eval.every=1000"])
    sim = Simulation(config)
    sim.run()
    return {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "personal_bytes": nested_nbytes(sim.state.clients[0])}


def nested_nbytes(state: object) -> int:
    """Bytes of every tensor in a nested state (dicts and lists of tensors)."""
    if isinstance(state, torch.Tensor):
        return state_nbytes({"t": state})
    if isinstance(state, dict):
        return sum(nested_nbytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(nested_nbytes(v) for v in state)
    return 0


def measure_memory(method: str, small: int = 100, large: int = 1000) -> tuple[float, int]:
    results = []
    for n in (small, large):
        code = f"import json; from bench.perf import memory_probe; print(json.dumps(memory_probe({n}, {method!r})))"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    per_client = (results[1]["peak_rss"] - results[0]["peak_rss"]) / (large - small)
    return per_client, int(results[0]["personal_bytes"])


def run_perf(repeats: int = 3, memory: bool = True, memory_method: str = "fedper") -> PerfReport:
    torch.set_num_threads(2)
    config = load_config("demo", ROUND_CONFIG)
    harness, bare, images = measure_round(config, repeats)
    eval_100, eval_1 = measure_evaluation(config, repeats)
    mem_per_client = personal = ratio = None
    if memory:
        mem_per_client, personal = measure_memory(memory_method)
        ratio = mem_per_client / personal
    return PerfReport(harness, bare, harness / bare, images / harness, images / bare, eval_100, eval_1,
                      eval_100 / eval_1, mem_per_client, personal, ratio)


def report_json(report: PerfReport) -> str:
    return json.dumps(asdict(report), indent=2)
