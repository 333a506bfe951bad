"""Ray: a sweep of Ray tasks and the in-run Ray executor give bitwise the serial metrics."""

import pytest
from mlflow.tracking import MlflowClient
from test_sweep import final_metrics, tiny_base, write_sweep

from bench.config import validate_config
from bench.fed.engine import Simulation
from bench.sweep import load_sweep, run_sweep

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def without_timings(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]


def test_ray_executor_matches_the_serial_executor_bitwise(tmp_path):
    data = tiny_base(tmp_path)
    data["data"]["clients"] = 2
    serial = Simulation(validate_config(data))
    serial.run()
    data["run"].update(executor="ray", workers=2)
    on_ray = Simulation(validate_config(data))
    on_ray.run()
    assert serial.history[-1]["test/acc/mean"] > 0.2
    assert without_timings(on_ray.history) == without_timings(serial.history)


def test_ray_sweep_matches_the_serial_runs_bitwise(tmp_path, tracking_uri):
    grid = {"method.name": ["fedavg", "local"]}
    on_ray = run_sweep(load_sweep(write_sweep(tmp_path, "on-ray", grid=grid)), backend="ray", workers=2)
    serial = run_sweep(load_sweep(write_sweep(tmp_path, "serial", grid=grid)), workers=1, threads=1)
    assert on_ray.done == serial.done == 2
    client = MlflowClient()
    for a, b in zip(on_ray.run_ids, serial.run_ids, strict=True):
        assert client.get_run(a).data.tags["sweep"] == "on-ray"
        assert final_metrics(client, a) == final_metrics(client, b)
