"""End-of-run measurements logged to MLflow agree with each other and with values derived by hand."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench.config import validate_config
from bench.track.runner import run_experiment


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, make_tiny_config):
    tmp_path = tmp_path_factory.mktemp("summary")
    data = make_tiny_config(tmp_path)
    data["run"]["tracking_uri"] = uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_experiment(validate_config(data))
    client = MlflowClient(uri)
    return result, client, client.get_run(result.run_id).data.metrics, tmp_path


def test_threshold_zero_leaves_at_exit_one(finished_run):
    result, _, metrics, _ = finished_run
    assert metrics["dyn/macs_at_0"] == metrics["macs/exit_1"]
    assert metrics["dyn/acc_at_0"] == pytest.approx(result.evaluation.metrics["test/acc/exit_1"])
    assert metrics["dyn/cost_reduction_at_0"] == pytest.approx(1 - metrics["macs/exit_1"] / metrics["macs/static"])
    assert metrics["macs/exit_1"] < metrics["macs/exit_2"] < metrics["macs/exit_3"]
    assert metrics["macs/static"] < metrics["macs/exit_3"]  # the static model has no intermediate heads


def test_headline_figures_at_0_6_are_consistent(finished_run):
    _, _, metrics, _ = finished_run
    reduction, macs = metrics["dyn/cost_reduction_at_0.6"], metrics["dyn/macs_at_0.6"]
    assert metrics["macs/exit_1"] <= macs <= metrics["macs/exit_3"]
    assert reduction == pytest.approx(1 - macs / metrics["macs/static"])
    assert -1 <= metrics["dyn/acc_drop_at_0.6"] <= 1


def test_per_client_results_and_curve_artifacts(finished_run):
    result, client, metrics, tmp_path = finished_run
    folder = client.download_artifacts(result.run_id, "", str(tmp_path / "art"))
    per_client = pd.read_csv(f"{folder}/results/per_client.csv")
    assert list(per_client["client"]) == [0, 1, 2, 3]
    assert per_client["test_acc_exit_3"].mean() == pytest.approx(result.evaluation.metrics["test/acc/exit_3"])
    assert (per_client["label_entropy"] > 0).all() and per_client["train_samples"].sum() > 0
    assert per_client["bytes_up"].sum() == metrics["comm/total_bytes_up"]
    curve = pd.read_csv(f"{folder}/dynamic/dynamic_curve.csv")
    assert curve["expected_macs"].is_monotonic_increasing
    fractions = curve[[c for c in curve if c.endswith("_fraction")]].sum(axis=1)
    assert fractions.to_numpy() == pytest.approx(1.0)
    for name in ("dynamic/dynamic_curve.png", "partition/partition_heatmap.png", "costs/macs.csv"):
        assert (tmp_path / "art" / name).stat().st_size > 0
