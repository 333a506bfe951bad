"""Where datasets are found: the ``register_dataset`` decorator and the ``cafebench.datasets`` entry-point group.

A dataset is a loader function returning a :class:`~bench.data.dataset.Dataset`; its keyword arguments are the
dataset's options (``data.options`` in a config), and an argument named ``root`` receives ``data.root``. Plugins
register from a module or ``.py`` file listed in a config's ``plugins:`` (imported by every worker, as for
methods) or from another package's ``cafebench.datasets`` entry point.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from bench.data.dataset import Dataset
from bench.ground.plugins import load_entry_points

ENTRY_POINT_GROUP = "cafebench.datasets"
BUILT_IN = "built in"
_REGISTRY: dict[str, DatasetEntry] = {}
_discovered = False
L = TypeVar("L", bound=Callable[..., Dataset])


@dataclass(frozen=True)
class DatasetShape:
    """What a model needs to know of a dataset without loading it."""

    input_shape: tuple[int, ...]
    num_classes: int
    vocab_size: int = 0


@dataclass(frozen=True)
class DataFiles:
    """Where a file-based dataset's loader looks for its files and how a user gets them, so that a listing can say
    whether the data is there without loading it.

    ``candidates(root)`` gives the folders the loader searches, in its order; ``holds(folder)`` whether a folder has
    every file the loader needs; ``how_to_get`` is the loader's own advice (where it downloads, it says so).
    """

    candidates: Callable[[str | os.PathLike | None], list[Path]]
    holds: Callable[[Path], bool]
    how_to_get: str

    def find(self, root: str | os.PathLike | None = None) -> Path | None:
        """The first searched folder that holds the data, None when none does."""
        return next((d for d in self.candidates(root) if self.holds(d)), None)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset; ``shape`` and ``size`` are those with default options (None where options decide);
    ``files`` says where its files are looked for (None: nothing to find, or the loader does not say)."""

    name: str
    loader: Callable[..., Dataset]
    shape: DatasetShape | None
    size: int | None
    origin: str  # where it was found: built in, a plugin file, a module or an entry point
    files: DataFiles | None = None

    @property
    def summary(self) -> str:
        """The first line of the loader's docstring."""
        return (self.loader.__doc__ or "").strip().split("\n", 1)[0]


def origin_of(loader: Callable[..., Dataset]) -> str:
    module = loader.__module__
    if module.startswith("bench."):
        return BUILT_IN
    return getattr(sys.modules.get(module), "__file__", None) or module


def register_dataset(name: str, *, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                     vocab_size: int = 0, size: int | None = None, files: DataFiles | None = None) -> Callable[[L], L]:
    """Decorator: make a loader available as ``data.dataset: name``.

    ``input_shape`` (``(C, H, W)`` or ``(L,)``), ``num_classes``, ``vocab_size`` (text) and ``size`` (samples)
    describe the data under default options; give them when known, so ``cafebench datasets`` and
    ``cafebench flops`` need not load the data. ``files`` lets ``cafebench datasets`` say whether the data is
    there, and where, without loading it.
    """
    if not name or not name.replace("_", "").isalnum() or name.lower() != name:
        raise ValueError(f"dataset name must be a lower-case identifier, got {name!r}")
    if (input_shape is None) != (num_classes is None):
        raise ValueError(f"dataset {name!r}: give input_shape and num_classes together, or neither")
    shape = None if input_shape is None else DatasetShape(tuple(input_shape), int(num_classes), vocab_size)

    def decorate(loader: L) -> L:
        if not callable(loader):
            raise TypeError(f"@register_dataset({name!r}) applies to a loader function")
        existing = _REGISTRY.get(name)
        same = existing is not None and (existing.loader.__module__, existing.loader.__qualname__) == (
            loader.__module__, loader.__qualname__)  # the same loader imported again
        if existing is not None and not same:
            raise ValueError(f"dataset name {name!r} is taken by {existing.loader.__module__}."
                             f"{existing.loader.__qualname__} ({existing.origin})")
        _REGISTRY[name] = DatasetEntry(name, loader, shape, size, origin_of(loader), files)
        return loader

    return decorate


def built_in_files() -> dict[str, DataFiles]:
    """The file searches of the built-in file-based datasets, built from their loaders' own folder lists, file names
    and advice (imported here, not at the top: those modules need not be loaded to register a plugin)."""
    from bench.data.sources import agnews, cifar, fmnist, tinyimagenet
    from bench.data.sources.roots import candidate_dirs

    def cifar_files(layout: cifar.CifarLayout) -> DataFiles:
        needed = (*layout.batch_files, layout.meta_file)
        return DataFiles(lambda root: candidate_dirs(root, [layout.folder, ""]),
                         lambda d: all((d / f).is_file() for f in needed), layout.how_to_get)

    return {
        "fmnist": DataFiles(lambda root: candidate_dirs(root, fmnist.SUBDIRS, fmnist.SYSTEM_DIRS),
                            lambda d: all(fmnist.idx_file(d, stem) for pair in fmnist.PARTS.values() for stem in pair),
                            fmnist.HOW_TO_GET),
        "cifar10": cifar_files(cifar.CIFAR10),
        "cifar100": cifar_files(cifar.CIFAR100),
        "tinyimagenet": DataFiles(lambda root: candidate_dirs(root, [tinyimagenet.FOLDER]),
                                  lambda d: all((d / f).exists() for f in ("wnids.txt", "train", "val")),
                                  tinyimagenet.HOW_TO_GET),
        "agnews": DataFiles(lambda root: candidate_dirs(root, agnews.SUBDIRS),
                            lambda d: (d / "train.csv").is_file() and (d / "test.csv").is_file(), agnews.HOW_TO_GET),
    }


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for name, files in built_in_files().items():
        entry = _REGISTRY.get(name)
        if entry is not None and entry.origin == BUILT_IN and entry.files is None:
            _REGISTRY[name] = replace(entry, files=files)
    for ep, loaded in load_entry_points(ENTRY_POINT_GROUP):
        origin = f"entry point {ep.name} = {ep.value}"
        entry = _REGISTRY.get(ep.name)
        if entry is not None and entry.loader is loaded:  # the module registered it with @register_dataset
            _REGISTRY[ep.name] = replace(entry, origin=origin)
        elif entry is None and callable(loaded):
            register_dataset(ep.name)(loaded)
            _REGISTRY[ep.name] = replace(_REGISTRY[ep.name], origin=origin)


def available_datasets() -> dict[str, DatasetEntry]:
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_dataset(name: str) -> DatasetEntry:
    """The dataset registered as ``name``; an unknown name is refused with the closest registered one."""
    datasets = available_datasets()
    if name not in datasets:
        close = difflib.get_close_matches(name, list(datasets), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint}; available: {', '.join(datasets)} (plugins register with "
                         f"@bench.data.sources.register_dataset or the {ENTRY_POINT_GROUP!r} entry-point group)")
    return datasets[name]
