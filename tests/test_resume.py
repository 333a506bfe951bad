"""Checkpoint and resume: a SIGKILLed run continues to exactly the metrics of an uninterrupted one; a SIGTERMed
one is marked KILLED and resumes the same way."""

import os
import re
import subprocess
import sys
import textwrap

import pytest
import yaml
from helpers import final_metrics, run_snapshot, sigkilled_run
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.config import apply_overrides, validate_config
from bench.track.checkpoint import CheckpointError, list_checkpoints, load_checkpoint_file
from bench.track.runner import resume_experiment, run_experiment

TERMINATED_CLI = textwrap.dedent('''
    import os, signal, sys
    from bench.cli import main
    from bench.fed.engine import Simulation

    run_round = Simulation.run_round

    def run_round_then_term(self, executor, round):
        metrics = run_round(self, executor, round)
        if round + 1 == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    Simulation.run_round = run_round_then_term
    sys.exit(main(["run", sys.argv[1]]))
''')


@pytest.fixture
def resumable(tiny_config_data):
    return apply_overrides(tiny_config_data, ["train.rounds=5", "run.checkpoint_every=2", "method.name=local"])


def test_sigkilled_run_resumes_to_identical_metrics(tracking_uri, tmp_path, resumable, capsys):
    reference = run_experiment(validate_config(resumable))
    killed = apply_overrides(resumable, ["run.experiment=killed"])
    run_id = sigkilled_run(tmp_path, killed, kill_round=3)  # checkpoint at round 2, round 3 logged then killed
    resume_experiment(run_id)
    client = MlflowClient()
    assert client.get_run(run_id).info.status == "FINISHED"
    assert re.fullmatch(r"process \d+ on .+ ended without closing the run \(killed outright, or out of memory\)",
                        client.get_run(run_id).data.tags["resumed_after"])
    finished = run_snapshot(client, run_id)
    assert main(["run", "--resume", run_id]) == 2  # a FINISHED run is not run again
    assert f"run {run_id} has FINISHED; there is nothing to resume" in capsys.readouterr().err
    assert run_snapshot(client, run_id) == finished
    assert final_metrics(client, run_id) == final_metrics(client, reference.run_id)
    steps = [m.step for m in client.get_metric_history(run_id, "test/acc/mean")]
    assert steps == [1, 2, 3, 4, 5]  # no duplicated and no missing steps
    ref_values = [m.value for m in client.get_metric_history(reference.run_id, "test/acc/mean")]
    assert [m.value for m in client.get_metric_history(run_id, "test/acc/mean")] == ref_values


def test_truncated_checkpoint_is_reported_and_the_previous_one_is_used(tracking_uri, tmp_path, resumable):
    data = apply_overrides(resumable, ["run.checkpoint_every=1", "run.experiment=killed"])
    reference = run_experiment(validate_config(apply_overrides(data, ["run.experiment=reference"])))
    run_id = sigkilled_run(tmp_path, data, kill_round=3)
    directory = tmp_path / "ckpt" / run_id
    newest = list_checkpoints(directory)[-1]
    assert newest.name == "round_000003.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="round_000003.pt is unreadable"):
        load_checkpoint_file(newest, validate_config(data).content_hash())
    resume_experiment(run_id)
    client = MlflowClient()
    assert final_metrics(client, run_id) == final_metrics(client, reference.run_id)
    assert [m.step for m in client.get_metric_history(run_id, "test/acc/mean")] == [1, 2, 3, 4, 5]


def test_resume_without_checkpoints_says_why(tracking_uri, tmp_path, resumable):
    data = apply_overrides(resumable, ["run.checkpoint_every=0", "run.experiment=killed"])
    run_id = sigkilled_run(tmp_path, data, kill_round=2)
    before = run_snapshot(MlflowClient(), run_id)
    with pytest.raises(CheckpointError, match="no checkpoint in .*checkpoint_every 0"):
        resume_experiment(run_id)
    assert run_snapshot(MlflowClient(), run_id) == before  # a refused resume writes nothing: still RUNNING
    assert before[0] == "RUNNING" and "error" not in before[2]


def test_sigtermed_cli_run_is_marked_killed_and_resumes_to_identical_metrics(tracking_uri, tmp_path, resumable):
    reference = run_experiment(validate_config(resumable))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(resumable, ["run.experiment=terminated"])))
    proc = subprocess.run([sys.executable, "-c", TERMINATED_CLI, str(path), "3"], env=os.environ.copy(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert "terminated by SIGTERM" in proc.stderr
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("terminated").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["error"] == "terminated by SIGTERM"
    resume_experiment(run.info.run_id)
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert "error" not in resumed.data.tags and resumed.data.tags["resumed_after"] == "terminated by SIGTERM"
    assert final_metrics(client, run.info.run_id) == final_metrics(client, reference.run_id)
