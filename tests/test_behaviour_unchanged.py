"""A run's records are bitwise those the code made before the house-plan move (issue 24).

``tests/data/behaviour_before_move.json`` holds, for three methods of different kinds on the tiny synthetic config,
every metric's full history and every stored file's path of one tracked run, written by the code of 8302e2d (the
last commit before the move) with ``python tests/test_behaviour_unchanged.py``. The test reruns the same runs and
compares each value exactly; what was added since (a new metric, a new file) is not a change. Timings and the
machine's own readings (``time/``, ``system/``) are left out: they are not the run's results. Floating-point kernels
differ between CPU instruction sets, so the comparison is bitwise where PyTorch reports the CPU capability the file
was written on and to 1e-9 relative elsewhere.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

GOLDEN = Path(__file__).parent / "data" / "behaviour_before_move.json"
METHODS = ("fedavg", "cafedistill", "depthfl")
NOT_RESULTS = ("time/", "system/")


def behaviour(method: str, folder: Path, tracking_uri: str) -> dict:
    """Every metric's history (step, value) and the artifact paths of one tracked tiny run of ``method``."""
    from conftest import tiny_config

    from bench.config import validate_config
    from bench.track.runner import run_experiment

    data = tiny_config(folder)
    data["method"] = {"name": method}
    result = run_experiment(validate_config(data))
    client = MlflowClient(tracking_uri)
    keys = sorted(k for k in client.get_run(result.run_id).data.metrics if not k.startswith(NOT_RESULTS))
    histories = {k: [[m.step, m.value] for m in client.get_metric_history(result.run_id, k)] for k in keys}
    return {"metrics": histories, "artifacts": artifact_paths(client, result.run_id)}


def artifact_paths(client: MlflowClient, run_id: str, folder: str | None = None) -> list[str]:
    """Every file a run stored, folders walked."""
    paths: list[str] = []
    for entry in client.list_artifacts(run_id, folder):
        paths.extend(artifact_paths(client, run_id, entry.path) if entry.is_dir else [entry.path])
    return sorted(paths)


@pytest.mark.parametrize("method", METHODS)
def test_a_runs_metrics_are_bitwise_those_of_before_the_move(method, tmp_path, tracking_uri):
    golden = json.loads(GOLDEN.read_text())
    expected = golden["runs"][method]
    now = behaviour(method, tmp_path, tracking_uri)
    assert set(expected["artifacts"]) <= set(now["artifacts"])  # a metric or file added since is no change
    assert set(expected["metrics"]) <= set(now["metrics"])
    same_cpu = torch.backends.cpu.get_cpu_capability() == golden["cpu_capability"]
    for key, history in expected["metrics"].items():
        if same_cpu:
            assert now["metrics"][key] == history, key
        else:
            assert now["metrics"][key] == pytest.approx(history, rel=1e-9), key


if __name__ == "__main__":  # write the file from the code checked out (run it before a move, never after)
    import os
    import tempfile

    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        runs = {m: behaviour(m, Path(tmp) / m, uri) for m in METHODS}
    GOLDEN.write_text(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "runs": runs}, indent=1))
