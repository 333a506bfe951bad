"""The round loop on real numbers: learning, determinism, the sampling stream, communication counts."""

import pytest
import torch

from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.fed.federation import build_federation
from bench.ground.rng import sample_clients
from bench.ground.tensor_ops import state_nbytes
from bench.measure.summary import final_measures
from bench.methods.model_state import load_state


def simulate(data: dict, *overrides: str) -> Simulation:
    sim = Simulation(validate_config(apply_overrides(data, list(overrides))))
    sim.run()
    return sim


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]


def test_fedavg_learns_synthetic_data_far_above_chance(tiny_config_data):
    sim = simulate(tiny_config_data, "train.rounds=4")
    metrics = sim.last_eval.metrics
    assert metrics["test/acc/mean"] > 0.5  # 10 classes: chance is 0.1
    assert metrics["test/acc/exit_3"] > 0.5
    assert len(sim.history) == 4 and all("comm/bytes_up" in h for h in sim.history)


def test_same_seed_same_metrics_different_seed_different(tiny_config_data):
    a = without_timings(simulate(tiny_config_data).history)
    assert a == without_timings(simulate(tiny_config_data).history)
    assert a != without_timings(simulate(tiny_config_data, "seed=1").history)


def test_fedavg_communication_is_the_model_both_ways(tiny_config_data):
    sim = simulate(tiny_config_data, "train.rounds=1")
    model_bytes = state_nbytes(sim.fed.new_model().state_dict())
    assert sim.history[0]["comm/bytes_down"] == 4 * model_bytes
    assert sim.history[0]["comm/bytes_up"] == 4 * model_bytes
    assert sim.state.comm.down == [model_bytes] * 4


def test_the_run_measures_itself_from_its_finished_run(tiny_config_data):
    config = validate_config(apply_overrides(tiny_config_data, ["train.rounds=1"]))
    plain = Simulation(config)
    with pytest.raises(RuntimeError, match=r"no evaluation yet: call run\(\)"):
        plain.finished_run()
    plain.run(measure=False)
    assert plain.measures is None
    measured = simulate(tiny_config_data, "train.rounds=1")
    again = final_measures(plain.finished_run())
    assert again.metrics == measured.measures.metrics
    assert again.metrics["comm/total_bytes_up"] == sum(measured.state.comm.up) > 0
    assert again.metrics["macs/exit_1"] < again.metrics["macs/exit_3"]
    assert again.per_client.equals(measured.measures.per_client) and len(again.per_client) == 4


def test_local_never_communicates_and_learns(tiny_config_data):
    sim = simulate(tiny_config_data, "method.name=local")
    assert sim.history[-1]["comm/cum_bytes_up"] == 0 and sim.history[-1]["comm/cum_bytes_down"] == 0
    assert sim.last_eval.metrics["test/acc/mean"] > 0.3


def test_client_sampling_stream_is_shared_by_methods_and_deterministic():
    first = [sample_clients(7, r, 20, 0.25) for r in range(5)]
    assert first == [sample_clients(7, r, 20, 0.25) for r in range(5)]
    assert all(len(s) == 5 and s == sorted(set(s)) for s in first)
    assert len({tuple(s) for s in first}) > 1  # rounds differ
    assert sample_clients(7, 0, 20, 1.0) == list(range(20))


def test_partial_participation_trains_only_sampled_clients(tiny_config_data):
    sim = simulate(tiny_config_data, "train.rounds=2", "train.participation=0.5", "method.name=local")
    trained = set(sample_clients(0, 0, 4, 0.5)) | set(sample_clients(0, 1, 4, 0.5))
    initial = Simulation(sim.config).state.clients
    for c in range(4):
        same = all(torch.equal(initial[c]["model"][k], sim.state.clients[c]["model"][k])
                   for k in initial[c]["model"])
        assert same == (c not in trained)


def test_load_state_refuses_partial_models(tiny_config_data):
    fed = build_federation(validate_config(tiny_config_data))
    model = fed.new_model()
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("exits.")}
    with pytest.raises(KeyError, match="left .* entries unset"):
        load_state(model, backbone)
    with pytest.raises(KeyError, match="not a parameter or buffer"):
        load_state(model, {"nope": torch.zeros(1)})


def test_process_executor_gives_bitwise_identical_metrics(tiny_config_data):
    serial = simulate(tiny_config_data, "train.rounds=2").history
    pooled = simulate(tiny_config_data, "train.rounds=2", "run.executor=process", "run.workers=2").history
    assert without_timings(pooled) == without_timings(serial)
