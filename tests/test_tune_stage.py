"""The tune stage of a sweep: the same trial budget for every method on tuning seeds, the best settings carried into
the test runs, studies as parent MLflow runs, resumable; the report's table of chosen settings."""

import json

import optuna
import pytest
from helpers import RecordingLauncher, tiny_base, write_sweep
from mlflow.tracking import MlflowClient

import bench.sweep as sweep_module
from bench.cli import main
from bench.config import ConfigError
from bench.report.collect import collect_runs
from bench.report.context import make_context
from bench.report.tables import chosen_settings_table
from bench.sweep import TUNED_TAG, load_sweep, run_sweep


def tuned_sweep(tmp_path, **tune) -> str:
    base = tiny_base(tmp_path)
    base["train"]["rounds"] = 1
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
])
def test_bad_tune_stages_are_rejected_when_loaded(tmp_path, tune, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(tuned_sweep(tmp_path, **tune))


def test_studies_go_through_the_sweeps_launcher_each_on_its_worker_slots_gpu(tmp_path, tracking_uri, monkeypatch):
    launcher, backends = RecordingLauncher(), []
    monkeypatch.setattr(sweep_module, "make_launcher", lambda backend, *args: backends.append(backend) or launcher)
    sweep = load_sweep(tuned_sweep(tmp_path), ["run.device=auto"])
    tuned = run_sweep(sweep, workers=2, gpus=2)
    assert backends == ["local", "local"]  # one launcher for the tune stage, one for the runs
    assert launcher.jobs == [("study", "cuda:0"), ("study", "cuda:1"), ("run", "cuda:0"), ("run", "cuda:1")]
    assert tuned.done == 2
    assert all(float(c.train.lr) == 0.123 for c in sweep_module.run_tune_stage(
        sweep, launcher=lambda jobs: launcher).configs)


def test_a_failed_study_lets_the_others_finish_then_names_itself(tmp_path, tracking_uri, monkeypatch, capsys):
    real = sweep_module.run_study_spec
    ran = []

    def fedprox_fails(spec):
        ran.append(spec.config["method"]["name"])
        if spec.config["method"]["name"] == "fedprox":
            raise ValueError("diverged")
        return real(spec)

    monkeypatch.setattr(sweep_module, "run_study_spec", fedprox_fails)
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
    specs, names = sweep_module.study_specs(sweep, "", None)
    assert len(set(names)) == 5 and len(specs) == 5
    by_name = {s.name: s for s in specs}
    fixed_mu = [by_name[n] for n, t in zip(names, sweep.tags, strict=True) if t.get("sensitivity") == "mu"]
    assert all("mu" not in s.space and set(s.shared) == {"train.lr"} for s in fixed_mu)
