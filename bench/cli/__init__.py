"""The ``cafebench`` command line: one module per sub-command, each with ``add_parser`` and ``run``.

Building the parser imports only light modules (argparse, the config's pydantic models): a command's module imports
PyTorch, MLflow, Optuna, Ray or matplotlib inside its ``run``, so ``--help`` and a config error answer at once."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from pathlib import Path

from bench.cli.tracking import store_uri
from bench.config import ConfigError
from bench.track.interrupt import Terminated, raise_on_sigterm
from bench.track.store import quiet_database_errors

COMMANDS = ("run", "methods", "datasets", "partition", "flops", "ui", "demo", "perf", "sweep", "tune", "report",
            "reproduce")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cafebench", description="Personalized federated early-exit benchmark")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"bench.cli.{name}").add_parser(sub)
    return parser


CONFIG_ARGUMENTS = ("config", "preset")  # the positional that names a command's config, before its overrides


def misplaced_override(args: argparse.Namespace, extra: list[str]) -> str | None:
    """The message for an override given before the config name (``run data.clients=5 demo``), None otherwise."""
    for attr in CONFIG_ARGUMENTS:
        value = getattr(args, attr, None)
        if not isinstance(value, str) or "=" not in value or Path(value).suffix in (".yaml", ".yml") \
                or Path(value).exists():
            continue
        rest = [*getattr(args, "overrides", []), *extra]
        names = [arg for arg in rest if "=" not in arg and not arg.startswith("-")]
        leading = [args.method] if isinstance(getattr(args, "method", None), str) else []
        example = " ".join(["cafebench", args.command, *leading, names[0] if names else attr.upper(), value,
                            *(arg for arg in rest if "=" in arg)])
        return (f"cafebench {args.command}: error: {value!r} is an override, not a {attr}: key=value overrides go "
                f"after the {attr} name, as in: {example}")
    return None


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line, taking ``key=value`` overrides wherever they stand (``run demo --tracking-uri X
    data.dataset=digits``): argparse ends a command's positionals at its first option. An override given before the
    config name is refused with one line saying where overrides go."""
    args, extra = parser.parse_known_args(argv)
    misplaced = misplaced_override(args, extra)
    if misplaced:
        parser.exit(2, misplaced + "\n")
    stray = [arg for arg in extra if arg.startswith("-") or "=" not in arg or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


USER_ERRORS = (ConfigError, ValueError, FileNotFoundError, RuntimeError)  # told in one line, exit status 2


def disk_full(exc: Exception, args: argparse.Namespace) -> Exception | None:
    """The one-line error for ``exc`` if a full disk caused it (the command's tracking store named when it is the
    database that filled up), else None."""
    from bench.track.disk_full import disk_full_error

    if disk_full_error(exc) is None:
        return None
    return disk_full_error(exc, [store_uri(getattr(args, "tracking_uri", None))])


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    raise_on_sigterm()
    quiet_database_errors()
    args = parse_args(build_parser(), argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        full = disk_full(exc, args)
        if args.verbose or (full is None and not isinstance(exc, USER_ERRORS)):
            raise
        print(f"cafebench {args.command}: error: {full or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        for number in (signal.SIGINT, signal.SIGTERM):  # ending on a signal: a second one must not cut the exit short
            signal.signal(number, signal.SIG_IGN)
        print(str(exc) or "interrupted", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
