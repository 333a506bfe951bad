"""Run owners: a RUNNING run whose process has died is told from one still going, closed, and can be resumed; one
still going is not reopened by a second process."""

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.config import validate_config
from bench.record_names import OWNER_TAG
from bench.track.mlflow_tracker import MlflowTracker, RunInUseError, get_or_create_experiment
from bench.track.owner import owner_alive, this_process
from bench.track.prior_runs import close_orphaned_runs


def ended_process_owner() -> str:
    child = subprocess.run([sys.executable, "-c", "from bench.track.owner import this_process; print(this_process())"],
                           capture_output=True, text=True, check=True, timeout=60)
    return child.stdout.strip()


def with_fields(owner: str, **fields) -> str:
    return json.dumps({**json.loads(owner), **fields})


def test_this_process_is_alive_and_an_ended_one_is_not():
    assert owner_alive(this_process()) is True
    assert owner_alive(ended_process_owner()) is False


def test_a_reused_process_id_or_a_reboot_means_the_owner_ended():
    me = this_process()
    assert owner_alive(with_fields(me, start=json.loads(me)["start"] + 1)) is False  # same pid, another process
    assert owner_alive(with_fields(me, boot="00000000-0000-0000-0000-000000000000")) is False


@pytest.mark.parametrize("owner", [None, "", "not json", '{"host": "x"}', "[1, 2]"])
def test_an_owner_that_cannot_be_read_is_unknown(owner):
    assert owner_alive(owner) is None


def test_an_owner_on_another_host_is_unknown():
    assert owner_alive(with_fields(ended_process_owner(), host="another-machine.example")) is None


def test_only_runs_whose_process_ended_are_closed(tracking_uri):
    client = MlflowClient()
    experiment_id = get_or_create_experiment(client, "owners")
    dead, elsewhere = ended_process_owner(), with_fields(this_process(), host="another-machine.example")
    owners = {"dead": dead, "alive": this_process(), "elsewhere": elsewhere, "untagged": None}
    runs = {name: client.create_run(experiment_id, run_name=name, tags={OWNER_TAG: owner} if owner else {})
            for name, owner in owners.items()}

    assert close_orphaned_runs(client, experiment_id) == [runs["dead"].info.run_id]
    closed = client.get_run(runs["dead"].info.run_id)
    pid = json.loads(dead)["pid"]
    assert closed.info.status == "KILLED"
    assert closed.data.tags["error"].startswith(f"process {pid} on ")
    assert [client.get_run(runs[name].info.run_id).info.status for name in ("alive", "elsewhere", "untagged")] == \
        ["RUNNING"] * 3


def test_a_run_still_going_is_not_resumed_by_a_second_process(tracking_uri, tiny_config_data, capsys):
    config = validate_config(tiny_config_data)
    running = MlflowTracker(config)  # RUNNING, owned by this (live) process
    with pytest.raises(RunInUseError, match=f"run {running.run_id} is still running in process"):
        MlflowTracker(config, run_id=running.run_id)
    assert main(["run", "--resume", running.run_id]) == 2
    assert "stop that process (Ctrl-C or kill) before resuming the run" in capsys.readouterr().err
    running.kill("test over")
    assert MlflowTracker(config, run_id=running.run_id).run_id == running.run_id  # a KILLED run reopens
