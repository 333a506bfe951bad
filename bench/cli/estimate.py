"""The line printed before a run or a sweep starts: its workload and rough CPU time, in words.

The figures come from :mod:`bench.measure.workload` (sample passes, training MACs, rough seconds on a CPU like the
reference one); this module only words them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.config import ExperimentConfig
from bench.fed.device import resolve_device
from bench.measure.workload import BACKWARD_FACTOR, CPU_IMAGES_PER_S, CPU_REFERENCE, Workload, cpu_seconds, workload

SUBSET_HINT_SAMPLES = 10_000  # above this many samples, the estimate's line names data.max_samples
NO_GPU_TIME = "no time estimate off the CPU (no GPU throughput has been measured)"


@dataclass(frozen=True)
class Estimate:
    """A run's workload and its rough training seconds where it runs on the CPU, or why there is none."""

    load: Workload | None
    on_cpu: bool = True
    seconds: float | None = None
    problem: str | None = None  # why the workload is unknown (the run reports it again when it starts)


def estimated(config: ExperimentConfig) -> Estimate:
    """The estimate of a run. It only informs: a dataset or model that cannot be inspected gives an estimate with its
    ``problem``, and the run (or the sweep's run of it) then fails as it would without one."""
    try:
        load = workload(config)
        on_cpu = resolve_device(config.run.device).type == "cpu"
    except Exception as exc:  # whatever it is, the run meets it again and reports it
        return Estimate(None, problem=f"{type(exc).__name__}: {exc}")
    return Estimate(load, on_cpu, cpu_seconds(load) if on_cpu else None)


def run_estimate(config: ExperimentConfig) -> str:
    """The one line printed before a run starts."""
    estimate = estimated(config)
    if estimate.load is None:
        return f"estimate: none ({estimate.problem})"
    return describe_run(estimate.load, estimate.on_cpu)


def si(value: float, unit: str = "") -> str:
    """``value`` with an SI prefix, three significant digits: ``3.88 T``."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def duration(seconds: float) -> str:
    """``under 1 s``, ``42 s``, ``7 min``, ``2.5 h``."""
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def reference_rate() -> str:
    model, width, dataset = CPU_REFERENCE
    return (f"on a CPU like the 2-core one that trained {model} width {width:g} on {dataset} at "
            f"{CPU_IMAGES_PER_S:,} images/s")


def time_text(load: Workload, on_cpu: bool) -> str:
    """The estimate's words on time: rough CPU seconds, or why there are none."""
    if not on_cpu:
        return NO_GPU_TIME
    return f"roughly {duration(cpu_seconds(load))} of training {reference_rate()} (evaluation not included)"


def describe_run(load: Workload, on_cpu: bool) -> str:
    """The one-line estimate of a run (with its time where it runs ``on_cpu``)."""
    used = (f"all {load.samples:,} samples" if load.samples == load.dataset_samples
            else f"{load.samples:,} of {load.dataset_samples:,} samples (data.max_samples)")
    share = f", {load.participation:.0%} of them a round" if load.participation < 1 else ""
    hint = ("; data.max_samples=N trains on a class-balanced subset"
            if load.samples == load.dataset_samples and load.samples > SUBSET_HINT_SAMPLES else "")
    return (f"estimate: {load.dataset}, {used} split among {load.clients} clients ({load.train_fraction:.0%} "
            f"train{share}) × {load.epochs_per_round:g} epoch{'' if load.epochs_per_round == 1 else 's'} a round × "
            f"{load.rounds} round{'' if load.rounds == 1 else 's'} = {load.sample_passes:,.0f} "
            f"sample passes × {BACKWARD_FACTOR} × {si(load.forward_macs, 'MAC')} = {si(load.training_macs, 'MAC')}; "
            f"{time_text(load, on_cpu)}{hint}")


def describe_sweep(loads: Sequence[Workload], on_cpu: Sequence[bool]) -> str:
    """The one-line estimate of a sweep's runs (``on_cpu``: whether each runs on the CPU): their total, and the
    costliest."""
    passes = sum(w.sample_passes for w in loads)
    macs = sum(w.training_macs for w in loads)
    seconds = [cpu_seconds(w) if cpu else None for w, cpu in zip(loads, on_cpu, strict=True)]
    timed = [s for s in seconds if s is not None]
    rate = f"{reference_rate()}, one run at a time (evaluation not included)"
    if len(timed) == len(loads):
        time = f"roughly {duration(sum(timed))} of training {rate}"
    elif timed:
        time = (f"roughly {duration(sum(timed))} of training for its {len(timed)} runs on the CPU {rate}; no time "
                "estimate off the CPU")
    else:
        time = NO_GPU_TIME
    heaviest = max(loads, key=lambda w: w.training_macs)
    return (f"estimate: {len(loads)} runs, {passes:,.0f} sample passes = {si(macs, 'MAC')} of training (largest run "
            f"{si(heaviest.training_macs, 'MAC')}, methods weighted by their epochs per round); {time}")
