"""MLflow's own system metrics (``system/cpu_utilization_percentage``, ``system/gpu_0_utilization_percentage``,
``system/gpu_0_memory_usage_megabytes``, RAM, disk, network) logged beside a run while it runs.

``run.system_metrics`` switches them on (default: on when the run's device is a GPU). MLflow samples them with
``psutil`` and, for NVIDIA GPUs, ``pynvml`` (the ``nvidia-ml-py`` package); both come with ``cafebench[gpu]``.
Without ``psutil`` no system metrics are logged, and without ``pynvml`` no GPU metrics: one warning says so.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from bench.fed.device import is_gpu

log = logging.getLogger(__name__)
_warned: set[str] = set()


def wants_system_metrics(setting: bool | None, device: torch.device) -> bool:
    """``run.system_metrics``, where unset (None) on for GPU devices and off on the CPU."""
    return is_gpu(device) if setting is None else setting


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def start_system_metrics(run_id: str, tracking_uri: str, device: torch.device, resume: bool) -> Any | None:
    """A started MLflow ``SystemMetricsMonitor`` for the run (stop it with ``finish()``), or None where ``psutil``
    is missing."""
    if importlib.util.find_spec("psutil") is None:
        _warn_once("psutil", "run.system_metrics: MLflow needs psutil to sample system metrics, and it is not "
                             "installed (pip install 'cafebench[gpu]'); no system metrics are logged")
        return None
    if device.type == "cuda" and importlib.util.find_spec("pynvml") is None:
        _warn_once("pynvml", "run.system_metrics: GPU utilisation and memory need pynvml (pip install nvidia-ml-py "
                             "or 'cafebench[gpu]'); logging CPU, RAM, disk and network only")
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, resume_logging=resume, tracking_uri=tracking_uri)
    monitor.start()
    return monitor
