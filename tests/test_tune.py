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


def test_a_trial_that_failed_is_offered_the_same_candidate_when_the_study_goes_on(tmp_path, tracking_uri, preset,
                                                                                  monkeypatch):
    import bench.tune as tune_module

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    real = tune_module.run_experiment
    calls = []

    def fail_the_second(config, *args, **kwargs):
        calls.append(config)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(config, *args, **kwargs)

    monkeypatch.setattr(tune_module, "run_experiment", fail_the_second)
    with pytest.raises(RuntimeError, match="killed"):
        tune("fedprox", preset, 3, storage=storage, study_name="s", output=tmp_path / "best.yaml")
    monkeypatch.setattr(tune_module, "run_experiment", real)
    tune("fedprox", preset, 3, storage=storage, study_name="s", output=tmp_path / "best.yaml")
    trials = optuna.load_study(study_name="s", storage=storage).trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    done = {t.user_attrs["candidate"]: t.params for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(failed) == 1 and sorted(done) == [0, 1, 2]
    assert done[failed[0].user_attrs["candidate"]] == failed[0].params  # the same mu again
    assert len({d["mu"] for d in done.values()}) == 3


def test_shared_candidates_are_one_sequence_whatever_else_a_study_searches():
    from bench.tune_candidates import shared_candidate

    space = {"train.lr": {"low": 0.005, "high": 0.2, "log": True}, "train.local_epochs": {"choices": [1, 2]}}
    integer = {"train.lr": False, "train.local_epochs": True}
    first = [shared_candidate(space, integer, k, 100) for k in range(4)]
    assert first == [shared_candidate(space, integer, k, 100) for k in range(4)]
    assert all(0.005 <= c["train.lr"] <= 0.2 and c["train.local_epochs"] in (1, 2) for c in first)
    # Sobol: the first two points fall in the two halves of each range (in log space for lr)
    lrs = sorted(c["train.lr"] for c in first[:2])
    assert lrs[0] < (0.005 * 0.2) ** 0.5 < lrs[1]
    assert {c["train.local_epochs"] for c in first[:2]} == {1, 2}
    assert first != [shared_candidate(space, integer, k, 101) for k in range(4)]


def halving_decisions(pruner, steps: list[tuple[int, float, str]]) -> list[bool]:
    """Feeds trials to an in-memory study by hand — (candidate, value at round 1, how it ends: complete | fail |
    judged) — and returns whether the pruner stopped each at round 1."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    decisions = []
    for candidate, value, end in steps:
        trial = study.ask()
        trial.set_user_attr("candidate", candidate)
        trial.report(value, 1)
        decisions.append(trial.should_prune())
        state = {"complete": optuna.trial.TrialState.COMPLETE, "fail": optuna.trial.TrialState.FAIL}.get(
            end, optuna.trial.TrialState.PRUNED if decisions[-1] else optuna.trial.TrialState.COMPLETE)
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    return decisions


def test_successive_halving_follows_optuna_but_a_failed_trials_value_does_not_compete():
    from bench.tune_candidates import CandidatePruner, PrunerSpec

    spec = PrunerSpec("successive_halving", min_rounds=1, reduction=2)
    uninterrupted = [(0, 0.6, "judged"), (1, 0.5, "judged"), (2, 0.1, "judged"), (3, 0.55, "judged"),
                     (4, 0.52, "judged")]
    # keep the top half at round 1: 0.6 is the first; 0.5 < 0.6; 0.1 < 0.6; 0.55 is 2nd of 4; 0.52 is 3rd of 5
    expected = [False, True, True, False, True]
    assert halving_decisions(CandidatePruner(spec, 4), uninterrupted) == expected
    assert halving_decisions(optuna.pruners.SuccessiveHalvingPruner(1, 2), uninterrupted) == expected
    # candidate 2 is killed after round 1 and offered again: the same decisions as without the kill ...
    resumed = [*uninterrupted[:2], (2, 0.1, "fail"), *uninterrupted[2:]]
    assert halving_decisions(CandidatePruner(spec, 4), resumed) == [False, True, True, *expected[2:]]
    # ... where Optuna's own pruner lets the failed copy's 0.1 compete: 6 values, so 0.52 (3rd) is kept
    assert halving_decisions(optuna.pruners.SuccessiveHalvingPruner(1, 2), resumed)[-1] is False


def test_hyperband_brackets_follow_optunas_and_the_candidate_not_the_trial_number():
    from bench.tune_candidates import CandidatePruner, PrunerSpec

    pruner = CandidatePruner(PrunerSpec("hyperband", min_rounds=1, reduction=3), rounds=9)
    optunas = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
    optunas._try_initialization(None)  # with a given max_resource it reads nothing of the study
    assert pruner.shares == optunas._trial_allocation_budgets == [9, 5, 3]
    assert [h._min_early_stopping_rate for h in pruner.halvings] == [0, 1, 2]

    def trial(number, candidate):
        return optuna.trial.FrozenTrial(number=number, state=optuna.trial.TrialState.COMPLETE, value=0.0,
                                        datetime_start=None, datetime_complete=None, params={}, distributions={},
                                        user_attrs={"candidate": candidate}, system_attrs={},
                                        intermediate_values={}, trial_id=number)

    brackets = [pruner.bracket(trial(k, k)) for k in range(40)]
    assert brackets == [pruner.bracket(trial(k + 7, k)) for k in range(40)]  # a re-offered candidate keeps it
    assert set(brackets) == {0, 1, 2} and brackets.count(0) > brackets.count(2)


def test_a_studys_cost_is_rounds_run_over_a_full_runs_rounds():
    from bench.tune_candidates import study_cost, trial_cost

    study = optuna.create_study(direction="maximize")
    for steps, state in [(4, "complete"), (1, "pruned"), (3, "pruned"), (2, "fail")]:
        trial = study.ask()
        for step in range(1, steps + 1):
            trial.report(0.5, step)
        study.tell(trial, 0.5 if state == "complete" else None, state=getattr(optuna.trial.TrialState, state.upper()))
    trials = study.get_trials()
    assert [trial_cost(t, 4) for t in trials] == [1.0, 0.25, 0.75, 0.0]
    assert trial_cost(trials[0], 4, seeds=3) == 3.0  # a completed trial runs every tuning seed
    assert study_cost(study, 4) == 2.0  # failed trials are offered again, not counted
