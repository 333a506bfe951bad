"""Optuna tuning: child runs under one parent, pruned trials KILLED (not FAILED), a best preset that runs."""

import optuna
import pytest
import yaml
from helpers import tiny_base
from mlflow.tracking import MlflowClient

from bench.config import ConfigError, validate_config
from bench.fed.engine import Simulation
from bench.tune import tune


class PruneTrialOne(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 1


@pytest.fixture
def preset(tmp_path) -> str:
    data = tiny_base(tmp_path)
    data["run"]["experiment"] = "tune"
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_study_runs_child_trials_prunes_one_and_writes_a_runnable_best_preset(tmp_path, tracking_uri, preset):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    output = tmp_path / "best.yaml"
    result = tune("fedprox", preset, 3, storage=storage, study_name="s", output=output, pruner=PruneTrialOne())
    assert (result.completed, result.pruned) == (2, 1)

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("tune").experiment_id])
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["best/val/acc/mean"] == result.best_value
    assert parent.data.tags["cafebench.parent"] == "study:s"
    assert parent.data.tags["mlflow.note.content"].startswith("Optuna study **s** of fedprox: 2 completed, 1 pruned")
    trials = {int(r.data.tags["optuna_trial"]): r for r in runs if r.info.run_id != result.parent_run_id}
    assert sorted(trials) == [0, 1, 2] and len(runs) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in trials.values()} == {result.parent_run_id}
    assert trials[1].info.status == "KILLED" and trials[1].data.tags["pruned"] == "true"
    assert "error" not in trials[1].data.tags
    finished = [trials[0], trials[2]]
    assert all(r.info.status == "FINISHED" for r in finished)
    assert result.best_value == max(r.data.metrics["val/acc/mean"] for r in finished)  # validation, not test

    config = validate_config(yaml.safe_load(output.read_text()))
    assert config.method.name == "fedprox" and set(result.best_params) == {"mu"}
    assert config.method.hparams["mu"] == result.best_params["mu"]
    assert Simulation(config).run().metrics["val/acc/mean"] == result.best_value

    again = tune("fedprox", preset, 3, storage=storage, study_name="s", output=output)
    assert (again.completed, again.best_value, again.parent_run_id) == (2, result.best_value, result.parent_run_id)
    assert len(client.search_runs([client.get_experiment_by_name("tune").experiment_id])) == 4  # nothing re-run


@pytest.mark.parametrize("method, overrides, message", [
    ("local", [], "'local' has no hyperparameter ranges left to tune"),
    ("fedavg", [], "'fedavg' has no hyperparameter ranges left"),  # fine-tuning makes FedAvg+FT: not tuned
    ("fedprox", ["method.hparams.mu=0.1"], "'fedprox' has no hyperparameter ranges left"),
    ("fedprox", ["data.split=[0.8,0,0.2]"], "no validation fraction"),
])
def test_nothing_to_tune_or_no_validation_split_is_an_error(tmp_path, preset, method, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tune(method, preset, 2, overrides, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert not (tmp_path / "optuna.db").exists()
