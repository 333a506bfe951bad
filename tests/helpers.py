"""Helpers shared by the tests of sweeps, Ray, tuning and resuming: a seconds-long base config, sweep files, and a
run killed outright; and the tiny test config moved onto a fixed subset of Fashion-MNIST."""

import concurrent.futures as cf
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from bench.config import apply_overrides, validate_config
from bench.fed.federation import Federation, build_federation

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")  # the Debian package dataset-fashion-mnist

SIGKILL_AFTER_ROUND = textwrap.dedent('''
    import json, os, signal, sys
    import yaml
    from bench.config import validate_config
    from bench.fed.engine import Callback
    from bench.track.runner import run_experiment

    class KillAt(Callback):
        def on_round_end(self, sim, round, metrics):
            if round == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    run_experiment(validate_config(yaml.safe_load(open(sys.argv[1]))), [KillAt()], tags=json.loads(sys.argv[3]))
''')


def tiny_base(tmp_path) -> dict:
    """A run of a few seconds on the bundled digits."""
    return {
        "data": {"dataset": "digits", "clients": 3, "alpha": 0.5, "augment": False},
        "model": {"name": "conv3", "width": 0.25},
        "train": {"rounds": 2, "batch_size": 32},
        "eval": {"thresholds": [0.5, 0.9], "report_threshold": 0.9},
        "run": {"checkpoint_every": 0, "cache_dir": str(tmp_path / "cache"), "threads": 1, "device": "cpu"},
    }


def fmnist_config(tiny: dict, *overrides: str) -> dict:
    """The tiny config (``tests/conftest.py``) on real data: a fixed class-balanced 2,400 of Fashion-MNIST's
    images, 10 clients, conv3 at width 0.25, one local epoch, evaluated once at the end (about 5 s a run on one
    CPU thread)."""
    data = apply_overrides(tiny, ["data.clients=10", "model.width=0.25", "train.local_epochs=1",
                                  "run.checkpoint_every=0", *overrides])
    data["data"] = {**data["data"], "dataset": "fmnist", "options": {"num_samples": 2400}, "min_samples": 10}
    data["eval"] = {**data["eval"], "every": data["train"]["rounds"]}
    return data


def write_sweep(tmp_path, name: str, base: dict | None = None, **spec) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": base or tiny_base(tmp_path), **spec}, sort_keys=False))
    return str(path)


def sigkilled_run(tmp_path, data: dict, kill_round: int, tags: dict[str, str] | None = None) -> str:
    """Runs the config in a child process that SIGKILLs itself once round ``kill_round`` is logged; returns the id of
    the run it left RUNNING."""
    path = tmp_path / "sigkilled.yaml"
    path.write_text(yaml.safe_dump(data))
    command = [sys.executable, "-c", SIGKILL_AFTER_ROUND, str(path), str(kill_round), json.dumps(tags or {})]
    proc = subprocess.run(command, env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(data["run"]["experiment"]).experiment_id],
                                "attributes.status = 'RUNNING'")
    return run.info.run_id


def final_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    """A run's last value of each metric, without the timings."""
    return {k: v for k, v in client.get_run(run_id).data.metrics.items() if not k.startswith("time/")}


def run_snapshot(client: MlflowClient, run_id: str) -> tuple:
    """What a refused command must leave as it was: a run's status, end time, tags, every metric's history and its
    artifacts."""
    run = client.get_run(run_id)
    histories = {key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]
                 for key in run.data.metrics}
    artifacts = sorted(f.path for f in client.list_artifacts(run_id))
    return run.info.status, run.info.end_time, run.data.tags, histories, artifacts


def free_port() -> int:
    """A port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def federation(data: dict, *overrides: str) -> Federation:
    """The federation (data, partition, model, method) of config ``data`` with ``key=value`` overrides."""
    return build_federation(validate_config(apply_overrides(data, list(overrides))))


class RecordingLauncher:
    """A sweep launcher that finishes every job at once, recording its kind and the device it was given: a study
    of the tune stage (best train.lr = 0.123) or a run (run id 'rN')."""

    def __init__(self):
        self.jobs: list[tuple[str, str]] = []

    def submit(self, fn, args, threads):
        from bench.sweep.tune_stage import run_study_spec

        future: cf.Future = cf.Future()
        if fn is run_study_spec:
            self.jobs.append(("study", args[0].config["run"]["device"]))
            future.set_result({"train.lr": 0.123})
        else:
            self.jobs.append(("run", args[0]["run"]["device"]))
            future.set_result((f"r{len(self.jobs)}", None))
        return future

    def close(self):
        pass


CLI = "import sys; from bench.cli import main; sys.exit(main())"


def start_sweep(path: str, uri: str, *options: str, new_session: bool = False) -> subprocess.Popen:
    """``cafebench sweep PATH --tracking-uri URI [options]`` started in a child process, its output captured; in a
    session of its own when ``new_session`` (so that a signal sent to it by PID reaches it alone)."""
    return subprocess.Popen([sys.executable, "-c", CLI, "sweep", path, *options, "--tracking-uri", uri],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=new_session,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
