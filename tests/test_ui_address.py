"""``cafebench ui`` prints the UI's address only once its port answers, and says clearly when the server ends or never
listens; the links other commands print say how to start the UI on the port they name. A fake server (a Python
process that listens after a delay) stands in for MLflow's, which takes ~20 s to start."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time

import pytest
from helpers import free_port

import bench.cli.ui as ui_module
from bench.cli import main
from bench.cli.ui import port_answers, wait_until_listening
from bench.track.links import run_page_link, ui_command_line, with_ui_hint

LISTEN_DELAY_S = 1.5
SERVE_S = 1.0
# A stand-in for the MLflow server: sys.argv[1] port, sys.argv[2] seconds before it listens, then it serves SERVE_S
# seconds and ends with status 0; sys.argv[2] "exit N": it ends with status N at once instead.
FAKE_SERVER = f"""
import socket, sys, time
if sys.argv[2].startswith("exit"):
    sys.exit(int(sys.argv[2].split()[1]))
time.sleep(float(sys.argv[2]))
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
server.settimeout(0.1)
stop = time.monotonic() + {SERVE_S}
while time.monotonic() < stop:
    try:
        server.accept()[0].close()
    except TimeoutError:
        pass
"""


class AnsweredWhenWritten(io.StringIO):
    """stdout that notes, for each text written (print writes a line and its newline apart), whether the port
    answered at that moment."""

    def __init__(self, port: int):
        super().__init__()
        self.port, self.lines = port, []

    def write(self, text: str) -> int:
        if text.strip():
            self.lines.append((text, port_answers(self.port)))
        return super().write(text)


@pytest.fixture
def fake_server(monkeypatch):
    """Make ``cafebench ui`` start the fake server in ``mode`` instead of MLflow's."""

    def use(mode: str) -> None:
        monkeypatch.setattr(ui_module, "ui_command", lambda uri, port: [sys.executable, "-c", FAKE_SERVER, str(port),
                                                                        mode])

    return use


def test_the_address_is_printed_once_the_port_answers(tracking_uri, fake_server, monkeypatch):
    port = free_port()
    fake_server(str(LISTEN_DELAY_S))
    out = AnsweredWhenWritten(port)
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["ui", "--port", str(port)]) == 0  # the fake server's status, once it ends
    (start, answered_at_start), (address, answered_at_address) = out.lines[:2]
    assert start == f"starting the MLflow UI on port {port} (it takes a few seconds) ..." and not answered_at_start
    assert address.startswith(f"MLflow UI at http://127.0.0.1:{port} (Ctrl-C to stop)") and answered_at_address
    assert not port_answers(port)  # the server has ended with the command


def test_a_server_that_ends_before_it_listens_is_one_line_and_exit_2(tracking_uri, fake_server, capsys):
    port = free_port()
    fake_server("exit 3")
    assert main(["ui", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert "MLflow UI at" not in out
    assert err == (f"cafebench ui: error: the MLflow server ended (exit status 3) before it listened on port {port}; "
                   "its output above says why\n")


def test_a_server_that_never_listens_is_given_up_after_the_timeout():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=rf"^the MLflow server did not listen on port {port} within 1 s"):
            wait_until_listening(server, port, timeout=1.0)
        assert time.monotonic() - started < 10  # a generous bound: the timeout is honoured, not waited past
    finally:
        server.kill()
        server.wait()


def test_a_port_in_use_is_refused_before_a_server_starts(tracking_uri, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    assert capsys.readouterr().err == (f"cafebench ui: error: port {port} is in use (another UI or program listens "
                                       "there); choose a free one with --port PORT\n")


def test_printed_links_say_how_to_start_the_ui_on_their_port(tracking_uri, monkeypatch):
    url = "http://127.0.0.1:5123/#/experiments/1/runs"
    assert with_ui_hint(tracking_uri, url, 5123) == f"{url} (to open it, start the UI: cafebench ui --port 5123)"
    other = "sqlite:///other folder/mlflow.db"  # not the store cafebench ui opens by default: named, quoted
    assert ui_command_line(other, 5123) == "cafebench ui --port 5123 --tracking-uri 'sqlite:///other folder/mlflow.db'"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert ui_command_line("sqlite:///mlflow.db", 5000) == "cafebench ui --port 5000"
    server = "http://tracking.example:5000"  # a tracking server serves its own UI: its address alone
    assert with_ui_hint(server, f"{server}/#/experiments/1/runs", 5123) == f"{server}/#/experiments/1/runs"


def test_run_page_link_names_the_chosen_port(tracking_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.create_run(client.create_experiment("links"))
    run_id, exp_id = run.info.run_id, run.info.experiment_id
    assert run_page_link(tracking_uri, run_id, 5123) == (f"http://127.0.0.1:5123/#/experiments/{exp_id}/runs/{run_id}"
                                                         " (to open it, start the UI: cafebench ui --port 5123)")
