"""The device a run computes on (``run.device``), how models are prepared for it, and GPUs shared among workers.

``auto`` resolves to ``cuda`` when CUDA is available, then ``mps``, else ``cpu``. A device that does not exist is a
:class:`DeviceError` (a :class:`~bench.config.ConfigError`, one line) raised before anything is created.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.config import ConfigError

log = logging.getLogger(__name__)

# cuBLAS needs a fixed workspace to give the same results run after run (CUDA's "deterministic" requirement).
CUBLAS_WORKSPACE = ":4096:8"


class DeviceError(ConfigError):
    """``run.device`` names a device this machine does not have."""


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(spec: str) -> torch.device:
    """The device ``spec`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) names on this machine."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if mps_available() else torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"run.device={spec}: this machine has no CUDA device (torch {torch.__version__}, "
                              f"CUDA build {torch.version.cuda or 'none'}); use run.device=cpu or auto")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= count:
            raise DeviceError(f"run.device={spec}: this machine has {count} CUDA device(s), cuda:0 to "
                              f"cuda:{count - 1}")
        return torch.device("cuda", index)
    if device.type == "mps" and not mps_available():
        raise DeviceError(f"run.device={spec}: MPS (Apple GPU) is not available here; use run.device=cpu or auto")
    if device.type not in ("cpu", "mps"):
        raise DeviceError(f"run.device={spec}: unsupported device type {device.type!r}; use cpu, cuda or mps")
    return device


def device_name(device: torch.device) -> str:
    """The accelerator's name (``NVIDIA H100 80GB HBM3``), or ``cpu`` / ``mps``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return "cpu"


def is_gpu(device: torch.device) -> bool:
    return device.type in ("cuda", "mps")


def use_device(device: torch.device, deterministic: bool) -> None:
    """Make ``device`` this process's current device and set deterministic mode on or off.

    Deterministic mode: :func:`torch.use_deterministic_algorithms` (an operation without a deterministic kernel
    raises), cuDNN's benchmark off, and cuBLAS's fixed workspace (set before CUDA's first cuBLAS call).
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic)


def worker_devices(spec: str, workers: int, gpu_count: int) -> list[str]:
    """The ``run.device`` of each of ``workers`` workers on a machine with ``gpu_count`` GPUs.

    ``auto`` and ``cuda`` (no index) spread the workers over the GPUs round-robin (``cuda:0``, ``cuda:1``, ...,
    back to ``cuda:0`` when there are more workers than GPUs); any other spec (``cpu``, ``cuda:N``, ``mps``, or
    ``auto`` without a GPU) is every worker's.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if spec in ("auto", "cuda") and gpu_count > 0:
        return [f"cuda:{i % gpu_count}" for i in range(workers)]
    return [spec] * workers


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def uses_channels_last(model: nn.Module, device: torch.device, channels_last: bool | None) -> bool:
    """Whether ``model`` runs in ``channels_last`` memory format: ``run.channels_last``, by default (None) for
    convolutional models on CPUs and CUDA GPUs, where it trains faster (1.48x on a 2-core CPU, ``cafebench perf``)."""
    if not has_convolutions(model):
        return False
    return device.type in ("cpu", "cuda") if channels_last is None else channels_last


def place_model(model: nn.Module, device: torch.device, channels_last: bool | None = None) -> nn.Module:
    """``model`` on ``device``, in ``channels_last`` memory format where :func:`uses_channels_last` says so."""
    model = model.to(device)
    if uses_channels_last(model, device, channels_last):
        model = model.to(memory_format=torch.channels_last)
    return model


class CompiledForward:
    """A module's forward compiled with :func:`torch.compile`, run eagerly (one warning) if compiling fails.

    Compilation happens at the first call, so that is where a failure shows (no C compiler, an unsupported
    operation); from then on the module runs its eager forward.
    """

    def __init__(self, forward: Callable[..., Any], device: torch.device):
        self.eager = forward
        # On CUDA the overhead-reducing mode (CUDA graphs): small models are bound by kernel launches.
        mode = "reduce-overhead" if device.type == "cuda" else None
        self.compiled: Callable[..., Any] | None = torch.compile(forward, mode=mode)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # compilation errors come in many types (backend, dynamo, C compiler)
                log.warning("run.compile: torch.compile failed (%s: %s); running the model eagerly",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self.compiled = None
        return self.eager(*args, **kwargs)


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with its forward compiled (falling back to eager, see :class:`CompiledForward`); same parameters,
    same state dict."""
    model.forward = CompiledForward(model.forward, device)
    return model


def out_of_memory_message(device: torch.device, state_device: str, batch_size: int) -> str:
    return (f"out of memory on {device} ({device_name(device)}): lower train.batch_size (now {batch_size}) or keep "
            f"clients' personal states in host memory with run.state_device=pinned (now {state_device})")
