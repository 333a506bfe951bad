"""Setting a process up to compute a federation: the one set-up of the engine's own process and of every executor's
workers (local processes, Ray actors), so that each computes alike and its results are bitwise the same."""

from __future__ import annotations

import torch

from bench.config import ExperimentConfig
from bench.data.dataset import Dataset
from bench.fed.device import resolve_device, use_device
from bench.fed.federation import Federation, build_federation


def federation_in_this_process(config: ExperimentConfig, device: str, threads: int | None = None,
                               dataset: Dataset | None = None) -> Federation:
    """``config``'s federation built on ``device`` (a ``run.device`` spec), made this process's current device with
    the config's deterministic mode, after setting ``threads`` torch threads when given (the engine sets its own when
    its run starts); ``dataset`` when the data is already loaded (a Ray actor gets it from the object store)."""
    if threads is not None:
        torch.set_num_threads(threads)
    resolved = resolve_device(device)
    use_device(resolved, config.run.deterministic)
    return build_federation(config, dataset, resolved)
