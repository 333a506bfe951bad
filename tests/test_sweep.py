"""Sweeps: grid expansion and validation, failures that do not stop the rest, resuming (skipping finished runs,
continuing interrupted ones), local processes."""

import pytest
from helpers import final_metrics, sigkilled_run, tiny_base, write_sweep
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.config import ConfigError
from bench.fed.engine import Callback
from bench.sweep import load_sweep, run_sweep
from bench.sweep.outcomes import SweepProgress
from bench.track.runner import run_experiment


def test_grid_rows_and_overrides_expand_to_validated_configs(tmp_path):
    path = write_sweep(tmp_path, "grid", experiment="exp", set={"train.rounds": 3},
                       grid={"method.name": ["fedavg", "local"], "seed": [0, 1]},
                       runs=[{"method.name": "fedavg", "method.hparams.finetune_epochs": 1},
                             {"method.name": "local", "seed": 0}])
    sweep = load_sweep(path)
    assert sweep.name == "grid" and sweep.experiment == "exp"
    # 4 grid points, the fedavg row over both seeds, and the local row, which repeats a grid point and runs once
    assert sweep.labels == ["method.name=fedavg seed=0", "method.name=fedavg seed=1", "method.name=local seed=0",
                            "method.name=local seed=1", "seed=0 method.name=fedavg method.hparams.finetune_epochs=1",
                            "seed=1 method.name=fedavg method.hparams.finetune_epochs=1"]
    assert [c.method.hparams.get("finetune_epochs") for c in sweep.configs] == [0, 0, None, None, 1, 1]
    assert {c.train.rounds for c in sweep.configs} == {3} and {c.run.experiment for c in sweep.configs} == {"exp"}

    narrowed = load_sweep(path, ["seed=5", "train.rounds=2", "method.name=[local]"])
    assert narrowed.labels == ["method.name=local seed=5", "seed=5 method.name=fedavg method.hparams.finetune_epochs=1",
                               "method.name=local seed=0"]
    assert [c.train.rounds for c in narrowed.configs] == [2, 2, 2]


def test_shipped_smoke_sweep_is_two_methods_by_two_seeds_on_digits():
    sweep = load_sweep("smoke")
    assert len(sweep.configs) == 4 and {c.data.dataset for c in sweep.configs} == {"digits"}
    assert {(c.method.name, c.seed) for c in sweep.configs} == {(m, s) for m in ("fedavg", "local") for s in (0, 1)}


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"train.lrr": [0.1, 0.01]}}, r"train\.lrr: unknown key"),
    ({"grid": {"method.name": ["fedavg", "nosuchmethod"]}}, r"(?s)nosuchmethod.*unknown method"),
    ({"grid": {"seed": []}}, r"grid axis 'seed' has no values"),
    ({"grids": {"seed": [0]}}, r"unknown key\(s\) grids"),
    ({"runs": [{"method.hparams.finetune_epochs": "x"}]}, r"method\.hparams\.finetune_epochs"),
])
def test_bad_sweeps_are_rejected_when_loaded_naming_the_key(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(write_sweep(tmp_path, "bad", **spec))



@pytest.mark.parametrize("text, message", [
    ("grid: {seed: [0, 1]\n", r"bad\.yaml, line 2, column 1: not valid YAML: expected ',' or '}'"),
    ("- seed: 0\n", r"bad\.yaml: the top level must be a mapping"),
])
def test_a_sweep_file_that_is_no_yaml_mapping_is_refused_naming_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)
    with pytest.raises(ConfigError, match=r"'nosuch' is neither a sweep file nor a preset under bench/presets/sweeps/"):
        load_sweep("nosuch")

def test_failed_run_is_reported_the_others_go_on_and_a_rerun_skips_finished(tmp_path, tracking_uri, capsys):
    path = write_sweep(tmp_path, "resume", experiment="resume", grid={"seed": [0]},
                       runs=[{"data.options": {"no_such_option": 1}}])
    assert main(["sweep", path]) == 1  # non-zero: one run failed
    out = capsys.readouterr().out
    assert "1 ran, 0 skipped (already finished), 1 failed" in out
    assert "FAILED seed=0 data.options={'no_such_option': 1}: ValueError: dataset 'digits' takes no option" in out
    client = MlflowClient()
    (finished,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id],
                                     "attributes.status = 'FINISHED'")
    assert finished.data.tags["sweep"] == "resume"
    exp_id = client.get_experiment_by_name("resume").experiment_id
    assert f"MLflow experiment 'resume': http://127.0.0.1:5000/#/experiments/{exp_id}/runs" in out
    (parent,) = client.search_runs([exp_id], "tags.`cafebench.parent` = 'sweep:resume'")
    assert finished.data.tags["mlflow.parentRunId"] == parent.info.run_id and parent.info.status == "FAILED"
    assert parent.info.run_name == "sweep resume"
    assert parent.data.tags["mlflow.note.content"] == ("Sweep **resume**: 2 runs; 1 ran, 0 skipped (already "
                                                       "finished), 1 failed.")

    updates: list[SweepProgress] = []
    again = run_sweep(load_sweep(path), progress=updates.append)
    assert (again.done, again.skipped, again.failed) == (0, 1, 1)
    assert again.run_ids == [finished.info.run_id]
    parents = client.search_runs([exp_id], "tags.`cafebench.parent` = 'sweep:resume'")
    assert [p.info.run_id for p in parents] == [parent.info.run_id]  # the re-run reopened the same parent
    # the bad option is found before a run is created: the failed config left no run, only the sweep's note counts it
    runs = {r.info.run_id for r in client.search_runs([exp_id])}
    assert runs == {finished.info.run_id, parent.info.run_id}
    assert updates[0] == SweepProgress(2, 0, 0, 0, 1, updates[0].elapsed_s)
    assert (updates[-1].failed, updates[-1].running, updates[-1].eta_s) == (1, 0, 0.0)


