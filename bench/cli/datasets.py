"""``cafebench datasets``: every registered dataset with its input shape, classes, size and where it was found;
``cafebench datasets NAME [key=value ...]`` loads one with those options and describes what was loaded."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from bench.config import import_plugins, parse_overrides

if TYPE_CHECKING:
    from bench.data.sources.registry import DatasetEntry

SHOWN_CLASS_NAMES = 10


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list the registered datasets, or load one to check it",
                       description="Without NAME: every registered dataset (built in, from --plugin files or "
                                   "modules, or from the cafebench.datasets entry-point group). With NAME: load "
                                   "it with the given options (as data.options) and describe it.")
    p.add_argument("name", nargs="?", help="a dataset to load and describe")
    p.add_argument("options", nargs="*", help="key=value dataset options, e.g. path=my_images size=32")
    p.add_argument("--root", help="data root searched first (data.root)")
    p.add_argument("--plugin", action="append", default=[], help="import a plugin module or .py file first")
    p.set_defaults(func=run)


def shape_text(shape: tuple[int, ...]) -> str:
    """``1×28×28`` for images, ``64 token ids`` for text."""
    return f"{shape[0]} token ids" if len(shape) == 1 else "×".join(map(str, shape))


def presence_text(entry: DatasetEntry, root: str | os.PathLike | None) -> str | None:
    """``found in FOLDER``, or ``not found: looked in ...; ...how to get it``; None for data with no files to find."""
    if entry.files is None:
        return None
    found = entry.files.find(root)
    if found is not None:
        return f"found in {found}"
    looked = ", ".join(str(d) for d in entry.files.candidates(root))
    return f"not found: looked in {looked}; to get it: {entry.files.how_to_get}"


def describe_entry(entry: DatasetEntry, root: str | os.PathLike | None = None) -> str:
    """Two lines (three for file-based data): name, shape, classes, size and origin; the loader's summary; where the
    data was found, or where it was looked for and how to get it."""
    presence = presence_text(entry, root)
    if entry.shape is None:
        figures = "shape, classes and size set by its options"
    else:
        figures = f"{shape_text(entry.shape.input_shape)}, {entry.shape.num_classes} classes"
        if entry.size is not None:
            figures += f", {entry.size:,} samples" + (" once present" if presence and presence[:4] == "not " else "")
    lines = [f"{entry.name:14s} {figures}  [{entry.origin}]", f"{'':14s} {entry.summary}"]
    if presence is not None:
        lines.append(f"{'':14s} {presence}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from bench.data.sources import available_datasets, load_dataset

    import_plugins(args.plugin)
    if args.name is None:
        for entry in available_datasets().values():
            print(describe_entry(entry, args.root))
        return 0
    if "=" in args.name:
        raise ValueError(f"{args.name!r} is an option; give the dataset's name first: cafebench datasets NAME "
                         "key=value ...")
    data = load_dataset(args.name, args.root, **parse_overrides(args.options))
    names = ", ".join(data.class_names[:SHOWN_CLASS_NAMES]) + (", ..." if data.num_classes > SHOWN_CLASS_NAMES else "")
    vocabulary = f" (vocabulary {data.vocab_size:,})" if data.kind == "text" else ""
    print(f"{args.name}: {len(data):,} samples, input {shape_text(data.input_shape)}{vocabulary}, "
          f"{data.num_classes} classes: {names}")
    counts = data.y.bincount(minlength=data.num_classes).tolist()
    print(f"  samples per class: {min(counts):,} to {max(counts):,}")
    return 0
