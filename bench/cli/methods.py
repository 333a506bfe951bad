"""``cafebench methods``: every registered method with its family and hyperparameters."""

from __future__ import annotations

import argparse

from bench.config import import_plugins


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the registered methods and their hyperparameters")
    p.add_argument("--plugin", action="append", default=[], help="import a plugin module or .py file first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.methods.api import search_space
    from bench.methods.registry import available_methods

    import_plugins(args.plugin)
    for name, cls in available_methods().items():
        doc = (cls.__doc__ or cls.__module__).strip().splitlines()[0]
        print(f"{name}  [{cls.family}]  {doc}")
        space = search_space(cls.Hparams)
        for field, info in cls.Hparams.model_fields.items():
            tune = f"  tune: {space[field]}" if field in space else ""
            print(f"    {field} = {info.default!r}{tune}  {info.description or ''}".rstrip())
    return 0
