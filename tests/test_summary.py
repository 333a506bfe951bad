"""End-of-run measurements logged to MLflow agree with each other and with values derived by hand; the curve table,
the dataset input and the run's description read back through the MLflow client; a run without MLflow measures the
same."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from test_behaviour_unchanged import artifact_paths

from bench.config import validate_config
from bench.data.partition import partition_title
from bench.fed.engine import Simulation
from bench.record_names import (
    BUDGETS_ARTIFACT,
    CONFIG_ARTIFACT,
    CURVE_ARTIFACT,
    HISTOGRAM_ARTIFACT,
    MACS_ARTIFACT,
    NOTE_TAG,
    PER_CLIENT_ARTIFACT,
)
from bench.track.artifacts import write_run_artifacts
from bench.track.runner import run_experiment


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, make_tiny_config):
    tmp_path = tmp_path_factory.mktemp("summary")
    data = make_tiny_config(tmp_path)
    data["eval"]["report_threshold"] = 0.35
    data["run"]["tracking_uri"] = uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_experiment(validate_config(data))
    client = MlflowClient(uri)
    with pytest.MonkeyPatch.context() as patch:  # MlflowClient.load_table searches the default store
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        curve = client.load_table(client.get_run(result.run_id).info.experiment_id, CURVE_ARTIFACT, [result.run_id])
    return result, client, client.get_run(result.run_id).data.metrics, tmp_path, curve


def test_threshold_zero_leaves_at_exit_one(finished_run):
    result, _, metrics, _, curve = finished_run
    zero = curve.iloc[0]
    assert zero["threshold"] == 0
    assert zero["expected_macs"] == metrics["macs/exit_1"]
    assert zero["accuracy"] == pytest.approx(result.evaluation.metrics["test/acc/exit_1"])
    assert zero["cost_reduction"] == pytest.approx(1 - metrics["macs/exit_1"] / metrics["macs/static"])
    assert zero["exit_1_fraction"] == 1.0
    assert metrics["macs/exit_1"] < metrics["macs/exit_2"] < metrics["macs/exit_3"]
    assert metrics["macs/static"] < metrics["macs/exit_3"]  # the static model has no intermediate heads


def test_the_curve_is_a_table_and_only_the_headline_thresholds_are_metrics(finished_run):
    _, _, metrics, _, curve = finished_run
    assert list(curve["threshold"]) == pytest.approx([0.05 * i for i in range(21)])  # 0.35 is one of them
    dyn = sorted(k for k in metrics if k.startswith("dyn/"))
    assert len(dyn) == 4 * 6  # acc, macs, cost_reduction, acc_drop at 0.35 (the report threshold) and 0.5 .. 0.9
    assert {k.rsplit("_at_", 1)[1] for k in dyn} == {"0.35", "0.5", "0.6", "0.7", "0.8", "0.9"}
    for threshold in (0.35, 0.8):
        row = curve[(curve["threshold"] - threshold).abs() < 1e-9].iloc[0]  # load_table parses floats loosely
        assert metrics[f"dyn/acc_at_{threshold}"] == pytest.approx(row["accuracy"], abs=1e-9)
        assert metrics[f"dyn/macs_at_{threshold}"] == pytest.approx(row["expected_macs"], rel=1e-9)


def test_the_data_is_a_dataset_input_and_the_description_summarises_the_run(finished_run):
    result, client, metrics, _, _ = finished_run
    run = client.get_run(result.run_id)
    (data,) = run.inputs.dataset_inputs
    assert data.dataset.name == "synthetic" and data.dataset.digest == run.data.tags["partition_hash"]
    assert {t.key: t.value for t in data.tags}["mlflow.data.context"] == "4 clients, alpha=0.5"
    assert json.loads(data.dataset.source)["options"] == {"num_samples": 800, "image_size": 16}
    assert json.loads(data.dataset.profile) == {"samples": 800, "classes": 10, "input_shape": [1, 16, 16],
                                                "clients": 4, "alpha": 0.5}
    note = run.data.tags[NOTE_TAG]
    acc = result.evaluation.metrics
    assert note.startswith("**fedavg** on **synthetic**: 4 clients, α = 0.5, seed 0; model conv3 (width 0.5), 3 rounds")
    assert (f"| accuracy | {acc['test/acc/exit_1']:.4f} | {acc['test/acc/exit_2']:.4f} | "
            f"{acc['test/acc/exit_3']:.4f} | {acc['test/acc/mean']:.4f} |") in note
    assert (f"Dynamic inference at threshold 0.35: accuracy {metrics['dyn/acc_at_0.35']:.4f}, "
            f"{metrics['dyn/macs_at_0.35'] / 1e6:.4g} MMACs per sample") in note
    assert "Stopped" not in note and "Running" not in note


def test_headline_figures_at_0_6_are_consistent(finished_run):
    _, _, metrics, _, _ = finished_run
    reduction, macs = metrics["dyn/cost_reduction_at_0.6"], metrics["dyn/macs_at_0.6"]
    assert metrics["macs/exit_1"] <= macs <= metrics["macs/exit_3"]
    assert reduction == pytest.approx(1 - macs / metrics["macs/static"])
    assert -1 <= metrics["dyn/acc_drop_at_0.6"] <= 1


def test_per_client_results_and_curve_artifacts(finished_run):
    result, client, metrics, tmp_path, _ = finished_run
    folder = client.download_artifacts(result.run_id, "", str(tmp_path / "art"))
    per_client = pd.read_csv(f"{folder}/results/per_client.csv")
    assert list(per_client["client"]) == [0, 1, 2, 3]
    assert per_client["test_acc_exit_3"].mean() == pytest.approx(result.evaluation.metrics["test/acc/exit_3"])
    assert (per_client["label_entropy"] > 0).all() and per_client["train_samples"].sum() > 0
    assert per_client["bytes_up"].sum() == metrics["comm/total_bytes_up"]
    curve = pd.read_json(f"{folder}/{CURVE_ARTIFACT}", orient="split")
    assert curve["expected_macs"].is_monotonic_increasing
    fractions = curve[[c for c in curve if c.endswith("_fraction")]].sum(axis=1)
    assert fractions.to_numpy() == pytest.approx(1.0)
    for name in ("dynamic/dynamic_curve.png", "partition/partition_heatmap.png", "costs/macs.csv"):
        assert (tmp_path / "art" / name).stat().st_size > 0


def test_a_run_without_mlflow_measures_what_a_tracked_run_records(finished_run, make_tiny_config, tmp_path):
    result, client, metrics, run_dir, _ = finished_run
    data = make_tiny_config(tmp_path)  # the same experiment, untracked
    data["eval"]["report_threshold"] = 0.35
    data["run"]["tracking_uri"] = f"sqlite:///{tmp_path / 'untouched.db'}"
    sim = Simulation(validate_config(data))
    sim.run()
    measured = sim.measures.metrics
    assert {"macs/exit_1", "macs/static", "dyn/acc_at_0.35", "dyn/cost_reduction_at_0.6",
            "comm/total_bytes_up"} <= set(measured)
    assert measured == {key: metrics[key] for key in measured}  # bitwise what the tracked run logged
    assert result.measures.metrics == measured  # and what run_experiment returned
    assert not (tmp_path / "untouched.db").exists()

    write_run_artifacts(sim.measures, tmp_path / "files", partition_title("synthetic", 0.5))
    written = sorted(str(p.relative_to(tmp_path / "files")) for p in (tmp_path / "files").rglob("*") if p.is_file())
    assert written == sorted({*artifact_paths(client, result.run_id)} - {CONFIG_ARTIFACT, CURVE_ARTIFACT})
    stored = client.download_artifacts(result.run_id, "", str(run_dir / "stored"))
    for table in (MACS_ARTIFACT, PER_CLIENT_ARTIFACT, BUDGETS_ARTIFACT, HISTOGRAM_ARTIFACT):
        assert (tmp_path / "files" / table).read_bytes() == Path(stored, table).read_bytes(), table
