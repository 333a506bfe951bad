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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class DatasetShape:
    """What a model needs to know of a dataset without loading it."""

    input_shape: tuple[int, ...]
    num_classes: int
    vocab_size: int = 0


STANDARD_SHAPES: dict[str, DatasetShape] = {
    "fmnist": DatasetShape((1, 28, 28), 10),
    "mnist5k": DatasetShape((1, 28, 28), 10),
    "digits": DatasetShape((1, 8, 8), 10),
    "cifar10": DatasetShape((3, 32, 32), 10),
    "cifar100": DatasetShape((3, 32, 32), 100),
    "tinyimagenet": DatasetShape((3, 64, 64), 200),
    "agnews": DatasetShape((64,), 4, 20000),
}


def dataset_shape(name: str, root: str | os.PathLike | None = None, **options: object) -> DatasetShape:
    """Input shape, classes and vocabulary of a dataset: known for the standard ones with default options,
    otherwise read off the loaded data."""
    if name in STANDARD_SHAPES and not options:
        return STANDARD_SHAPES[name]
    data = load_dataset(name, root, **options)
    return DatasetShape(data.input_shape, data.num_classes, data.vocab_size)


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


__all__ = ["DATASETS", "STANDARD_SHAPES", "CorruptDataError", "DataNotFoundError", "DatasetShape", "data_roots",
           "dataset_shape", "load_dataset"]
