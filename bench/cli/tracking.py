"""``--tracking-uri``: the option of every command that reads or writes the MLflow tracking store, and the one check
of that store before the command touches it (:func:`~bench.track.store.check_store`)."""

from __future__ import annotations

import argparse

from bench.track.store import check_store


def add_tracking_uri_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")


def tracking_uri_override(args: argparse.Namespace) -> list[str]:
    """The config override that sends a command's runs to its ``--tracking-uri`` (none when the option is not given)."""
    return [f"run.tracking_uri={args.tracking_uri}"] if args.tracking_uri else []


def store_uri(uri: str | None) -> str:
    """The store a command uses: ``uri`` (the option's or a config's ``run.tracking_uri``), else
    ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    from bench.track.mlflow_tracker import tracking_uri  # MLflow only now: --help and config errors answer at once

    return tracking_uri(uri)


def checked_store(uri: str | None) -> str:
    """:func:`store_uri` of ``uri``, once the store has been found usable (else a one-line ``StoreError``)."""
    resolved = store_uri(uri)
    check_store(resolved)
    return resolved
