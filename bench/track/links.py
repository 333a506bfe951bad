"""Addresses in the MLflow UI: an experiment's training-runs view and a run's page.

Runs in a local store (SQLite, files) are browsed with ``cafebench ui``, which serves the UI on
``http://127.0.0.1:5000``; runs on a tracking server are browsed on that server. The runs view is linked directly
because MLflow 3 opens an experiment on its GenAI overview page.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

UI_HOST = "127.0.0.1"
UI_PORT = 5000


def ui_base(uri: str, port: int = UI_PORT) -> str:
    """The UI serving the store ``uri``: the tracking server itself, else ``cafebench ui`` on this machine."""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://{UI_HOST}:{port}"


def runs_url(uri: str, experiment_id: str, port: int = UI_PORT) -> str:
    return f"{ui_base(uri, port)}/#/experiments/{experiment_id}/runs"


def run_url(uri: str, experiment_id: str, run_id: str, port: int = UI_PORT) -> str:
    return f"{runs_url(uri, experiment_id, port)}/{run_id}"


def all_runs_urls(uri: str, port: int = UI_PORT) -> dict[str, str]:
    """Experiment name -> its runs view, for every experiment of the store that holds a run."""
    client = MlflowClient(tracking_uri=uri)
    return {e.name: runs_url(uri, e.experiment_id, port) for e in client.search_experiments()
            if client.search_runs([e.experiment_id], max_results=1)}


def experiment_runs_url(uri: str, experiment: str) -> str:
    """The runs view of the experiment named ``experiment`` (which must exist)."""
    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} in {uri}")
    return runs_url(uri, found.experiment_id)


def run_page_url(uri: str, run_id: str) -> str:
    """The page of the run ``run_id``."""
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    return run_url(uri, run.info.experiment_id, run_id)
