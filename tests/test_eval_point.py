"""``eval.point``: the model tested after aggregation, right after local training (``local/`` metrics), or both."""

import pytest

from bench.config import ConfigError, apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.fed.executors import Job, run_local_update
from bench.record_names import LOCAL


def simulate(data: dict, *overrides: str) -> Simulation:
    sim = Simulation(validate_config(apply_overrides(data, ["train.rounds=1", "train.local_epochs=1",
                                                            *overrides])))
    sim.run()
    return sim


def test_local_point_tests_each_client_s_freshly_trained_model(tiny_config_data):
    sim = simulate(tiny_config_data, "eval.point=both")
    logged = sim.history[0]
    # by hand: every client's round-1 update from the initial server, its upload as its whole model
    fresh = Simulation(sim.config)
    method, model = fresh.fed.method, fresh.fed.new_model()
    uploads = {c: run_local_update(fresh.fed, model, 0, Job(c, method.payload(0, c, fresh.state.server),
                                                           fresh.state.clients[c])).upload.tensors
               for c in range(fresh.fed.num_clients)}
    by_hand = fresh.evaluate(1, lambda c: {"model": uploads[c]}).metrics
    for key in ("test/acc/mean", "test/acc/exit_1", "val/acc/mean"):
        assert logged[LOCAL + key] == pytest.approx(by_hand[key], abs=1e-12)
    assert logged["local/test/acc/mean"] != logged["test/acc/mean"]  # the average is another model


def test_local_training_is_the_same_model_at_both_points_and_local_alone_logs_only_local(tiny_config_data):
    logged = simulate(tiny_config_data, "eval.point=both", "method.name=local").history[0]
    assert logged["local/test/acc/mean"] == logged["test/acc/mean"]
    # after round 1, a FedAvg client's local model is local training's model: both start from the same weights
    fedavg = simulate(tiny_config_data, "eval.point=both").history[0]
    assert fedavg["local/test/acc/mean"] == logged["test/acc/mean"] != fedavg["test/acc/mean"]
    sim = simulate(tiny_config_data, "eval.point=local")
    assert "local/test/acc/mean" in sim.history[0] and "test/acc/mean" not in sim.history[0]
    assert sim.last_eval.round == 1 and "test/acc/mean" in sim.last_eval.metrics  # for the end-of-run measures


def test_local_point_with_partial_participation_is_refused(tiny_config_data):
    with pytest.raises(ConfigError, match="every client must train: set train.participation=1"):
        validate_config(apply_overrides(tiny_config_data, ["eval.point=local", "train.participation=0.5"]))
    with pytest.raises(ConfigError, match="eval.point"):
        validate_config(apply_overrides(tiny_config_data, ["eval.point=before"]))
