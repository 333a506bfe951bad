"""The memory probe of ``cafebench perf``: RSS growth per client from 100 to 1,000 clients, against the bytes of one
client's personal state (each size measured in fresh interpreters)."""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.config import ExperimentConfig, load_config
from bench.data.batching import BatchMaker
from bench.data.dataset import Dataset
from bench.data.sources import load_dataset
from bench.fed.client_states import flatten
from bench.fed.engine import Simulation
from bench.fed.federation import build_federation, make_model

MEMORY_SAMPLES_PER_CLIENT = 70
MEMORY_TRAINED_CLIENTS = 10
MEMORY_BATCH_SIZE = 8  # every client has more training samples: the same largest batch at every size


@dataclass
class MemoryFigures:
    """Bytes per client from ``small`` to ``large`` clients (medians of the repeated probes)."""

    held_per_client: float  # RSS still held after the run, free heap handed back
    peak_per_client: float  # peak RSS during the run, with glibc's mmap threshold fixed (see measure_memory)
    peak_spread: float  # max - min of the per-size peak growths, per client: the peak's noise
    personal_state: int

    @property
    def ratio(self) -> float:
        """The larger of the held and peak growth per client, against one client's personal state."""
        return max(self.held_per_client, self.peak_per_client) / self.personal_state


def warm_up(config: ExperimentConfig, dataset: Dataset) -> None:
    """One SGD step and one evaluation batch of the configured model, so first-use costs fall before the probe.

    The largest of them: the first ``torch.optim`` optimizer imports ``torch._dynamo`` (over 100 MB of RSS).
    """
    model = make_model(config, dataset)
    batches = BatchMaker(dataset)
    x, y = next(batches.eval_batches(torch.arange(config.train.batch_size), config.train.batch_size))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.train.lr, momentum=config.train.momentum)
    sum(F.cross_entropy(z, y) for z in model(x)).backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        model(next(batches.eval_batches(torch.arange(config.eval.batch_size), config.eval.batch_size))[0])


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark of this process (Linux) and return the current RSS in bytes.

    Free heap memory is first handed back to the kernel (glibc's ``malloc_trim``): left in the process, it would
    count in the starting RSS and hide the allocations that reuse it.
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError as err:
        raise RuntimeError("the memory probe needs Linux's /proc/self/clear_refs to reset the peak RSS; "
                           "run `cafebench perf --no-memory` elsewhere") from err
    return _proc_status("VmRSS")


def peak_rss() -> int:
    """Peak RSS in bytes since the last :func:`reset_peak_rss`."""
    return _proc_status("VmHWM")


def nested_nbytes(state: object) -> int:
    """Bytes of every tensor in a nested state (dicts, lists and tuples of tensors), walked as ClientStates packs it."""
    _, groups, _ = flatten(state)
    return sum(t.numel() * t.element_size() for group in groups for t in group)


def memory_probe(clients: int, method: str) -> dict[str, float]:
    """RSS growth of a one-round run of ``clients`` clients (run in a fresh interpreter by :func:`measure_memory`).

    Every client holds :data:`MEMORY_SAMPLES_PER_CLIENT` Fashion-MNIST samples and :data:`MEMORY_TRAINED_CLIENTS`
    of them train in batches of :data:`MEMORY_BATCH_SIZE`, whatever ``clients`` is, so the largest batch (and its
    transient memory) is the same at every size and the growth between sizes is what the harness keeps per client:
    partition indices, personal state, evaluation records. Growth counts from the memory held once the dataset is
    loaded and the kernels are warmed up by one training step and one evaluation batch (one-off costs that do not
    depend on ``clients``).
    Two growths: the peak during the run, and what the process still holds after it, free heap handed back.
    """
    dataset = load_dataset("fmnist")
    n = clients * MEMORY_SAMPLES_PER_CLIENT
    if n > len(dataset.y):
        raise ValueError(f"{clients} clients × {MEMORY_SAMPLES_PER_CLIENT} samples exceed Fashion-MNIST's "
                         f"{len(dataset.y)} samples")
    dataset = dataclasses.replace(dataset, x=dataset.x[:n], y=dataset.y[:n])
    with tempfile.TemporaryDirectory() as cache_dir:
        config = load_config("demo", ["data.dataset=fmnist", f"data.clients={clients}", "data.alpha=1.0",
                                      "data.min_samples=20", f"method.name={method}", "model.name=conv3",
                                      f"train.batch_size={MEMORY_BATCH_SIZE}", "train.rounds=1",
                                      f"train.participation={MEMORY_TRAINED_CLIENTS / clients}",
                                      f"run.cache_dir={cache_dir}", "run.device=cpu"])
        warm_up(config, dataset)
        start = reset_peak_rss()
        sim = Simulation(config, fed=build_federation(config, dataset))
        sim.run(measure=False)  # the round loop alone: the end-of-run measures build per-client tables of their own
        peak = peak_rss() - start
        return {"peak_rss_growth": peak, "held_rss_growth": reset_peak_rss() - start,
                "personal_bytes": nested_nbytes(sim.state.clients[0])}


# glibc's malloc keeps freed heap for reuse, up to a threshold it raises (to tens of MB) as large blocks come and go,
# so how much free heap counts in the peak RSS varies by megabytes between identical runs. A fixed mmap threshold
# (which also fixes the trim threshold) maps every block of 128 KiB or more on its own and unmaps it when freed.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure_memory(method: str, repeats: int, small: int = 100, large: int = 1000) -> MemoryFigures:
    """Per-client RSS growth from ``small`` to ``large`` clients and the bytes of one client's personal state.

    Every repeat runs :func:`memory_probe` at each size in fresh interpreters twice: with the default allocator for
    the RSS held after the run, and with :data:`FIXED_MMAP_THRESHOLD` for the peak RSS, which otherwise varies with
    the free heap glibc happens to keep.
    """
    held: dict[int, list[dict[str, float]]] = {small: [], large: []}
    peak: dict[int, list[dict[str, float]]] = {small: [], large: []}
    for _ in range(repeats):
        for n in (small, large):
            held[n].append(_run_probe(n, method, {}))
            peak[n].append(_run_probe(n, method, FIXED_MMAP_THRESHOLD))

    def per_client(results: dict[int, list[dict[str, float]]], key: str) -> float:
        medians = [statistics.median(r[key] for r in results[n]) for n in (small, large)]
        return (medians[1] - medians[0]) / (large - small)

    spread = max(max(r["peak_rss_growth"] for r in peak[n]) - min(r["peak_rss_growth"] for r in peak[n])
                 for n in (small, large)) / (large - small)
    return MemoryFigures(per_client(held, "held_rss_growth"), per_client(peak, "peak_rss_growth"), spread,
                         int(held[small][0]["personal_bytes"]))


def _run_probe(clients: int, method: str, env: dict[str, str]) -> dict[str, float]:
    code = ("import json; from bench.perf.memory import memory_probe; "
            f"print(json.dumps(memory_probe({clients}, {method!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode:
        raise RuntimeError(f"memory probe with {clients} clients failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
