"""Ray: the in-run Ray executor and a sweep of Ray tasks give bitwise the serial metrics."""

import json
import os

import pytest
from helpers import tiny_base, write_sweep
from mlflow.tracking import MlflowClient

from bench.config import validate_config
from bench.fed.engine import Simulation
from bench.record_names import OWNER_TAG
from bench.sweep import load_sweep, run_sweep

ray = pytest.importorskip("ray")
METHODS = ("fedavg", "local")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def without_timings(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


def two_client_base(tmp_path) -> dict:
    data = tiny_base(tmp_path)
    data["data"]["clients"] = 2
    return data


@pytest.fixture(scope="module")
def serial_histories(tmp_path_factory) -> dict[str, list[dict[str, float]]]:
    """Per method, the per-round metrics of a serial run (torch threads 1, as in the Ray workers)."""
    data = two_client_base(tmp_path_factory.mktemp("serial"))
    histories = {}
    for method in METHODS:
        data["method"] = {"name": method}
        sim = Simulation(validate_config(data))
        sim.run()
        histories[method] = [without_timings(h) for h in sim.history]
    return histories


def test_ray_executor_matches_the_serial_executor_bitwise(tmp_path, serial_histories):
    data = two_client_base(tmp_path)
    data["run"].update(executor="ray", workers=2)
    on_ray = Simulation(validate_config(data))
    on_ray.run()
    assert serial_histories["fedavg"][-1]["test/acc/mean"] > 0.2
    assert [without_timings(h) for h in on_ray.history] == serial_histories["fedavg"]


def test_ray_executor_refuses_more_cpus_than_the_cluster_has(tmp_path):
    data = two_client_base(tmp_path)
    data["run"].update(executor="ray", workers=3, threads=1)
    with pytest.raises(ValueError, match="has 2 CPUs but run.workers × run.threads = 3 × 1"):
        Simulation(validate_config(data)).run()
    assert ray.is_initialized()  # the module's cluster is left running


def test_ray_sweep_matches_the_serial_runs_bitwise(tmp_path, tracking_uri, serial_histories):
    path = write_sweep(tmp_path, "on-ray", two_client_base(tmp_path), grid={"method.name": list(METHODS)})
    result = run_sweep(load_sweep(path), backend="ray", workers=2)
    assert result.done == 2
    client = MlflowClient()
    for method, run_id in zip(METHODS, result.run_ids, strict=True):
        run = client.get_run(run_id)
        assert run.data.tags["method"] == method and run.data.tags["sweep"] == "on-ray"
        final_round = serial_histories[method][-1]
        assert {k: run.data.metrics[k] for k in final_round if k != "round"} == \
            {k: v for k, v in final_round.items() if k != "round"}


def test_a_tune_stage_on_ray_runs_its_studies_as_ray_tasks(tmp_path, tracking_uri):
    tune = {"trials": 1, "seeds": [7], "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "ranges": {"train.lr": {"low": 0.01, "high": 0.2, "log": True}}}
    base = two_client_base(tmp_path)
    base["train"]["rounds"] = 1
    path = write_sweep(tmp_path, "tuned-on-ray", base, experiment="tuned-on-ray",
                       grid={"method.name": list(METHODS), "seed": [0]}, tune=tune)
    result = run_sweep(load_sweep(path), backend="ray", workers=2)
    assert (result.done, result.failed) == (2, 0)
    client = MlflowClient()
    trials = client.search_runs([client.get_experiment_by_name("tuned-on-ray").experiment_id],
                                "tags.optuna_trial = '0'")
    assert len(trials) == 2
    assert {json.loads(r.data.tags[OWNER_TAG])["pid"] for r in trials}.isdisjoint({os.getpid()})  # not here
