"""Dataset sources: each loader finds (or builds) one dataset and returns it whole as a :class:`Dataset`.

Official train and test parts are pooled; clients later draw their own train/val/test splits.
File-based datasets are searched in :func:`data_roots` and then in their system directories;
``fmnist``, ``cifar10`` and ``cifar100`` are downloaded through torchvision when they are found
nowhere, unless the option ``download=False`` is given or ``CAFEBENCH_NO_DOWNLOAD=1`` is set.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from bench.data.dataset import Dataset
from bench.data.sources.agnews import load_agnews
from bench.data.sources.bundled import load_digits, load_mnist5k
from bench.data.sources.cifar import load_cifar10, load_cifar100
from bench.data.sources.errors import CorruptDataError, DataNotFoundError
from bench.data.sources.fmnist import load_fmnist
from bench.data.sources.roots import data_roots
from bench.data.sources.synthetic import load_synthetic
from bench.data.sources.tinyimagenet import load_tinyimagenet

DATASETS: dict[str, Callable[..., Dataset]] = {
    "fmnist": load_fmnist,
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "tinyimagenet": load_tinyimagenet,
    "agnews": load_agnews,
    "synthetic": load_synthetic,
}


def load_dataset(name: str, root: str | os.PathLike | None = None, **options: object) -> Dataset:
    """Load the registered dataset ``name``; ``root`` is searched first, ``options`` go to its loader.

    Raises:
        ValueError: unknown dataset name, or an option the loader does not take.
        DataNotFoundError: the data is nowhere to be found (the message says where it looked).
        CorruptDataError: a data file is malformed (the message names it).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    loader = DATASETS[name]
    parameters = inspect.signature(loader).parameters
    accepted = set(parameters) - {"root"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"dataset {name!r} takes no option {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(accepted)) or 'none'}"
        )
    if "root" in parameters:
        options["root"] = root
    return loader(**options)


__all__ = ["DATASETS", "CorruptDataError", "DataNotFoundError", "data_roots", "load_dataset"]
