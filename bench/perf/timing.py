"""Clocks that count a device's queued work, and a CUDA device's utilisation sampled while it trains."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import torch


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
