"""MLflow logging of one experiment: params, tags, per-round metrics, summary metrics, artifacts.

Run layout (see the architecture page): params are the flattened config; tags name the method, its family,
dataset, alpha, seed, the config and partition hashes and the code version; metrics use the round as step.
Rounds already logged (a resumed run replays rounds after its last checkpoint) are not logged twice. Each run
also logs its data as an MLflow dataset input (the partition hash as digest, α and clients as context), the
dynamic-inference curve as a table, and a Markdown description that says how far it got. The headline accuracies
are logged twice, also under the ``acc/`` names the UI lists first (:mod:`bench.track.runs_view`). The tracker
measures nothing itself: it records the end-of-run measures the simulation computed (``Simulation.measures``), their
files written by :mod:`bench.track.artifacts`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Dataset as MlflowDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from bench.config import ExperimentConfig
from bench.data.partition import partition_title
from bench.fed.engine import Callback, Simulation
from bench.measure.summary import FinalMeasures
from bench.record_names import (
    ALPHA_TAG,
    BYTES_UP,
    CODE_VERSION_TAG,
    CONFIG_ARTIFACT,
    CONFIG_HASH_TAG,
    CURVE_ARTIFACT,
    DATASET_TAG,
    ERROR_TAG,
    FAMILY_TAG,
    METHOD_TAG,
    MLFLOW_PARENT_TAG,
    MODEL_TAG,
    NOTE_TAG,
    OWNER_TAG,
    PARENT_TAG,
    PARTITION_HASH_TAG,
    RESUMED_AFTER_TAG,
    SEED_TAG,
)
from bench.track.artifacts import write_run_artifacts
from bench.track.description import run_description
from bench.track.owner import describe, owner_alive, this_process, why_left_running
from bench.track.run_status import closed_on_exception
from bench.track.runs_view import ensure_training_view, with_headlines

log = logging.getLogger(__name__)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
STEP_MARKER = BYTES_UP  # logged every round: its history says which rounds are done
_MAX_PARAM_LEN = 6000
_BATCH = 900


def tracking_uri(config_uri: str | None = None) -> str:
    """The config's URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory."""
    return config_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def code_version() -> str:
    try:
        pkg = version("cafebench")
    except PackageNotFoundError:
        pkg = "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{pkg}+{sha}" if sha else pkg


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: beside the database for a SQLite store (``mlartifacts/`` next to
    ``mlflow.db``, whatever the working directory), MLflow's own choice for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in experiment)
    return (db.parent / "mlartifacts" / safe).as_uri()


def search_all_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> Iterator[Run]:
    """Every run of the experiment that matches ``filter_string``, newest first, page after page."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The id of the experiment ``name``, created if missing, with the UI's training-runs view stored on it."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        experiment_id = exp.experiment_id
    else:
        try:
            experiment_id = client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri,
                                                                                              name))
        except MlflowException as err:  # a run beside this one created it since the lookup
            if not _lost_insert_race(err):
                raise
            experiment_id = client.get_experiment_by_name(name).experiment_id
    ensure_training_view(client, experiment_id)
    return experiment_id


def dataset_input(sim: Simulation) -> DatasetInput:
    """The run's data as an MLflow dataset input: its name, where it comes from (the dataset and its options),
    the partition hash as digest, and the clients and α as the context the UI shows beside it (``alpha`` spelled
    out: the UI capitalises the context's words, and a capital α reads as A)."""
    d, data = sim.config.data, sim.fed.dataset
    source = {"dataset": d.dataset, "options": d.options, "root": d.root}
    profile = {"samples": len(data), "classes": data.num_classes, "input_shape": list(data.input_shape),
               "clients": d.clients, "alpha": d.alpha}
    dataset = MlflowDataset(name=d.dataset, digest=sim.fed.partition.hash, source_type="cafebench",
                            source=json.dumps(source, sort_keys=True), profile=json.dumps(profile))
    return DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, f"{d.clients} clients, alpha={d.alpha:g}")])


