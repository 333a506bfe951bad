"""The tune stage of a sweep: the same trial budget for every method on tuning seeds, the best settings carried into
the test runs, studies as parent MLflow runs, resumable; the report's table of chosen settings."""

import json

import optuna
import pytest
from helpers import RecordingLauncher, tiny_base, write_sweep
from mlflow.tracking import MlflowClient

import bench.sweep.runs as sweep_runs
import bench.sweep.tune_stage as tune_stage_module
from bench.cli import main
from bench.config import ConfigError
from bench.record_names import TUNED_TAG
from bench.report.collect import collect_runs
from bench.report.context import make_context
from bench.report.tables import chosen_settings_table
from bench.sweep import load_sweep, run_sweep


def tuned_sweep(tmp_path, rounds: int = 1, **tune) -> str:
    base = tiny_base(tmp_path)
    base["train"]["rounds"] = rounds
    return write_sweep(tmp_path, "fair", base, experiment="fair",
                       grid={"method.name": ["fedprox", "local"], "seed": [0]},
                       tune={"trials": 2, "seeds": [7], "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
                             "ranges": {"train.lr": {"low": 0.01, "high": 0.2, "log": True}}, **tune})


def test_every_method_gets_the_same_trials_and_the_test_runs_use_the_best_setting(tmp_path, tracking_uri):
    sweep = load_sweep(tuned_sweep(tmp_path))
    result = run_sweep(sweep)
    assert result.done == 2 and result.failed == 0
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    studies = optuna.get_all_study_summaries(storage)
    assert sorted(s.study_name.split("/")[1] for s in studies) == ["fedprox", "local"]
    client = MlflowClient()
    exp = client.get_experiment_by_name("fair").experiment_id
    for summary in studies:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        assert set(study.best_params) == ({"train.lr", "mu"} if "fedprox" in summary.study_name else {"train.lr"})
        (parent,) = client.search_runs([exp], f"tags.optuna_study = '{summary.study_name}' and "
                                              "tags.`mlflow.runName` LIKE 'tune %'")
        children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        sweep_parent = client.get_run(parent.data.tags["mlflow.parentRunId"])
        assert sweep_parent.data.tags["cafebench.parent"] == "sweep:fair"  # the study nests beneath the sweep
        assert len(children) == 2 and {r.data.tags["seed"] for r in children} == {"7"}  # tuning seed only
        assert json.loads(parent.data.tags["best_params"]) == study.best_params
        assert parent.data.metrics["tune/full_run_equivalents"] == 2.0  # nothing pruned: one per trial
        method = summary.study_name.split("/")[1]
        (test_run,) = [client.get_run(i) for i in result.run_ids if client.get_run(i).data.tags["method"] == method]
        assert test_run.data.tags["seed"] == "0"
        assert float(test_run.data.params["train.lr"]) == pytest.approx(study.best_params["train.lr"])
        assert json.loads(test_run.data.tags[TUNED_TAG]) == study.best_params
        if method == "fedprox":
            assert float(test_run.data.params["method.hparams.mu"]) == pytest.approx(study.best_params["mu"])

    # trial k of every study is offered the same lr, whatever the method's own parameters
    offered = {s.study_name: [t.params["train.lr"] for t in sorted(optuna.load_study(
        study_name=s.study_name, storage=storage).trials, key=lambda t: t.user_attrs["candidate"])] for s in studies}
    (fedprox_lrs,), (local_lrs,) = ([v for k, v in offered.items() if f"/{m}/" in k] for m in ("fedprox", "local"))
    assert fedprox_lrs == local_lrs and len(set(local_lrs)) == 2

    again = run_sweep(load_sweep(tuned_sweep(tmp_path)))  # resumes: studies full, test runs finished
    assert (again.done, again.skipped) == (0, 2)
    assert len(client.search_runs([exp])) == 2 + 1 + 2 * 3  # two test runs, the sweep's parent, two studies of 1 + 2

    ctx = make_context(collect_runs("fair", tmp_path / "artifacts"))
    assert set(ctx.runs.index) == set(result.run_ids)  # the tuning runs are left out of reports
    table = chosen_settings_table(ctx)
    cell = table.text.loc["fedprox", ("digits", "0.5")]
    lr = json.loads(client.get_run(ctx.main[ctx.main["method"] == "fedprox"].index[0]).data.tags[TUNED_TAG])
    assert cell == ", ".join(f"{k}={v:.3g}" for k, v in sorted(lr.items()))
    assert (f"Candidates offered to all 2 studies: train.lr by trial — 0: {local_lrs[0]:.3g}; 1: {local_lrs[1]:.3g}."
            in table.note)


