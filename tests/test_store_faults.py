"""An unusable tracking store (unreachable server, read-only or corrupted SQLite database) and the UI's stop: each
command gives up fast with one line and exit status 2, and leaves the store as it was."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import free_port

from bench.cli import main

FAIL_FAST_S = 30  # a generous bound: the check gives up after about 15 s at most, a refused port at once


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def one_error_line(err: str, command: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"cafebench {command}: error: "), err
    return err


@pytest.mark.parametrize("argv", [
    ["run", "demo", "data.dataset=digits", "data.clients=3", "train.rounds=1"],
    ["run", "--resume", "0123456789abcdef"],
    ["demo", "data.dataset=digits", "data.clients=3", "train.rounds=1"],
    ["sweep", "smoke"],
    ["reproduce", "quick"],
    ["tune", "fedavg", "demo", "--trials", "1"],
    ["report", "demo"],
    ["ui"],
], ids=lambda argv: "-".join(argv[:2]))
def test_unreachable_server_is_one_line_and_exit_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's setting is respected
    uri = f"http://127.0.0.1:{free_port()}"
    assert main([*argv, "--tracking-uri", uri]) == 2
    err = one_error_line(capsys.readouterr().err, argv[0])
    assert f"tracking server {uri} could not be reached (" in err and "Connection refused; 1 attempt," in err
    assert not list(tmp_path.iterdir())  # no mlflow.db, no checkpoints, no report


def test_unreachable_server_is_given_up_within_the_bound_with_default_retries(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert main(["run", "demo", "--tracking-uri", uri]) == 2
    assert time.monotonic() - started < FAIL_FAST_S
    err = one_error_line(capsys.readouterr().err, "run")
    assert "Connection refused; 3 attempts, 3 s timeout each" in err


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


CAPABILITY_VERSION_3 = 0x20080522
FILE_MODE_OVERRIDES = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


@contextmanager
def unprivileged() -> Iterator[None]:
    """Root ignores file modes: meanwhile this thread drops the two capabilities that let it, so file modes apply to
    it as to any owner, while it can still read the checkout wherever that is (a user such as nobody could not
    enter a clone in a private ``mktemp -d`` folder)."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = CapHeader(CAPABILITY_VERSION_3, 0), (CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    saved = data[0].effective
    data[0].effective = saved & ~FILE_MODE_OVERRIDES
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


@pytest.fixture
def store_folder(tmp_path, empty_mlflow_db) -> Iterator[Path]:
    """A folder holding an MLflow database (writable again afterwards, so that pytest can remove it)."""
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copyfile(empty_mlflow_db, folder / "mlflow.db")
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("read_only", ["folder", "database"])
def test_read_only_sqlite_store_is_one_line_and_exit_2(read_only, store_folder, capsys):
    db = store_folder / "mlflow.db"
    if read_only == "folder":
        store_folder.chmod(0o555)
        expected = f"cannot write in {store_folder} (Permission denied)"
    else:
        store_folder.chmod(0o777)
        db.chmod(0o444)
        expected = f"{db} cannot be written (Permission denied)"
    before = digest(store_folder)
    started = time.monotonic()
    with unprivileged():
        status = main(["run", "demo", "--tracking-uri", f"sqlite:///{db}"])
    assert status == 2 and time.monotonic() - started < FAIL_FAST_S
    assert expected in one_error_line(capsys.readouterr().err, "run")
    assert digest(store_folder) == before


@pytest.mark.parametrize("where", ["header", "middle"])
def test_corrupted_database_is_named_and_left_untouched(where, store_folder, capsys):
    db = store_folder / "mlflow.db"
    raw = bytearray(db.read_bytes())
    offset = 0 if where == "header" else len(raw) // 2
    raw[offset:offset + 4096] = os.urandom(4096)
    db.write_bytes(raw)
    before = digest(store_folder)
    for argv in (["run", "demo"], ["report", "demo"], ["run", "--resume", "0123456789abcdef"], ["demo"],
                 ["reproduce", "quick"]):
        assert main([*argv, "--tracking-uri", f"sqlite:///{db}"]) == 2
        err = one_error_line(capsys.readouterr().err, argv[0])
        assert f"{db} is not a readable MLflow database (" in err and "it was left as it is" in err
    assert digest(store_folder) == before


def test_sqlite_database_of_another_program_is_refused(store_folder, capsys):
    import sqlite3

    other = store_folder / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE studies (id INTEGER)")
    before = digest(store_folder)
    assert main(["run", "demo", "--tracking-uri", f"sqlite:///{other}"]) == 2
    assert "is a SQLite database without MLflow's tables (studies" in capsys.readouterr().err
    assert digest(store_folder) == before


def test_ui_stopped_by_sigterm_stops_the_whole_process_group(tracking_uri):
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())", "ui",
                           "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not port_in_use(port):
            assert ui.poll() is None and time.monotonic() < deadline, ui.stdout.read() if ui.poll() else "no UI"
            time.sleep(0.5)
        (server,) = map(int, Path(f"/proc/{ui.pid}/task/{ui.pid}/children").read_text().split())
        assert os.getpgid(server) == server  # the server leads a process group of its own
        stopped = time.monotonic()
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=FAIL_FAST_S) == 128 + signal.SIGTERM
        assert time.monotonic() - stopped < 10
    finally:
        ui.kill()
        ui.wait()
    # no process of the server's group is left, not the web worker, not the job runner, once the init process has
    # reaped the orphans that SIGKILL left (not this test's children, so reaped by init, at its own pace)
    deadline = time.monotonic() + 5
    while group_alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.killpg(server, 0)
    assert not port_in_use(port)
