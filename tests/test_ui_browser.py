"""``cafebench ui`` opened in headless Chromium at the runs-view URL it prints: the experiment's training-runs table
lists the runs with their dataset. One server start, one page load; skipped only without Chromium."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_report_browser import CHROMIUM, chromium

from bench.config import apply_overrides, validate_config
from bench.track.runner import run_experiment

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
START_TIMEOUT_S = 180
CAFEBENCH = "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                pytest.fail(f"cafebench ui did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)


def test_the_printed_runs_url_opens_the_training_runs_table(tmp_path, tiny_config_data):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    names, digests = [], []
    client = MlflowClient(uri)
    for seed in (0, 1):
        data = apply_overrides(tiny_config_data, ["train.rounds=1", f"seed={seed}", f"run.tracking_uri={uri}",
                                                  "run.experiment=browse", f"run.run_name=browse-run-{seed}"])
        run_id = run_experiment(validate_config(data)).run_id
        digests.append(client.get_run(run_id).data.tags["partition_hash"])
        names.append(f"browse-run-{seed}")
    port, log = free_port(), tmp_path / "ui.log"
    with log.open("w") as out:
        command = [sys.executable, "-c", CAFEBENCH, "ui", "--tracking-uri", uri, "--port", str(port)]
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server, log)
        found = re.search(r"^  browse: (http://\S+)$", log.read_text(), re.M)
        assert found, log.read_text()[-2000:]
        url = found.group(1)
        assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/#/experiments/\d+/runs", url)
        page = chromium("--virtual-time-budget=15000", "--dump-dom", url, profile=tmp_path / "profile").stdout
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the UI command and the MLflow server it started
            server.wait(timeout=30)
    text = re.sub(r"<[^>]+>", "\n", re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S))
    cells = [line.strip() for line in text.splitlines() if line.strip()]
    assert "Training runs" in cells and "Run Name" in cells and "Dataset" in cells, cells[:80]
    assert set(names) <= set(cells)
    for digest in digests:  # the Dataset column: each run's dataset input, with its context
        assert f"synthetic ({digest})" in cells
    assert cells.count("4 clients, alpha=0.5") == 2
