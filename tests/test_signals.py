"""Stop signals sent by PID: a sweep in its tune stage, sent SIGTERM and then SIGINT, stops within the bound with its
worker processes, its runs KILLED and its trials FAILED; running it again gives every study exactly its budget, the
stopped trials re-run with the same parameters. SIGTERM to one worker alone fails its study loudly, never silently."""

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import optuna
from helpers import start_sweep, tiny_base, write_sweep
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.cli import main

STOP_BOUND_S = 20  # the bound from the first signal to the last process gone
TRIALS = 2


def tuned_sweep(tmp_path) -> tuple[str, str]:
    base = tiny_base(tmp_path)
    base["train"]["rounds"] = 25  # seconds per trial: long enough to be caught running
    base["eval"]["every"] = 25
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = write_sweep(tmp_path, "stopped", base, experiment="stopped",
                       grid={"method.name": ["fedprox", "local"], "seed": [0]},
                       tune={"trials": TRIALS, "seeds": [7], "storage": storage,
                             "ranges": {"train.lr": {"low": 0.01, "high": 0.2, "log": True}}})
    return path, storage


@contextmanager
def tuned_sweep_running(tmp_path) -> Iterator[tuple[subprocess.Popen, str, str, str]]:
    """:func:`tuned_sweep` started on two workers in a session of its own: (its process, the sweep file, the study
    storage, the tracking URI); killed and waited for on the way out, whatever the test did to it."""
    path, storage = tuned_sweep(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = start_sweep(path, uri, "--workers", "2", new_session=True)
    try:
        yield sweep, path, storage, uri
    finally:
        sweep.kill()
        sweep.wait()


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            continue
        for child in children:
            found |= {child, *descendants(child)}
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def running_trial_owners(db: Path) -> list[int]:
    """The process ids that own the study storage's RUNNING trials."""
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            rows = con.execute("SELECT a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = "
                               "t.trial_id WHERE t.state = 'RUNNING' AND a.key = 'owner'").fetchall()
    except sqlite3.OperationalError:  # the tables are not there yet
        return []
    return [json.loads(json.loads(value))["pid"] for (value,) in rows]


def wait_for_running_trials(sweep: subprocess.Popen, db: Path, count: int) -> list[int]:
    deadline = time.monotonic() + 300
    while len(owners := running_trial_owners(db)) < count:
        assert sweep.poll() is None, sweep.communicate()
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.2)
    return owners


def wait_for_running_trial_runs(sweep: subprocess.Popen, uri: str, count: int) -> None:
    """Until ``count`` trials' MLflow runs are RUNNING (training, past their data and model set-up)."""
    client, deadline = MlflowClient(uri), time.monotonic() + 300
    while True:
        exp = client.get_experiment_by_name("stopped")
        if exp and len(client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and "
                                                               "tags.optuna_trial != ''")) >= count:
            return
        assert sweep.poll() is None, sweep.communicate()
        assert time.monotonic() < deadline, "no trial run started"
        time.sleep(0.2)


def studies(storage: str) -> list[optuna.Study]:
    return [optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)]


def assert_every_study_has_its_budget_and_rerun_the_stopped_candidates(storage: str) -> None:
    stopped = 0
    for study in studies(storage):
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == TRIALS and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.FAIL}
        assert sorted(t.user_attrs["candidate"] for t in complete) == list(range(TRIALS))
        for failed in (t for t in trials if t.state == TrialState.FAIL):  # re-run with the same values
            (again,) = [t for t in complete if t.user_attrs["candidate"] == failed.user_attrs["candidate"]]
            assert again.params == failed.params and again.number > failed.number
            stopped += 1
    assert stopped >= 1


def test_sigterm_then_sigint_stops_a_tuning_sweep_and_its_workers_and_a_rerun_finishes_it(tmp_path, monkeypatch,
                                                                                          capsys):
    with tuned_sweep_running(tmp_path) as (sweep, path, storage, uri):
        workers = set(wait_for_running_trials(sweep, tmp_path / "optuna.db", 2))
        wait_for_running_trial_runs(sweep, uri, 2)
        processes = descendants(sweep.pid)
        assert workers <= processes and len(workers) == 2
        stopped = time.monotonic()
        os.kill(sweep.pid, signal.SIGTERM)
        time.sleep(1)
        os.kill(sweep.pid, signal.SIGINT)
        _, err = sweep.communicate(timeout=STOP_BOUND_S)
        while any(alive(pid) for pid in processes) and time.monotonic() - stopped < STOP_BOUND_S:
            time.sleep(0.1)
        assert time.monotonic() - stopped < STOP_BOUND_S
    assert sweep.returncode == 128 + signal.SIGTERM
    # its last line says why (the only one where it stops before its status line's first update)
    assert err.splitlines()[-1] == "terminated by SIGTERM" and "Traceback" not in err, err
    assert not [pid for pid in processes if alive(pid)]  # the workers and the resource tracker are gone
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("stopped").experiment_id
    assert not client.search_runs([exp], "attributes.status = 'RUNNING'")
    killed = client.search_runs([exp], "attributes.status = 'KILLED' and tags.optuna_trial != ''")
    assert len(killed) == 2  # the two trials running when it was stopped
    (parent,) = client.search_runs([exp], "tags.`cafebench.parent` = 'sweep:stopped'")
    assert parent.info.status == "KILLED"
    for study in studies(storage):
        assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < TRIALS

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["sweep", path, "--workers", "2"]) == 0
    assert "2 ran, 0 skipped (already finished), 0 failed" in capsys.readouterr().out
    assert_every_study_has_its_budget_and_rerun_the_stopped_candidates(storage)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_sigterm_to_one_worker_fails_its_study_loudly_and_a_rerun_gives_it_its_budget(tmp_path, monkeypatch,
                                                                                      capsys):
    with tuned_sweep_running(tmp_path) as (sweep, path, storage, uri):
        worker = wait_for_running_trials(sweep, tmp_path / "optuna.db", 1)[0]
        os.kill(worker, signal.SIGTERM)
        out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 2
    last = err.splitlines()[-1]
    assert "Traceback" not in err and last.startswith("cafebench sweep: error: the tune stage of sweep stopped: 1 of "
                                                      "2 studies failed: stopped/"), err
    assert last.endswith("(Terminated: terminated by SIGTERM). The finished trials are kept in the study storage; "
                         "run the same command again to go on")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("stopped").experiment_id
    assert not client.search_runs([exp], "attributes.status = 'RUNNING'")
    test_runs = [r for r in client.search_runs([exp]) if "config_hash" in r.data.tags and
                 "optuna_study" not in r.data.tags]
    assert not test_runs  # no test run started with the parameters of a study short of its budget

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["sweep", path, "--workers", "2"]) == 0
    assert "2 ran, 0 skipped (already finished), 0 failed" in capsys.readouterr().out
    assert_every_study_has_its_budget_and_rerun_the_stopped_candidates(storage)
