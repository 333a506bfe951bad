"""MLflow: the run layout, FAILED runs with their reason, and a real tracking server over HTTP."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import free_port
from mlflow.entities import Dataset as MlflowDataset
from mlflow.entities import DatasetInput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.config import apply_overrides, validate_config
from bench.fed.engine import Callback, Simulation
from bench.track.links import run_page_url
from bench.track.mlflow_tracker import MlflowTracker, log_dataset_input
from bench.track.runner import run_experiment


def test_run_layout_params_tags_metrics_artifacts(tracking_uri, tiny_config_data):
    config = validate_config(tiny_config_data)
    result = run_experiment(config)
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.05" and run.data.params["data.dataset"] == "synthetic"
    tags = run.data.tags
    assert tags["method"] == "fedavg" and tags["family"] == "base" and tags["dataset"] == "synthetic"
    assert tags["alpha"] == "0.5" and tags["seed"] == "0" and tags["config_hash"] == config.content_hash()
    assert len(tags["partition_hash"]) >= 8 and tags["code_version"]
    history = client.get_metric_history(result.run_id, "test/acc/exit_3")
    assert [m.step for m in history] == [1, 2, 3]
    assert history[-1].value == pytest.approx(result.evaluation.metrics["test/acc/exit_3"])
    for key in ("test/acc/mean", "val/acc/mean", "test/acc/exit_1/client_std", "comm/bytes_up", "train/loss"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert "config.yaml" in artifacts


def test_the_tracker_refuses_a_simulation_run_without_its_measures(tracking_uri, tiny_config_data):
    config = validate_config(apply_overrides(tiny_config_data, ["train.rounds=1"]))
    tracker = MlflowTracker(config)
    sim = Simulation(config, [tracker])
    with pytest.raises(ValueError, match=r"without its end-of-run measures \(run\(measure=False\)\).*measure=True"):
        sim.run(measure=False)
    assert sim.measures is None
    logged = MlflowClient(tracking_uri).get_run(tracker.run_id).data.metrics
    assert "test/acc/mean" in logged and "macs/exit_1" not in logged  # the round is logged, no summary made up


class FailAtRound(Callback):
    def on_round_end(self, sim, round, metrics):
        if round == 2:
            raise RuntimeError("boom in round 2")


def test_failing_run_is_marked_failed_with_the_reason(tracking_uri, tiny_config_data, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        run_experiment(validate_config(tiny_config_data), [FailAtRound()])
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["error"] == "RuntimeError: boom in round 2"
    note = run.data.tags["mlflow.note.content"]
    assert "**Stopped** after round" in note and "RuntimeError: boom in round 2" in note
    # missing data is found before a run is created: the store holds no second run
    (tmp_path / "empty").mkdir()  # an existing root without the files (a missing root is refused before)
    data = apply_overrides(tiny_config_data, ["data.dataset=cifar10", "data.options={}",
                                              f"data.root={tmp_path / 'empty'}"])
    with pytest.raises(FileNotFoundError, match="dataset 'cifar10' not found"):
        run_experiment(validate_config(data))
    assert len(client.search_runs([client.get_experiment_by_name("test").experiment_id])) == 1


def test_real_mlflow_server_over_http(tmp_path, tiny_config_data):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        data = apply_overrides(tiny_config_data, ["train.rounds=2", f"run.tracking_uri={base}"])
        result = run_experiment(validate_config(data))
        url = f"{base}/api/2.0/mlflow/metrics/get-history?run_id={result.run_id}&metric_key=test/acc/mean"
        history = json.load(urllib.request.urlopen(url, timeout=10))["metrics"]
        assert [m["step"] for m in history] == [1, 2]
        assert history[-1]["value"] == pytest.approx(result.evaluation.metrics["test/acc/mean"])
        run = json.load(urllib.request.urlopen(f"{base}/api/2.0/mlflow/runs/get?run_id={result.run_id}"))["run"]
        assert run["info"]["status"] == "FINISHED"
        exp_id = run["info"]["experiment_id"]  # a run on a server is browsed on that server
        assert run_page_url(base + "/", result.run_id) == f"{base}/#/experiments/{exp_id}/runs/{result.run_id}"
    finally:
        server.terminate()
        server.wait(timeout=30)


class LosesTheInsertRace(MlflowClient):
    """A client whose first ``log_inputs`` finds the dataset missing, and meanwhile another run of the sweep
    inserts it: the database refuses the second insert with a unique-key error, as SQLite did for two Ray runs."""

    def __init__(self, uri: str, rival_run: str, error: Exception):
        super().__init__(uri)
        self.rival_run, self.error, self.calls = rival_run, error, 0

    def log_inputs(self, run_id, datasets=None, models=None):
        self.calls += 1
        if self.calls == 1:
            super().log_inputs(self.rival_run, datasets)
            raise self.error
        return super().log_inputs(run_id, datasets)


def shared_dataset() -> DatasetInput:
    return DatasetInput(MlflowDataset(name="digits", digest="7ff37eb70f18", source_type="cafebench", source="{}"), [])


def test_a_run_that_loses_the_dataset_insert_race_links_to_the_rivals_dataset(tracking_uri):
    from sqlalchemy.exc import IntegrityError

    exp = MlflowClient(tracking_uri).create_experiment("race")
    rival, run = (MlflowClient(tracking_uri).create_run(exp).info.run_id for _ in range(2))
    try:
        raise IntegrityError("INSERT INTO datasets", {}, Exception("UNIQUE constraint failed: datasets.digest"))
    except IntegrityError as cause:
        try:
            raise MlflowException(str(cause)) from cause
        except MlflowException as err:
            lost = err
    client = LosesTheInsertRace(tracking_uri, rival, lost)
    log_dataset_input(client, run, shared_dataset())
    assert client.calls == 2
    linked = [client.get_run(r).inputs.dataset_inputs for r in (rival, run)]
    assert [[d.dataset.digest for d in inputs] for inputs in linked] == [["7ff37eb70f18"], ["7ff37eb70f18"]]


def test_a_dataset_input_error_other_than_the_race_is_raised(tracking_uri):
    exp = MlflowClient(tracking_uri).create_experiment("race")
    rival, run = (MlflowClient(tracking_uri).create_run(exp).info.run_id for _ in range(2))
    client = LosesTheInsertRace(tracking_uri, rival, MlflowException("store is read-only"))
    with pytest.raises(MlflowException, match="read-only"):
        log_dataset_input(client, run, shared_dataset())
    assert client.calls == 1


def test_two_runs_creating_one_experiment_side_by_side_get_the_same_id(tracking_uri):
    from bench.track.mlflow_tracker import get_or_create_experiment

    class CreatedMeanwhile(MlflowClient):
        def get_experiment_by_name(self, name):
            if not hasattr(self, "looked"):
                self.looked = MlflowClient(self.tracking_uri).create_experiment(name)  # the rival wins
                return None
            return super().get_experiment_by_name(name)

    client = CreatedMeanwhile(tracking_uri)
    assert get_or_create_experiment(client, "shared") == client.looked


def test_the_training_runs_view_lists_training_runs_with_headline_columns(tracking_uri, tiny_config_data):
    from bench.record_names import STUDY_TAG
    from bench.track.links import experiment_runs_url
    from bench.track.mlflow_tracker import PARENT_TAG, get_or_create_experiment
    from bench.track.runs_view import VIEW_TAG, view_state

    client = MlflowClient(tracking_uri)
    old = client.create_experiment("made-before-the-view")  # as an older store holds it
    assert VIEW_TAG not in client.get_experiment(old).tags
    assert experiment_runs_url(tracking_uri, "made-before-the-view").endswith(
        f"/#/experiments/{old}/runs?viewStateShareKey=cafebench-training-runs")
    assert json.loads(client.get_experiment(old).tags[VIEW_TAG]) == view_state()  # stored on the way
    exp_id = get_or_create_experiment(client, "test")
    parent = client.create_run(exp_id, tags={PARENT_TAG: "sweep:s"}).info.run_id
    study = client.create_run(exp_id, tags={STUDY_TAG: "st", PARENT_TAG: "study:st"}).info.run_id
    trial = client.create_run(exp_id, tags={STUDY_TAG: "st", "method": "fedavg"}).info.run_id
    run_id = run_experiment(validate_config(tiny_config_data), tags={"mlflow.parentRunId": parent}).run_id
    view = json.loads(client.get_experiment(exp_id).tags[VIEW_TAG])
    assert [r.info.run_id for r in client.search_runs([exp_id], view["searchFilter"])] == [run_id]
    assert {parent, study, trial} <= {r.info.run_id for r in client.search_runs([exp_id])}
    assert view["selectedColumns"][:3] == ["metrics.`acc/test_mean`", "metrics.`acc/val_mean`", "tags.`method`"]
    assert view["orderByKey"] == "tags.`mlflow.runName`"  # not creation time: the UI then fetches no parents
    metrics = client.get_run(run_id).data.metrics
    assert metrics["acc/test_mean"] == metrics["test/acc/mean"] and metrics["acc/val_mean"] == metrics["val/acc/mean"]
    history = client.get_metric_history(run_id, "acc/test_mean")
    assert [(m.step, m.value) for m in history] == [
        (m.step, m.value) for m in client.get_metric_history(run_id, "test/acc/mean")]
    assert len(history) == 3


def test_a_store_that_refuses_the_view_tag_is_logged_and_the_run_goes_on(tracking_uri, caplog):
    from bench.track.runs_view import VIEW_TAG, ensure_training_view

    class ReadOnlyTags(MlflowClient):
        def set_experiment_tag(self, experiment_id, key, value):
            raise MlflowException("User does not have permission to edit experiment 1")

    client = ReadOnlyTags(tracking_uri)
    exp = client.create_experiment("shared-server")
    ensure_training_view(client, exp)
    assert VIEW_TAG not in client.get_experiment(exp).tags
    assert "could not store the training-runs view on experiment" in caplog.text and "permission" in caplog.text