def log_dataset_input(client: MlflowClient, run_id: str, data: DatasetInput) -> None:
    """Log the run's dataset input. Runs of one sweep running side by side share the dataset (same name and
    digest): MLflow looks the dataset up, then inserts it, so a second run can lose that race with a unique-key
    error; the dataset then exists, and the second try links the run to it."""
    try:
        client.log_inputs(run_id, [data])
    except MlflowException as err:
        if not _lost_insert_race(err):
            raise
        log.debug("dataset %s inserted by another run meanwhile; linking to it", data.dataset.name)
        client.log_inputs(run_id, [data])


def _lost_insert_race(err: MlflowException) -> bool:
    """Whether ``err`` is a unique-key violation: raised from SQLAlchemy's IntegrityError by a database store,
    or carrying its text through a tracking server."""
    from sqlalchemy.exc import IntegrityError

    return isinstance(err.__cause__, IntegrityError) or "IntegrityError" in str(err) or "UNIQUE constraint" in str(err)



def open_parent_run(client: MlflowClient, experiment_id: str, key: str, run_name: str, note: str) -> str:
    """The parent run tagged ``cafebench.parent=key`` in the experiment, reopened as RUNNING, or a new one; runs
    that name it in their ``mlflow.parentRunId`` tag are shown nested beneath it."""
    for run in search_all_runs(client, experiment_id, f"tags.`{PARENT_TAG}` = '{key}'"):
        client.update_run(run.info.run_id, status="RUNNING")
        client.set_tag(run.info.run_id, NOTE_TAG, note)
        return run.info.run_id
    return client.create_run(experiment_id, run_name=run_name, tags={PARENT_TAG: key, NOTE_TAG: note}).info.run_id


class RunInUseError(RuntimeError):
    """The run to reopen is still RUNNING in a live process."""


class NotResumableError(RuntimeError):
    """The run to reopen has FINISHED: there is nothing left to run."""


def check_resumable(run: Run) -> None:
    """Raise unless ``run`` may be reopened: it has not FINISHED and no live process is running it."""
    owner = run.data.tags.get(OWNER_TAG)
    if run.info.status == "FINISHED":
        raise NotResumableError(f"run {run.info.run_id} has FINISHED; there is nothing to resume (start a new run "
                                "with `cafebench run CONFIG` to repeat it)")
    if run.info.status == "RUNNING" and owner_alive(owner):
        raise RunInUseError(f"run {run.info.run_id} is still running in {describe(owner)}; stop that process "
                            "(Ctrl-C or kill) before resuming the run")


