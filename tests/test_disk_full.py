"""A full disk — under the tracking store, the checkpoints or the artifacts — ends a command with one line naming
what could not be written and the space left, exit status 2, no traceback, within seconds, and a store that was on
the full disk left as it was. The disk is a small tmpfs mounted in a mount namespace of the command's own
(``unshare -m``), filled up before the command starts."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from helpers import tiny_base
from mlflow.tracking import MlflowClient

FAIL_FAST_S = 60  # a generous bound for a command that starts, loads PyTorch and MLflow, and gives up at once
DISK_MB = 4

# runs inside the namespace: fills the disk at argv[1], runs the command (argv[3:]), reports what happened
FILL_AND_RUN = textwrap.dedent('''
    import hashlib, json, os, subprocess, sys, time
    disk, store = sys.argv[1], sys.argv[2]
    with open(os.path.join(disk, "filler"), "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"0" * 4096)
        except OSError:
            pass
    def digest():
        return hashlib.sha256(open(store, "rb").read()).hexdigest() if os.path.exists(store) else None
    before, started = digest(), time.monotonic()
    proc = subprocess.run([sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())",
                           *sys.argv[3:]], capture_output=True, text=True)
    print(json.dumps({"rc": proc.returncode, "err": proc.stderr, "seconds": time.monotonic() - started,
                      "before": before, "after": digest()}))
''')


def namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not namespaces_work(), reason="needs unshare -m and mount (root in a container)")


def run_on_full_disk(disk, store, argv: list[str], copy_in: str | None = None) -> dict:
    """Mount the small disk at ``disk`` (with the file ``copy_in`` copied onto it as ``store``), fill it, run the
    command; its exit status, stderr, seconds and the digests of ``store`` before and after."""
    disk.mkdir(exist_ok=True)
    copy = f"cp {copy_in} {store} && " if copy_in else ""
    command = f"mount -t tmpfs -o size={DISK_MB}m tmpfs {disk} && {copy}exec {sys.executable} -c \"$0\" \"$@\""
    proc = subprocess.run(["unshare", "-m", "sh", "-c", command, FILL_AND_RUN, str(disk), str(store), *argv],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_error_line(result: dict, command: str) -> str:
    """The command's one error line (its progress lines aside), after checking its exit status and time."""
    err = result["err"]
    assert "Traceback" not in err and "WARNING" not in err and "ERROR" not in err, err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    line = errors[0][errors[0].index(f"cafebench {command}: error: "):]  # a progress bar may end without a newline
    assert line.startswith(f"cafebench {command}: error: the disk is full: ") and err.endswith(line + "\n"), err
    assert result["rc"] == 2 and result["seconds"] < FAIL_FAST_S, result
    return line


def sweep_file(tmp_path, checkpoint_dir=None) -> str:
    base = tiny_base(tmp_path)
    base["train"]["rounds"] = 1
    if checkpoint_dir is not None:
        base["run"].update(checkpoint_every=1, checkpoint_dir=str(checkpoint_dir))
    path = tmp_path / "full.yaml"
    path.write_text(json.dumps({"base": base, "experiment": "full", "grid": {"seed": [0, 1]}}))
    return str(path)


@pytest.mark.parametrize("command", ["sweep", "run"])
def test_a_store_on_a_full_disk_is_one_line_and_left_as_it_was(command, tmp_path, empty_mlflow_db):
    disk = tmp_path / "disk"
    store = disk / "mlflow.db"
    uri = f"sqlite:///{store}"
    argv = ["sweep", sweep_file(tmp_path)] if command == "sweep" else \
        ["run", "demo", "data.dataset=digits", "data.clients=3", "train.rounds=1", f"run.cache_dir={tmp_path}/c"]
    result = run_on_full_disk(disk, store, [*argv, "--tracking-uri", uri], copy_in=str(empty_mlflow_db))
    line = one_error_line(result, command)
    assert line.endswith(f"{uri} cannot grow (0 B free of 4.0 MiB on {disk}); free some space there or use another "
                         "disk"), line
    assert result["before"] == result["after"] is not None  # the database is byte for byte as it was


def test_checkpoints_on_a_full_disk_are_one_line_and_the_run_is_marked_failed(tmp_path, tracking_uri):
    disk = tmp_path / "disk"
    db = tmp_path / "mlflow.db"
    result = run_on_full_disk(disk, db, ["sweep", sweep_file(tmp_path, checkpoint_dir=disk / "ckpt"),
                                         "--tracking-uri", tracking_uri])
    line = one_error_line(result, "sweep")
    folder = line.split("error: the disk is full: ", 1)[1].split(" ", 1)[0]  # the run's checkpoint folder
    assert folder.startswith(f"{disk / 'ckpt'}/") and line.endswith(f" could not be written (0 B free of 4.0 MiB on "
                                                                   f"{folder})"), line
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id], "tags.config_hash != ''")
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["error"]  # the second not begun


def test_artifacts_on_a_full_disk_are_one_line(tmp_path, tracking_uri):
    disk = tmp_path / "disk"
    client = MlflowClient(tracking_uri)
    client.create_experiment("full", artifact_location=(disk / "artifacts").as_uri())
    db = tmp_path / "mlflow.db"
    result = run_on_full_disk(disk, db, ["sweep", sweep_file(tmp_path), "--tracking-uri", tracking_uri])
    line = one_error_line(result, "sweep")
    assert line.endswith(f"{(disk / 'artifacts').as_uri()} cannot be written (0 B free of 4.0 MiB on "
                         f"{disk / 'artifacts'}); free some space there or use another disk"), line
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id], "tags.config_hash != ''")
    assert run.info.status == "FAILED"
