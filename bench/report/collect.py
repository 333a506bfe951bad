"""Read an experiment's finished runs out of MLflow into pandas frames: the report's only input.

Only FINISHED runs that carry the run-layout tags (``method``, ``family``, ``dataset``, ``alpha``, ``seed``)
count; report runs (tag ``cafebench.report=true``), the parent runs of sweeps and studies (tag
``cafebench.parent``), tuning runs (tag ``optuna_study``: a study's parent run and its trials) and anything else
without those tags are left out. Artifacts are downloaded into a caller-supplied directory. Each run's
dynamic-inference curve is read from its table (``dynamic/curve.json``; the ``dynamic_curve.csv`` of runs logged
before the table existed), and the ``dyn/*`` figures at every threshold of the curve fill the metrics frame wherever
a run did not log them as metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.measure.summary import CURVE_COLUMNS
from bench.record_names import (
    ALPHA_TAG,
    BYTES_DOWN,
    BYTES_UP,
    CANDIDATE_TAG,
    CODE_VERSION_TAG,
    CONFIG_HASH_TAG,
    CURVE_ARTIFACT,
    DATASET_TAG,
    EXIT_ACCURACY_PATTERN,
    FAMILY_TAG,
    HEATMAP_ARTIFACT,
    LEGACY_CURVE_ARTIFACT,
    METHOD_TAG,
    MODEL_TAG,
    PARENT_TAG,
    PER_CLIENT_ARTIFACT,
    REPORT_TAG,
    ROLE_TAG,
    RUN_LAYOUT_TAGS,
    SEED_TAG,
    STUDY_TAG,
    TEST_ACCURACY,
    TUNED_TAG,
    dynamic,
)
from bench.track.mlflow_tracker import search_all_runs, tracking_uri

log = logging.getLogger(__name__)

HISTORY_METRICS = (TEST_ACCURACY, BYTES_UP, BYTES_DOWN)
CLIENT_COLUMNS = ["run_id", "client", "accuracy"]
PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass
class RunData:
    """Everything the tables and figures read, one experiment's worth.

    ``runs``: index ``run_id``; columns method, family, dataset, model, alpha (float), seed (int), start_time,
    end_time (ms), code_version (of the code that made the run),
    tuned (the JSON of the parameters a tune stage chose for the run; empty when none did), role (the sweep's
    ``role`` tag, :mod:`bench.record_names`; empty for runs outside a sweep).
    ``params`` / ``metrics``: index ``run_id``; one column per param (strings) / final metric value (floats).
    ``history``: long frame run_id, metric, step, value of the metrics in :data:`HISTORY_METRICS` and of each
    exit's test accuracy (``test/acc/exit_K``, the exits the run logged).
    ``curves``: the rows of the runs' dynamic-inference curve tables, with a ``run_id`` column.
    ``clients``: run_id, client, accuracy: each client's test accuracy averaged over the exits it holds, from
    the runs' ``results/per_client.csv``.
    ``heatmaps``: one partition heatmap per (dataset, alpha), from the run with the lowest seed.
    ``candidates``: one row per finished tuning run of a tune stage: ``candidate`` (its trial's candidate index),
    ``study`` and its ``train.*`` params — what each study was offered.
    """

    experiment: str
    runs: pd.DataFrame
    params: pd.DataFrame
    metrics: pd.DataFrame
    history: pd.DataFrame
    curves: pd.DataFrame
    heatmaps: dict[tuple[str, float], Path] = field(default_factory=dict)
    skipped: int = 0  # finished runs left out for missing layout tags (report runs not counted)
    clients: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CLIENT_COLUMNS))
    candidates: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["candidate", "study"]))
    duplicates: int = 0  # finished runs that repeat another's config hash and role (see duplicates_note)


def experiment_id(client: MlflowClient, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no MLflow experiment named {experiment!r} in {client.tracking_uri}; "
                         f"experiments there: {', '.join(names) or '(none)'}")
    return found.experiment_id


def finished_runs(client: MlflowClient, exp_id: str) -> list:
    return list(search_all_runs(client, exp_id, "attributes.status = 'FINISHED'"))


def collect_runs(experiment: str, artifact_dir: Path, uri: str | None = None) -> RunData:
    """The finished runs of ``experiment`` with their params, metrics, histories and artifacts.

    Raises ValueError when the experiment does not exist or holds no finished benchmark run.
    """
    client = MlflowClient(tracking_uri=tracking_uri(uri))
    exp_id = experiment_id(client, experiment)
    kept, skipped, offered = [], 0, []
    for run in finished_runs(client, exp_id):
        tags = run.data.tags
        if CANDIDATE_TAG in tags and STUDY_TAG in tags:
            offered.append({"candidate": int(tags[CANDIDATE_TAG]), "study": tags[STUDY_TAG],
                            **{k: v for k, v in run.data.params.items() if k.startswith("train.")}})
        if tags.get(REPORT_TAG) == "true" or PARENT_TAG in tags or STUDY_TAG in tags:
            continue
        if all(t in tags for t in RUN_LAYOUT_TAGS):
            kept.append(run)
        else:
            skipped += 1
    if skipped:
        log.warning("%d finished runs of %r lack the tags %s and are left out", skipped, experiment, RUN_LAYOUT_TAGS)
    keys = [(r.data.tags.get(CONFIG_HASH_TAG), r.data.tags.get(ROLE_TAG, "")) for r in kept]
    duplicates = len(keys) - len(set(keys))
    if not kept:
        raise ValueError(f"experiment {experiment!r} holds no finished benchmark run; run some first "
                         "(cafebench run / cafebench reproduce) or check --tracking-uri")
    runs = pd.DataFrame([{
        "run_id": r.info.run_id, "method": r.data.tags[METHOD_TAG], "family": r.data.tags[FAMILY_TAG],
        "dataset": r.data.tags[DATASET_TAG], "model": r.data.tags.get(MODEL_TAG, ""),
        "alpha": float(r.data.tags[ALPHA_TAG]), "seed": int(r.data.tags[SEED_TAG]), "start_time": r.info.start_time,
        "end_time": r.info.end_time, "code_version": r.data.tags.get(CODE_VERSION_TAG, ""),
        "tuned": r.data.tags.get(TUNED_TAG, ""), "role": r.data.tags.get(ROLE_TAG, ""),
    } for r in kept]).set_index("run_id")
    params = pd.DataFrame({r.info.run_id: r.data.params for r in kept}).T.reindex(runs.index)
    metrics = pd.DataFrame({r.info.run_id: r.data.metrics for r in kept}).T.reindex(runs.index).astype(float)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    curves = dynamic_curves(client, runs.index, artifact_dir)
    return RunData(experiment, runs, params, metrics.combine_first(curve_metrics(curves)).reindex(runs.index),
                   metric_histories(client, metrics), curves, partition_heatmaps(client, runs, artifact_dir),
                   skipped, client_accuracies(client, runs.index, artifact_dir),
                   pd.DataFrame(offered, columns=None if offered else ["candidate", "study"]), duplicates)


def duplicates_note(data: RunData) -> str:
    """The report's words on finished runs that repeat a config (e.g. of two sweeps of one grid run at once before
    sweeps claimed their grid points); empty when there are none."""
    if not data.duplicates:
        return ""
    return (f" Finished runs that repeat the config and role of another run of this experiment: {data.duplicates}; "
            "the report counts the latest of each.")


def metric_histories(client: MlflowClient, metrics: pd.DataFrame) -> pd.DataFrame:
    """The histories of :data:`HISTORY_METRICS` and of the exit accuracies of the runs (``metrics``' index) that
    logged them."""
    exits = [key for key in metrics.columns if EXIT_ACCURACY_PATTERN.match(key)]
    rows = [{"run_id": run_id, "metric": key, "step": m.step, "value": m.value}
            for run_id, logged in metrics.notna().iterrows() for key in (*HISTORY_METRICS, *exits)
            if key in HISTORY_METRICS or logged[key] for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """Without MLflow's per-file download progress bars (one per artifact would flood the terminal)."""
    previous = os.environ.get(PROGRESS_BAR_VARIABLE)
    os.environ[PROGRESS_BAR_VARIABLE] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[PROGRESS_BAR_VARIABLE]
        else:
            os.environ[PROGRESS_BAR_VARIABLE] = previous


def download(client: MlflowClient, run_id: str, artifact: str, artifact_dir: Path) -> Path | None:
    """The artifact's local copy, or None (logged) when the run does not have it."""
    target = artifact_dir / run_id
    target.mkdir(exist_ok=True)
    try:
        with quiet_downloads():
            return Path(client.download_artifacts(run_id, artifact, str(target)))
    except (MlflowException, OSError) as exc:
        log.warning("run %s has no artifact %s: %s", run_id, artifact, exc)
        return None


def read_curve(client: MlflowClient, run_id: str, artifact_dir: Path) -> pd.DataFrame | None:
    """A run's dynamic-inference curve: its table (written by ``mlflow.log_table``, JSON in pandas' split
    orientation; a threshold logged twice keeps its last row), else the CSV of older runs, else None."""
    present = {f.path for f in client.list_artifacts(run_id, CURVE_ARTIFACT.rsplit("/", 1)[0])}
    if CURVE_ARTIFACT in present:
        with download(client, run_id, CURVE_ARTIFACT, artifact_dir).open() as stream:
            return pd.read_json(stream, orient="split", precise_float=True).drop_duplicates("threshold", keep="last")
    if LEGACY_CURVE_ARTIFACT in present:
        return pd.read_csv(download(client, run_id, LEGACY_CURVE_ARTIFACT, artifact_dir))
    log.warning("run %s has no dynamic-inference curve (%s)", run_id, CURVE_ARTIFACT)
    return None


def dynamic_curves(client: MlflowClient, run_ids: pd.Index, artifact_dir: Path) -> pd.DataFrame:
    frames = [curve.assign(run_id=run_id) for run_id in run_ids
              if (curve := read_curve(client, run_id, artifact_dir)) is not None]
    if not frames:
        return pd.DataFrame(columns=["run_id", "threshold", *CURVE_COLUMNS.values()])
    return pd.concat(frames, ignore_index=True)


def curve_metrics(curves: pd.DataFrame) -> pd.DataFrame:
    """The ``dyn/{name}_at_{threshold}`` figures of every curve point, one row per run."""
    if curves.empty:
        return pd.DataFrame()
    long = curves.melt(id_vars=["run_id", "threshold"], value_vars=[c for c in CURVE_COLUMNS.values() if c in curves],
                       var_name="column")
    name_of = {column: name for name, column in CURVE_COLUMNS.items()}
    long["metric"] = [dynamic(name_of[c], t) for c, t in zip(long["column"], long["threshold"], strict=True)]
    return long.pivot_table(index="run_id", columns="metric", values="value", aggfunc="last").astype(float)


def client_accuracies(client: MlflowClient, run_ids: pd.Index, artifact_dir: Path) -> pd.DataFrame:
    frames = []
    for run_id in run_ids:
        path = download(client, run_id, PER_CLIENT_ARTIFACT, artifact_dir)
        if path is not None:
            table = pd.read_csv(path)
            exits = table.filter(regex=r"^test_acc_exit_\d+$")
            frames.append(pd.DataFrame({"run_id": run_id, "client": table["client"], "accuracy": exits.mean(axis=1)}))
    if not frames:
        return pd.DataFrame(columns=CLIENT_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def partition_heatmaps(client: MlflowClient, runs: pd.DataFrame, artifact_dir: Path) -> dict[tuple[str, float], Path]:
    heatmaps: dict[tuple[str, float], Path] = {}
    for (dataset, alpha), group in runs.sort_values(["seed", "start_time"]).groupby(["dataset", "alpha"], sort=True):
        for run_id in group.index:
            path = download(client, run_id, HEATMAP_ARTIFACT, artifact_dir)
            if path is not None:
                heatmaps[(dataset, alpha)] = path
                break
    return heatmaps