def test_a_tune_stage_on_two_workers_starts_from_a_store_that_does_not_exist_yet(tmp_path, monkeypatch):
    # its studies run in two processes at once; the store's tables are created before, not by both at once
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    (tmp_path / "new").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = run_sweep(load_sweep(tuned_sweep(tmp_path, trials=1)), workers=2)
    assert (result.done, result.failed) == (2, 0)
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("fair").experiment_id])
    assert len(runs) == 2 + 1 + 2 * 2  # two test runs, the sweep's parent, two studies of 1 + 1


@pytest.mark.parametrize("tune, message", [
    ({"seeds": [0]}, r"tune.seeds \[0\] are also seeds of the sweep's runs"),
    ({"trials": 0}, "tune.trials must be a positive integer"),
    ({"ranges": {"train.lrr": {"low": 0.1, "high": 1}}}, "'train.lrr' is not a train.\\* config key"),
    ({"ranges": {"train.lr": [0.1, 1]}}, r"ranges.train.lr must be \{choices"),
    ({"trial": 2}, r"unknown key\(s\) trial"),
    ({"pruner": "hyperband"}, "tune.pruner must be a mapping with keys kind, min_rounds, reduction"),
    ({"pruner": {"kind": "median", "min_rounds": 1}},
     "tune.pruner.kind must be one of successive_halving, hyperband, not 'median'"),
    ({"pruner": {"kind": "hyperband", "min_round": 1}},
     r"tune.pruner: unknown key\(s\) min_round; allowed: kind, min_rounds, reduction"),
    ({"pruner": {"kind": "hyperband", "min_rounds": 0}}, "tune.pruner.min_rounds must be a positive integer"),
    ({"pruner": {"kind": "hyperband", "min_rounds": 1, "reduction": 1}},
     "tune.pruner.reduction must be an integer of at least 2, not 1"),
    ({"pruner": {"kind": "successive_halving", "min_rounds": 1}, "seeds": [7, 8]},
     "tune.pruner needs one tuning seed, but tune.seeds has 2"),
    ({"pruner": {"kind": "successive_halving", "min_rounds": 1}},  # one round: nothing to stop early
     r"tune.pruner.min_rounds 1: with eval.every=1 no round from 1 on is evaluated before the last \(1\)"),
])
def test_bad_tune_stages_are_rejected_when_loaded(tmp_path, tune, message):
    with pytest.raises(ConfigError, match=message) as refused:
        load_sweep(tuned_sweep(tmp_path, **tune))
    assert "\n" not in str(refused.value) and str(refused.value).startswith("sweep fair: tune")


class PruneCandidateOne(optuna.pruners.BasePruner):
    """Stops candidate 1 at its first evaluated round, in every study (what Optuna's pruners stop depends on the
    values); built as the tune stage builds its pruner."""

    def __init__(self, spec, rounds):
        assert (spec.kind, spec.min_rounds, spec.reduction, rounds) == ("successive_halving", 1, 2, 2)

    def prune(self, study, trial):
        return trial.user_attrs["candidate"] == 1