class MlflowTracker(Callback):
    """Creates (or reopens) the MLflow run and logs everything the engine produces."""

    def __init__(self, config: ExperimentConfig, run_id: str | None = None, extra_tags: dict[str, str] | None = None,
                 parent_run_id: str | None = None):
        self.config = config
        self.client = MlflowClient(tracking_uri=tracking_uri(config.run.tracking_uri))
        self.extra_tags = dict(extra_tags or {})
        self.parent_run_id = parent_run_id
        self.run_id = run_id
        self.last_logged_step = 0
        self.latest: dict[str, float] = {}  # the latest round's metrics, then the summary: the description's figures
        if run_id is None:
            self.run_id = self._create_run()
        else:
            self._reopen()

    def _reopen(self) -> None:
        """Mark the run RUNNING in this process; what stopped it moves from ``error`` to ``resumed_after`` (for a
        run left RUNNING by a process killed outright: that its process ended)."""
        run = self.client.get_run(self.run_id)
        check_resumable(run)
        self.last_logged_step = self._last_step()
        self.client.update_run(self.run_id, status="RUNNING")
        tags = {OWNER_TAG: this_process()}
        if ERROR_TAG in run.data.tags:
            tags[RESUMED_AFTER_TAG] = run.data.tags[ERROR_TAG]
            self.client.delete_tag(self.run_id, ERROR_TAG)
        elif run.info.status == "RUNNING":
            tags[RESUMED_AFTER_TAG] = why_left_running(run.data.tags.get(OWNER_TAG))
        self.set_tags(tags)

    def _create_run(self) -> str:
        from bench.methods.registry import get_method

        cfg = self.config
        exp_id = get_or_create_experiment(self.client, cfg.run.experiment)
        tags = {
            METHOD_TAG: cfg.method.name,
            FAMILY_TAG: get_method(cfg.method.name).family,
            DATASET_TAG: cfg.data.dataset,
            MODEL_TAG: cfg.model.name,
            ALPHA_TAG: str(cfg.data.alpha),
            SEED_TAG: str(cfg.seed),
            CONFIG_HASH_TAG: cfg.content_hash(),
            CODE_VERSION_TAG: code_version(),
            OWNER_TAG: this_process(),
            **self.extra_tags,
        }
        if self.parent_run_id:
            tags[MLFLOW_PARENT_TAG] = self.parent_run_id
        run = self.client.create_run(exp_id, run_name=cfg.run.run_name or f"{cfg.method.name}-{cfg.data.dataset}"
                                     f"-a{cfg.data.alpha}-s{cfg.seed}", tags=tags)
        run_id = run.info.run_id
        tags[NOTE_TAG] = run_description(cfg, {}, 0)
        params = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in cfg.flat().items()]
        with closed_on_exception(self.client, run_id):  # a run that cannot be set up (a full disk) is not left RUNNING
            for i in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[i:i + 100])
            self.log_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), CONFIG_ARTIFACT, run_id)
        return run_id

    def _last_step(self) -> int:
        history = self.client.get_metric_history(self.run_id, STEP_MARKER)
        return max((m.step for m in history), default=0)

    # -- callback hooks ------------------------------------------------------------------------------------------
    def on_start(self, sim: Simulation) -> None:
        self.set_tags({PARTITION_HASH_TAG: sim.fed.partition.hash})
        log_dataset_input(self.client, self.run_id, dataset_input(sim))

    def on_round_end(self, sim: Simulation, round: int, metrics: dict[str, float]) -> None:
        self.latest.update(metrics)
        if round <= self.last_logged_step:
            return  # replayed after a resume: identical values are already logged
        self.log_metrics(metrics, step=round)
        self.last_logged_step = round

    def on_end(self, sim: Simulation) -> None:
        if sim.measures is None:
            raise ValueError("the simulation ran without its end-of-run measures (run(measure=False)); the MLflow "
                             "tracker records them: run it with measure=True")
        self.record_measures(sim.measures, step=sim.rounds)

    def record_measures(self, measures: FinalMeasures, step: int) -> None:
        """Log the end-of-run measures: their metrics at ``step``, their files, the curve as a table."""
        self.log_metrics(measures.metrics, step=step)
        with tempfile.TemporaryDirectory() as tmp:
            write_run_artifacts(measures, Path(tmp), partition_title(self.config.data.dataset, self.config.data.alpha))
            self.client.log_artifacts(self.run_id, tmp)
        self.client.log_table(self.run_id, measures.curve, CURVE_ARTIFACT)
        self.latest.update(measures.metrics)
        self.describe()

    # -- primitives ----------------------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in with_headlines(metrics).items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + _BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, artifact_file: str, run_id: str | None = None) -> None:
        self.client.log_text(run_id or self.run_id, text, artifact_file)

    def describe(self, stopped: str | None = None) -> None:
        """Set the run's description to where it stands now."""
        self.set_tags({NOTE_TAG: run_description(self.config, self.latest, self.last_logged_step, stopped)})

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str) -> None:
        self.set_tags({ERROR_TAG: reason[:5000]})
        self.describe(reason[:1000])
        self.client.set_terminated(self.run_id, "FAILED")

    def kill(self, reason: str) -> None:
        self.set_tags({ERROR_TAG: reason})
        self.describe(reason)
        self.client.set_terminated(self.run_id, "KILLED")
