"""Where a run's records live, as other processes and a full disk's message need them named: the tracking URI made
absolute, the artifact location of a run's experiment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from bench.track.mlflow_tracker import artifact_location


def absolute_tracking_uri(uri: str) -> str:
    """A relative ``sqlite:///file.db`` made absolute, so runs in other processes or folders share it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def artifact_locations(uri: str, run: Mapping[str, Any]) -> list[str]:
    """Where the run's experiment keeps its artifacts, if it exists yet (a place a full disk may be named by)."""
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(run["experiment"])
    location = experiment.artifact_location if experiment else artifact_location(uri, run["experiment"])
    return [location] if location else []
