"""Addresses in the MLflow UI: an experiment's training-runs view and a run's page, and how to open them.

Runs in a local store (SQLite, files) are browsed with ``cafebench ui``, which serves the UI on
``http://127.0.0.1:PORT`` (5000 unless ``--port`` names another) only while it runs: a printed link to such a store
says how to start it on the port the link names. Runs on a tracking server are browsed on that server. The runs view
is linked directly because MLflow 3 opens an experiment on its GenAI overview page; it opens in the training-runs
view (training runs only, flat, headline columns first).
"""

from __future__ import annotations

import shlex

from mlflow.tracking import MlflowClient

from bench.defaults import UI_HOST, UI_PORT
from bench.track.mlflow_tracker import tracking_uri
from bench.track.runs_view import ensure_training_view, view_query


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server, which serves its own UI."""
    return uri.startswith(("http://", "https://"))


def ui_base(uri: str, port: int = UI_PORT) -> str:
    """The UI serving the store ``uri``: the tracking server itself, else ``cafebench ui`` on this machine."""
    if is_server(uri):
        return uri.rstrip("/")
    return f"http://{UI_HOST}:{port}"


def runs_url(uri: str, experiment_id: str, port: int = UI_PORT) -> str:
    """The experiment's runs table in the training-runs view (:mod:`bench.track.runs_view`)."""
    return f"{ui_base(uri, port)}/#/experiments/{experiment_id}/runs?{view_query()}"


def run_url(uri: str, experiment_id: str, run_id: str, port: int = UI_PORT) -> str:
    return f"{ui_base(uri, port)}/#/experiments/{experiment_id}/runs/{run_id}"


def all_runs_urls(uri: str, port: int = UI_PORT) -> dict[str, str]:
    """Experiment name -> its runs view, for every experiment of the store that holds a run."""
    client = MlflowClient(tracking_uri=uri)
    experiments = [e for e in client.search_experiments() if client.search_runs([e.experiment_id], max_results=1)]
    for experiment in experiments:
        ensure_training_view(client, experiment.experiment_id)  # experiments made before the view existed
    return {e.name: runs_url(uri, e.experiment_id, port) for e in experiments}


def experiment_runs_url(uri: str, experiment: str, port: int = UI_PORT) -> str:
    """The runs view of the experiment named ``experiment`` (which must exist)."""
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} in {uri}")
    ensure_training_view(client, found.experiment_id)
    return runs_url(uri, found.experiment_id, port)


def run_page_url(uri: str, run_id: str, port: int = UI_PORT) -> str:
    """The page of the run ``run_id``."""
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    return run_url(uri, run.info.experiment_id, run_id, port)


def ui_command_line(uri: str, port: int = UI_PORT) -> str:
    """The command that serves the store ``uri`` on ``port``: ``cafebench ui --port P``, with ``--tracking-uri``
    where the store is not the one ``cafebench ui`` opens by default."""
    store = "" if uri == tracking_uri(None) else f" --tracking-uri {shlex.quote(uri)}"
    return f"cafebench ui --port {port}{store}"


def with_ui_hint(uri: str, url: str, port: int = UI_PORT) -> str:
    """``url`` as a line to print: for a local store followed by how to start the UI that serves it on ``port``
    (``URL (to open it, start the UI: cafebench ui --port P)``); a tracking server's ``url`` as it is."""
    if is_server(uri):
        return url
    return f"{url} (to open it, start the UI: {ui_command_line(uri, port)})"


def experiment_runs_link(uri: str, experiment: str, port: int = UI_PORT) -> str:
    """:func:`experiment_runs_url` with :func:`with_ui_hint`'s note on how to open it."""
    return with_ui_hint(uri, experiment_runs_url(uri, experiment, port), port)


def run_page_link(uri: str, run_id: str, port: int = UI_PORT) -> str:
    """:func:`run_page_url` with :func:`with_ui_hint`'s note on how to open it."""
    return with_ui_hint(uri, run_page_url(uri, run_id, port), port)
