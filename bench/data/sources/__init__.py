"""Dataset sources: each loader finds (or builds) one dataset and returns it whole as a :class:`Dataset`.

Official train and test parts are pooled; clients later draw their own train/val/test splits.
File-based datasets are searched in :func:`data_roots` and then in their system directories;
``fmnist``, ``cifar10`` and ``cifar100`` are downloaded through torchvision when they are found
nowhere, unless the option ``download=False`` is given or ``CAFEBENCH_NO_DOWNLOAD=1`` is set.
The generic sources ``imagefolder``, ``npz`` and ``textcsv`` read a user's own files; plugins add more
(:mod:`bench.data.sources.registry`).
"""

from __future__ import annotations

import inspect
import os

from bench.data.dataset import Dataset
from bench.data.sources import imagefolder, npz, textcsv  # noqa: F401  (each registers its source)
from bench.data.sources.agnews import load_agnews
from bench.data.sources.bundled import load_digits, load_mnist5k
from bench.data.sources.cifar import load_cifar10, load_cifar100
from bench.data.sources.errors import CorruptDataError, DataNotFoundError, DataTooLargeError
from bench.data.sources.fmnist import load_fmnist
from bench.data.sources.registry import DatasetEntry, DatasetShape, available_datasets, get_dataset, register_dataset
from bench.data.sources.roots import data_roots, require_root
from bench.data.sources.synthetic import load_synthetic
from bench.data.sources.tinyimagenet import load_tinyimagenet

register_dataset("fmnist", input_shape=(1, 28, 28), num_classes=10, size=70_000)(load_fmnist)
register_dataset("mnist5k", input_shape=(1, 28, 28), num_classes=10, size=5_000)(load_mnist5k)
register_dataset("digits", input_shape=(1, 8, 8), num_classes=10, size=1_797)(load_digits)
register_dataset("cifar10", input_shape=(3, 32, 32), num_classes=10, size=60_000)(load_cifar10)
register_dataset("cifar100", input_shape=(3, 32, 32), num_classes=100, size=60_000)(load_cifar100)
register_dataset("tinyimagenet", input_shape=(3, 64, 64), num_classes=200, size=110_000)(load_tinyimagenet)
register_dataset("agnews", input_shape=(64,), num_classes=4, vocab_size=20000, size=127_600)(load_agnews)
register_dataset("synthetic", input_shape=(1, 16, 16), num_classes=10, size=2_000)(load_synthetic)


def dataset_shape(name: str, root: str | os.PathLike | None = None, **options: object) -> DatasetShape:
    """Input shape, classes and vocabulary of a dataset: as declared when it is registered with default options,
    otherwise read off the loaded data."""
    entry = get_dataset(name)
    if entry.shape is not None and not options:
        return entry.shape
    data = load_dataset(name, root, **options)
    return DatasetShape(data.input_shape, data.num_classes, data.vocab_size)


def load_dataset(name: str, root: str | os.PathLike | None = None, **options: object) -> Dataset:
    """Load the registered dataset ``name``; ``root`` is searched first, ``options`` go to its loader.

    Raises:
        ValueError: unknown dataset name, an option the loader does not take, or one it needs and lacks.
        DataNotFoundError: the data is nowhere to be found (the message says where it looked), or ``root`` is given
            but is not a folder.
        CorruptDataError: a data file is malformed (the message names it).
    """
    loader = get_dataset(name).loader
    parameters = inspect.signature(loader).parameters
    accepted = set(parameters) - {"root"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"dataset {name!r} takes no option {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(accepted)) or 'none'}"
        )
    needed = sorted(k for k in accepted - set(options) if parameters[k].default is inspect.Parameter.empty)
    if needed:
        raise ValueError(f"dataset {name!r} needs the option {', '.join(needed)} (data.options.{needed[0]})")
    if root is not None:
        require_root(root)
    if "root" in parameters:
        options["root"] = root
    return loader(**options)


__all__ = ["CorruptDataError", "DataNotFoundError", "DataTooLargeError", "DatasetEntry", "DatasetShape",
           "available_datasets", "data_roots", "dataset_shape", "get_dataset", "load_dataset", "register_dataset"]