def test_a_pruned_tune_stage_counts_full_run_equivalents_offers_the_same_candidates_and_resumes(
        tmp_path, tracking_uri, monkeypatch):
    monkeypatch.setattr(tune_stage_module, "CandidatePruner", PruneCandidateOne)
    pruner = {"kind": "successive_halving", "min_rounds": 1, "reduction": 2}
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    client = MlflowClient()

    def trial_runs() -> dict[str, dict[int, object]]:
        exp = client.get_experiment_by_name("fair").experiment_id
        runs = client.search_runs([exp], "tags.optuna_trial != ''")
        studies = {r.data.tags["optuna_study"] for r in runs}
        return {s: {int(r.data.tags["optuna_candidate"]): r for r in runs if r.data.tags["optuna_study"] == s}
                for s in studies}

    sweep = load_sweep(tuned_sweep(tmp_path, rounds=2, trials=2, pruner=pruner))
    assert tune_stage_module.tune_summary(sweep) == (
        "a tune stage of 2 studies x 2 trials (4 runs) on seeds [7], pruned by successive halving (from round 1, "
        "reduction 2): at most 4 full-run equivalents (rounds run / train.rounds)")
    run_sweep(sweep)
    first = {s: {k: r.info.run_id for k, r in runs.items()} for s, runs in trial_runs().items()}
    assert [sorted(c) for c in first.values()] == [[0, 1], [0, 1]]

    result = run_sweep(load_sweep(tuned_sweep(tmp_path, rounds=2, trials=3, pruner=pruner)))  # one more candidate
    assert result.failed == 0
    runs = trial_runs()
    assert {s: {k: r.info.run_id for k, r in c.items() if k < 2} for s, c in runs.items()} == first  # not re-run
    exp = client.get_experiment_by_name("fair").experiment_id
    lrs = []
    for name, by_candidate in runs.items():
        study = optuna.load_study(study_name=name, storage=storage)
        states = {t.user_attrs["candidate"]: t.state.name for t in study.trials}
        assert len(study.trials) == 3 and states == {0: "COMPLETE", 1: "PRUNED", 2: "COMPLETE"}
        pruned = by_candidate[1]
        assert pruned.info.status == "KILLED" and pruned.data.tags["pruned"] == "true"
        assert [m.step for m in client.get_metric_history(pruned.info.run_id, "val/acc/mean")] == [1]
        hand = sum(max(m.step for m in client.get_metric_history(r.info.run_id, "val/acc/mean")) / 2
                   for r in by_candidate.values())
        assert hand == 2.5
        (parent,) = client.search_runs([exp], f"tags.optuna_study = '{name}' and tags.`mlflow.runName` LIKE 'tune %'")
        assert parent.data.metrics["tune/full_run_equivalents"] == hand
        assert "costing 2.50 full-run equivalents (2-round runs on 1 seed(s))" in parent.data.tags[
            "mlflow.note.content"]
        lrs.append([float(by_candidate[k].data.params["train.lr"]) for k in range(3)])
    assert lrs[0] == lrs[1] and len(set(lrs[0])) == 3  # trial k of every study: the same shared lr
    (sweep_parent,) = client.search_runs([exp], "tags.`cafebench.parent` = 'sweep:fair'")
    assert sweep_parent.data.metrics["tune/full_run_equivalents"] == 5.0
    assert sweep_parent.data.tags["mlflow.note.content"].endswith("Its tune stage spent 5.00 full-run equivalents.")

    before = len(client.search_runs([exp]))
    again = run_sweep(load_sweep(tuned_sweep(tmp_path, rounds=2, trials=3, pruner=pruner)))
    assert again.done == 0 and len(client.search_runs([exp])) == before  # nothing runs twice



def test_studies_go_through_the_sweeps_launcher_each_on_its_worker_slots_gpu(tmp_path, tracking_uri, monkeypatch):
    launcher, backends = RecordingLauncher(), []
    monkeypatch.setattr(sweep_runs, "make_launcher", lambda backend, *args: backends.append(backend) or launcher)
    sweep = load_sweep(tuned_sweep(tmp_path), ["run.device=auto"])
    tuned = run_sweep(sweep, workers=2, gpus=2)
    assert backends == ["local", "local"]  # one launcher for the tune stage, one for the runs
    assert launcher.jobs == [("study", "cuda:0"), ("study", "cuda:1"), ("run", "cuda:0"), ("run", "cuda:1")]
    assert tuned.done == 2
    assert all(float(c.train.lr) == 0.123 for c in tune_stage_module.run_tune_stage(
        sweep, launcher=lambda jobs: launcher).configs)


def test_a_failed_study_lets_the_others_finish_then_names_itself(tmp_path, tracking_uri, monkeypatch, capsys):
    real = tune_stage_module.run_study_spec
    ran = []

    def fedprox_fails(spec):
        ran.append(spec.config["method"]["name"])
        if spec.config["method"]["name"] == "fedprox":
            raise ValueError("diverged")
        return real(spec)

    monkeypatch.setattr(tune_stage_module, "run_study_spec", fedprox_fails)
    path = tuned_sweep(tmp_path)
    assert main(["sweep", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the tune stage of sweep fair: 1 of 2 studies failed: fair/fedprox/" in err
    assert "(ValueError: diverged)" in err and "run the same command again" in err
    assert ran == ["fedprox", "local"]  # the study after the failed one still ran
    local, = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert local.study_name.startswith("fair/local/") and local.n_trials == 2
    parent = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("fair").experiment_id],
                                        "tags.`cafebench.parent` = 'sweep:fair'")[0]
    assert parent.info.status == "FAILED"


