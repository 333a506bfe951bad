"""``cafebench ui`` opened in headless Chromium at the runs-view URL it prints: the experiment's training runs, a
sweep's among them, stand flat in the table with their method, α, seed and test accuracy as columns; the sweep's
parent run and a study's runs are left out. One server start, one page load and one screenshot (kept in
``tests/artifacts/`` for a person to look at); skipped only without Chromium."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_report_browser import ARTIFACTS, CHROMIUM, chromium

from bench.config import apply_overrides, validate_config
from bench.record_names import STUDY_TAG
from bench.track.mlflow_tracker import PARENT_TAG, get_or_create_experiment, open_parent_run
from bench.track.runner import run_experiment
from bench.track.runs_view import VIEW_KEY

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
START_TIMEOUT_S = 180
CAFEBENCH = "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"
WINDOW = (1920, 1000)  # wide enough that the grid renders every selected column


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_printed(pattern: str, server: subprocess.Popen, log: Path) -> str:
    """The first group of ``pattern`` once ``cafebench ui`` has printed it (it prints its addresses only once the
    server answers, so the page is opened at once, as a user would)."""
    deadline = time.time() + START_TIMEOUT_S
    while True:
        found = re.search(pattern, log.read_text(), re.M)
        if found:
            return found.group(1)
        if time.time() > deadline or server.poll() is not None:
            pytest.fail(f"cafebench ui did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def page_cells(page: str) -> list[str]:
    text = re.sub(r"<[^>]+>", "\n", re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S))
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_the_printed_runs_url_opens_the_training_runs_with_method_alpha_and_accuracy(tmp_path, tiny_config_data):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, "browse")
    sweep_parent = open_parent_run(client, exp_id, "sweep:browse", "sweep browse", "the sweep's parent run")
    study = client.create_run(exp_id, run_name="tune browse-study",
                              tags={STUDY_TAG: "browse-study", PARENT_TAG: "study:browse-study"}).info.run_id
    accuracy = {}
    for seed, alpha in ((0, 0.5), (1, 0.3)):
        data = apply_overrides(tiny_config_data, ["train.rounds=1", f"seed={seed}", f"data.alpha={alpha}",
                                                  f"run.tracking_uri={uri}", "run.experiment=browse"])
        run_id = run_experiment(validate_config(data), tags={"mlflow.parentRunId": sweep_parent}).run_id
        metrics = client.get_run(run_id).data.metrics
        assert metrics["acc/test_mean"] == metrics["test/acc/mean"]  # the headline copy, under a name sorted first
        accuracy[f"fedavg-synthetic-a{alpha}-s{seed}"] = metrics["acc/test_mean"]
    for run_id in (sweep_parent, study):
        client.set_terminated(run_id, "FINISHED")
    port, log = free_port(), tmp_path / "ui.log"
    with log.open("w") as out:
        command = [sys.executable, "-c", CAFEBENCH, "ui", "--tracking-uri", uri, "--port", str(port)]
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "ui_runs_screenshot.png"
    shot.unlink(missing_ok=True)
    try:
        url = wait_for_printed(r"^  browse: (http://\S+)$", server, log)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)  # answers once the address is printed
        assert url == f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?viewStateShareKey={VIEW_KEY}"
        window = f"--window-size={WINDOW[0]},{WINDOW[1]}"
        page = chromium(window, "--virtual-time-budget=20000", "--dump-dom", url, profile=tmp_path / "p1").stdout
        chromium(window, "--hide-scrollbars", "--virtual-time-budget=20000", f"--screenshot={shot}", url,
                 profile=tmp_path / "p2")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the UI command and the MLflow server it started
            server.wait(timeout=30)
    cells = page_cells(page)
    print(f"runs-view screenshot: {shot}")
    assert "Training runs" in cells and "Run Name" in cells, cells[:120]
    assert {"acc/test_mean", "acc/val_mean", "method", "alpha", "seed"} <= set(cells), cells[:200]
    assert set(accuracy) <= set(cells)  # the sweep's runs, at the top level
    assert "sweep browse" not in cells and "tune browse-study" not in cells  # parents and studies left out
    assert cells.count("fedavg") == 2 and "0.5" in cells and "0.3" in cells
    for name, value in accuracy.items():  # each run's row: its test accuracy, unrounded
        row = cells[cells.index(name):]
        assert str(value) in row[:12], (value, row[:12])
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == WINDOW