class InterruptAfter(Callback):
    def __init__(self, round: int):
        self.round = round

    def on_round_end(self, sim, round, metrics):
        if round == self.round:
            raise KeyboardInterrupt


def test_a_rerun_resumes_an_interrupted_run_from_its_checkpoint_as_the_same_run(tmp_path, tracking_uri):
    base = {**tiny_base(tmp_path), "train": {"rounds": 4, "batch_size": 32}}
    base["run"] = {**base["run"], "checkpoint_every": 1, "checkpoint_dir": str(tmp_path / "ckpt")}
    sweep = load_sweep(write_sweep(tmp_path, "interrupted", base=base, grid={"seed": [0, 1]}))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(sweep.configs[0], [InterruptAfter(2)], tags={"sweep": "interrupted"})
    client = MlflowClient()
    (killed,) = client.search_runs([client.get_experiment_by_name("interrupted").experiment_id])
    assert killed.info.status == "KILLED"
    assert killed.data.tags["mlflow.note.content"].endswith("**Stopped** after round 2 of 4: interrupted by the user")

    result = run_sweep(sweep, threads=2)  # the interrupted run resumes with the 1 thread it had: bitwise-identical
    assert (result.done, result.skipped, result.failed) == (2, 0, 0)
    assert result.run_ids[0] == killed.info.run_id
    resumed = client.get_run(killed.info.run_id)
    assert resumed.info.status == "FINISHED" and "Stopped" not in resumed.data.tags["mlflow.note.content"]
    assert "Mean client test accuracy (final)" in resumed.data.tags["mlflow.note.content"]
    assert [m.step for m in client.get_metric_history(killed.info.run_id, "test/acc/mean")] == [1, 2, 3, 4]
    reference = run_experiment(sweep.configs[0].model_copy(update={"run": sweep.configs[0].run.model_copy(
        update={"experiment": "reference"})}))
    assert final_metrics(client, killed.info.run_id) == final_metrics(client, reference.run_id)


def test_a_rerun_resumes_a_run_whose_process_was_killed_outright(tmp_path, tracking_uri):
    base = {**tiny_base(tmp_path), "train": {"rounds": 4, "batch_size": 32}}
    base["run"] = {**base["run"], "checkpoint_every": 1, "checkpoint_dir": str(tmp_path / "ckpt")}
    sweep = load_sweep(write_sweep(tmp_path, "oom", base=base, grid={"seed": [0]}))
    orphan = sigkilled_run(tmp_path, sweep.configs[0].model_dump(mode="json"), kill_round=2, tags={"sweep": "oom"})

    result = run_sweep(sweep, threads=1)
    assert (result.done, result.failed) == (1, 0)
    assert result.run_ids[0] == orphan
    client = MlflowClient()
    run = client.get_run(orphan)
    assert run.info.status == "FINISHED"
    assert "error" not in run.data.tags
    assert run.data.tags["resumed_after"].endswith("ended without closing the run (killed outright, or out of memory)")
    assert [m.step for m in client.get_metric_history(orphan, "test/acc/mean")] == [1, 2, 3, 4]
    reference = run_experiment(sweep.configs[0].model_copy(update={"run": sweep.configs[0].run.model_copy(
        update={"experiment": "reference"})}))
    assert final_metrics(client, orphan) == final_metrics(client, reference.run_id)


def test_two_local_processes_give_the_same_metrics_as_sequential(tmp_path, tracking_uri):
    grid = {"method.name": ["fedavg", "local"]}
    parallel = run_sweep(load_sweep(write_sweep(tmp_path, "parallel", grid=grid)), workers=2, threads=1)
    sequential = run_sweep(load_sweep(write_sweep(tmp_path, "sequential", grid=grid)), workers=1, threads=1)
    assert parallel.done == sequential.done == 2
    client = MlflowClient()
    for a, b in zip(parallel.run_ids, sequential.run_ids, strict=True):
        assert client.get_run(a).data.tags["config_hash"] == client.get_run(b).data.tags["config_hash"]
        metrics = final_metrics(client, a)
        assert metrics["test/acc/mean"] > 0.2 and metrics == final_metrics(client, b)


@pytest.mark.parametrize("name, runs, rounds", [("smoke", 4, 3), ("cpu-rounds", 15, 24), ("review-gaps", 4, 30)])
def test_the_bundled_sweep_presets_load_with_their_documented_runs(name, runs, rounds):
    sweep = load_sweep(name)
    assert len(sweep.configs) == runs and {c.train.rounds for c in sweep.configs} == {rounds}