def test_rows_are_tagged_by_role_and_a_mu_row_at_its_default_is_a_run_of_its_own(tmp_path):
    path = write_sweep(tmp_path, "roles", tiny_base(tmp_path), experiment="roles",
                       grid={"method.name": ["fedavg", "cafedistill"], "seed": [0]},
                       runs=[{"method.name": "cafedistill", "method.hparams.cross_client": False},
                             {"method.name": "cafedistill", "method.hparams.mu": 1.0},
                             {"method.name": "cafedistill", "method.hparams.mu": 10.0}],
                       tune={"trials": 1, "seeds": [7], "ranges": {"train.lr": {"low": 0.01, "high": 0.2}}})
    sweep = load_sweep(path)
    roles = sorted((c.method.name, c.method.hparams.get("mu"), c.method.hparams.get("cross_client"), t["role"],
                    t.get("sensitivity", "")) for c, t in zip(sweep.configs, sweep.tags, strict=True))
    assert roles == [("cafedistill", 1.0, False, "ablation", ""), ("cafedistill", 1.0, True, "main", ""),
                     ("cafedistill", 1.0, True, "sensitivity", "mu"), ("cafedistill", 10.0, True, "sensitivity", "mu"),
                     ("fedavg", None, None, "main", "")]
    # the mu = 1 row has the main run's config before tuning, and its own study that holds mu fixed
    specs, names = tune_stage_module.study_specs(sweep, "", None)
    assert len(set(names)) == 5 and len(specs) == 5
    by_name = {s.name: s for s in specs}
    fixed_mu = [by_name[n] for n, t in zip(names, sweep.tags, strict=True) if t.get("sensitivity") == "mu"]
    assert all("mu" not in s.space and set(s.shared) == {"train.lr"} for s in fixed_mu)


def test_the_fidelity_measurement_runs_small_spends_no_more_than_full_fidelity_and_resumes(tmp_path, tracking_uri,
                                                                                          capsys):
    from bench import tune_fidelity

    base = tiny_base(tmp_path)  # 2 rounds, evaluated after each
    preset = write_sweep(tmp_path, "mini", base, grid={"method.name": ["local", "fedavg"], "data.alpha": [0.5],
                                                       "seed": [0, 1]},
                         tune={"trials": 1, "seeds": [7], "ranges": {"train.lr": {"low": 0.01, "high": 0.2}}})
    out = tmp_path / "fidelity"
    argv = ["--preset", preset, "--methods", "local", "--test-seeds", "0", "--trials", "2",
            "--pruner", "successive_halving:1:2", "--experiment", "fidelity", "--out", str(out)]
    assert tune_fidelity.main(argv) == 0
    printed = capsys.readouterr().out
    choices = {c["fidelity"]: c for c in json.loads((out / "tune_fidelity.json").read_text())}
    full, multi = choices["full"], choices["multi"]
    assert (full["method"], full["alpha"], full["trials"], full["pruned"], full["cost"]) == ("local", 0.5, 2, 0, 2.0)
    assert multi["trials"] >= 2 and multi["cost"] <= 2.0 and multi["cost"] > 2.0 - 1  # equal cost, to a trial
    assert len(full["test"]) == len(multi["val"]) == 1 and set(full["params"]) == set(multi["params"]) == {"train.lr"}
    storage = f"sqlite:///{out / 'optuna.db'}"
    studies = {s.study_name.split("/")[0]: optuna.load_study(study_name=s.study_name, storage=storage)
               for s in optuna.get_all_study_summaries(storage)}
    by_candidate = {f: {t.user_attrs["candidate"]: t for t in s.trials} for f, s in studies.items()}
    full_study, multi_study = by_candidate["tune-fidelity-full"], by_candidate["tune-fidelity-multi"]
    assert full_study[0].params == multi_study[0].params and full_study[0].value == multi_study[0].value
    assert full_study[1].params == multi_study[1].params  # the same candidates at both fidelities
    assert f"total: 2.00 full-run equivalents at full fidelity, {multi['cost']:.2f} multi-fidelity" in printed
    assert "cost ratio multi/full" in printed and printed.count("\nlocal ") == 2

    client = MlflowClient()
    runs = len(client.search_runs([client.get_experiment_by_name("fidelity").experiment_id]))
    assert tune_fidelity.main(argv) == 0  # resumes: nothing runs again, the same table
    assert len(client.search_runs([client.get_experiment_by_name("fidelity").experiment_id])) == runs
    assert capsys.readouterr().out == printed
