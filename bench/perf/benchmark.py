"""``cafebench perf``: every figure (see :mod:`bench.perf`) — the round and evaluation side by side, the memory
probe — gathered in a :class:`~bench.perf.report.PerfReport`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bench.config import ExperimentConfig, load_config
from bench.fed.device import device_name, resolve_device
from bench.fed.engine import Simulation
from bench.measure.accuracy import exit_records
from bench.measure.dynamic import dynamic_curve
from bench.methods.model_state import load_state
from bench.perf.loops import EAGER, HARNESS, SideBySideExecutor, bare_loops
from bench.perf.memory import measure_memory
from bench.perf.report import PerfReport
from bench.perf.timing import UtilizationSampler, can_sample_utilization, median_time, synchronize

ROUND_CONFIG = ["data.dataset=fmnist", "data.clients=10", "data.alpha=0.3", "model.name=conv3",
                "method.name=fedavg", "train.local_epochs=1", "train.batch_size=64", "train.rounds=1000",
                "eval.every=1000", "run.channels_last=false"]  # the loops' own variants set the memory format


@dataclass
class RoundFigures:
    seconds: dict[str, float]  # median seconds of a round, per loop (HARNESS, the bare loops, HARNESS_COMPILED)
    first_round: dict[str, float]  # seconds of the first round, per loop: compiling happens there
    images: int  # images a round trains on
    gpu_busy: float | None  # mean GPU utilisation during the timed rounds (CUDA with pynvml only)


def measure_round(config: ExperimentConfig, repeats: int, compiled: bool = True) -> RoundFigures:
    """Every loop's round on the config's device, each client's updates side by side (the device is synchronised
    around every timed stretch); the first round, where compiling happens, is timed apart."""
    sim = Simulation(config)
    device = sim.device
    bares, loops = bare_loops(sim, compiled)
    executor = SideBySideExecutor(sim.fed, loops)
    rounds: dict[str, list[float]] = {name: [] for name in executor.seconds}
    first: dict[str, float] = {}
    sampler = UtilizationSampler(device) if can_sample_utilization(device) else None
    for r in range(repeats + 1):
        if r == 1 and sampler is not None:
            sampler.__enter__()
        executor.seconds = dict.fromkeys(executor.seconds, 0.0)
        sim.run_round(executor, r)
        for name, bare in bares.items():
            started = time.perf_counter()
            bare.aggregate()
            synchronize(device)
            executor.seconds[name] += time.perf_counter() - started
        for name, seconds in executor.seconds.items():
            if r:
                rounds[name].append(seconds)
            else:
                first[name] = seconds
    if sampler is not None:
        sampler.__exit__()
    images = sum(sim.fed.method.ctx.client_train_sizes) * config.train.local_epochs
    return RoundFigures({name: statistics.median(times) for name, times in rounds.items()}, first, images,
                        sampler.mean if sampler is not None else None)


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
        t100.append(median_time(lambda: evaluate(many), 1, sim.device))
        t1.append(median_time(lambda: evaluate([0.6]), 1, sim.device))
    return statistics.median(t100), statistics.median(t1)


def run_perf(repeats: int = 3, memory: bool = True, memory_method: str = "fedper", device: str = "cpu",
             overrides: Sequence[str] = (), compiled: bool = True) -> PerfReport:
    """Every figure on ``device`` (the memory probe: on the CPU only); ``overrides`` change the round's config
    (e.g. ``model.name=resnet18 data.dataset=cifar10`` for the GPU target); ``compiled``: the compiled and
    ``channels_last`` loops beside the eager ones."""
    resolved = resolve_device(device)
    memory = memory and resolved.type == "cpu"  # the probe measures the host RSS of CPU runs
    torch.set_num_threads(2)
    config = load_config("demo", [*ROUND_CONFIG, f"run.device={device}", *overrides])
    if resolved.type == "cuda":
        torch.cuda.reset_peak_memory_stats(resolved)
    rounds = measure_round(config, repeats, compiled)
    eval_100, eval_1 = measure_evaluation(config, repeats)
    peak = torch.cuda.max_memory_allocated(resolved) if resolved.type == "cuda" else None
    figures = measure_memory(memory_method, repeats) if memory else None
    ratio = figures.ratio if figures else None
    harness_s, bare_s = rounds.seconds[HARNESS], rounds.seconds[EAGER.name]
    return PerfReport(str(resolved), device_name(resolved), harness_s, bare_s, harness_s / bare_s,
                      rounds.images / harness_s, rounds.images / bare_s, eval_100, eval_1, eval_100 / eval_1, figures,
                      ratio, rounds.gpu_busy, peak, rounds.seconds, rounds.first_round)
