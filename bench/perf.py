"""Performance benchmark: the harness measured side by side against the bare PyTorch loop.

* **round overhead** — one ``fedavg`` round (10 clients, 1 local epoch, ``conv3`` on ``fmnist``) through the engine,
  against a bare loop that runs the same SGD steps on the same batches with the same model (``load_state_dict``,
  SGD, sum of the exits' cross-entropy, a sample-weighted average), each client's two updates run side by side —
  target ≤ 1.05;
* **evaluation** — one forward pass per client plus a 100-threshold dynamic-inference sweep, against the same with
  one threshold — target ≤ 1.05;
* **memory** — RSS growth from 100 to 1,000 clients of ``fedper``, per client, against the bytes of one client's
  personal state — target ≤ 1.5 — for both the peak during the run and what is held after it (each size measured in
  fresh subprocesses; see :func:`memory_probe` and :func:`measure_memory`);
* **throughput** — training images per second of the harness and of the bare loop;
* **compiled** — the same round, side by side, by the harness with ``run.compile=true`` and with
  ``run.channels_last=true``, and by four variants of the bare loop: the model compiled (``torch.compile``;
  AOTAutograd compiles its backward with it), the whole training step compiled (the optimiser's step too), eager in
  ``channels_last`` memory format, and that compiled. The other figures run in the contiguous format
  (``run.channels_last=false``), so harness and bare loop compare like with like. Each against its eager twin:
  seconds a round, the speed-up, the first round's extra time (compiling) and the rounds the speed-up needs to repay
  it (``compiled=False``, ``cafebench perf --no-compile``, leaves them out).

``device`` (``cafebench perf --device cuda``) runs the round and evaluation figures on that device, with two more
figures on a GPU: how busy it was while the rounds trained (the mean of ``torch.cuda.utilization`` sampled every
50 ms; it needs ``pynvml``) — target ≥ 80% for ResNet-18 with batch 64 — and the peak GPU memory allocated. The
memory probe measures host RSS and runs with ``device`` ``cpu`` only.

Every figure is the median of ``repeats`` measurements.
"""

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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import ExperimentConfig, load_config
from bench.data.batching import BatchMaker
from bench.data.dataset import Dataset
from bench.data.sources import load_dataset
from bench.fed.client_states import flatten
from bench.fed.device import compile_model, device_name, place_model, resolve_device
from bench.fed.engine import Simulation
from bench.fed.executors import SerialExecutor
from bench.fed.federation import build_federation, make_model
from bench.fed.local_update import Job, run_local_update
from bench.ground.rng import torch_generator
from bench.measure.accuracy import exit_records
from bench.measure.dynamic import dynamic_curve
from bench.methods.api import LocalResult
from bench.methods.model_state import load_state

MEMORY_SAMPLES_PER_CLIENT = 70
MEMORY_TRAINED_CLIENTS = 10
MEMORY_BATCH_SIZE = 8  # every client has more training samples: the same largest batch at every size
ROUND_CONFIG = ["data.dataset=fmnist", "data.clients=10", "data.alpha=0.3", "model.name=conv3",
                "method.name=fedavg", "train.local_epochs=1", "train.batch_size=64", "train.rounds=1000",
                "eval.every=1000", "run.channels_last=false"]  # the loops' own variants set the memory format


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


@dataclass
class PerfReport:
    device: str
    device_name: str
    round_harness_s: float
    round_bare_s: float
    round_overhead: float
    harness_images_per_s: float
    bare_images_per_s: float
    eval_100_s: float
    eval_1_s: float
    eval_ratio: float
    memory: MemoryFigures | None
    memory_ratio: float | None  # MemoryFigures.ratio
    gpu_busy: float | None = None  # mean GPU utilisation (0..1) while the rounds trained
    peak_gpu_bytes: int | None = None  # peak GPU memory allocated by the rounds and evaluations
    loops: dict[str, float] = dataclasses.field(default_factory=dict)  # median round seconds of every loop
    first_round: dict[str, float] = dataclasses.field(default_factory=dict)  # first-round seconds of every loop

    def compile_lines(self) -> list[str]:
        """Each compiled or ``channels_last`` loop against its eager twin: round seconds, speed-up, the first round's
        extra time (compiling) and the rounds it takes the speed-up to repay it."""
        out = []
        for name, seconds in self.loops.items():
            if name in (HARNESS, EAGER.name):
                continue
            twin = HARNESS if name.startswith(HARNESS) else EAGER.name
            saving = self.loops[twin] - seconds
            extra = (self.first_round[name] - seconds) - (self.first_round[twin] - self.loops[twin])
            repaid = f"repaid after {extra / saving:,.0f} rounds" if saving > 0 else "never repaid"
            out.append(f"  {name:<27} {seconds:6.2f} s a round, {self.loops[twin] / seconds:.3f}x {twin}; first "
                       f"round +{extra:.1f} s: {repaid}")
        return out

    def lines(self) -> list[str]:
        out = [
            f"device           {self.device} ({self.device_name})",
            f"round overhead   {self.round_overhead:.3f}  (harness {self.round_harness_s:.2f} s, bare loop "
            f"{self.round_bare_s:.2f} s; target <= 1.05)",
            f"throughput       harness {self.harness_images_per_s:,.0f} img/s, bare loop "
            f"{self.bare_images_per_s:,.0f} img/s",
            f"evaluation       {self.eval_ratio:.3f}  (100 thresholds {self.eval_100_s:.2f} s, 1 threshold "
            f"{self.eval_1_s:.2f} s; target <= 1.05)",
        ]
        if len(self.loops) > 2:
            out += ["compiled         (each loop against its eager twin, side by side)", *self.compile_lines()]
        if self.peak_gpu_bytes is not None:
            busy = "unknown (needs pynvml)" if self.gpu_busy is None else f"{self.gpu_busy:.0%}"
            out.append(f"GPU              busy {busy} while training (target >= 80%), peak memory "
                       f"{self.peak_gpu_bytes / 2**20:,.0f} MiB")
        if self.memory is not None:
            m = self.memory
            out.append(f"memory           {self.memory_ratio:.2f}  (per client: {m.held_per_client:,.0f} B of RSS held "
                       f"after the run, {m.peak_per_client:,.0f} B of peak RSS growth")
            out.append(f"                 (noise between identical runs {m.peak_spread:,.0f} B), against "
                       f"{m.personal_state:,} B of personal state; target <= 1.5)")
        return out


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work (None: the CPU's, none), so that a clock read after it counts that work."""
    if device is None:
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median_time(fn: Callable[[], object], repeats: int, device: torch.device | None = None) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class UtilizationSampler:
    """Samples a CUDA device's utilisation (percent of time a kernel ran, from NVML) in a background thread."""

    def __init__(self, device: torch.device, interval_s: float = 0.05):
        self.device, self.interval_s = device, interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(torch.cuda.utilization(self.device) / 100)

    def __enter__(self) -> UtilizationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def can_sample_utilization(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        torch.cuda.utilization(device)
    except Exception:  # pynvml missing or NVML unavailable
        return False
    return True


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
    code = f"import json; from bench.perf import memory_probe; print(json.dumps(memory_probe({clients}, {method!r})))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode:
        raise RuntimeError(f"memory probe with {clients} clients failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def report_json(report: PerfReport) -> str:
    return json.dumps(asdict(report), indent=2)
