"""``cafebench ui``: the MLflow UI on 127.0.0.1 over the tracking store; its address is printed once it answers."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from bench.cli.tracking import add_tracking_uri_option, checked_store
from bench.defaults import UI_HOST, UI_PORT

STOP_GRACE_S = 3.0  # after SIGTERM, the server's processes get this long before SIGKILL
LISTEN_TIMEOUT_S = 180.0  # the MLflow server takes ~20 s to listen on a busy machine; given up after this long
POLL_S = 0.25  # how often the port is tried while the server starts


def ui_command(uri: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", UI_HOST,
            "--port", str(port), "--workers", "1"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI bound to 127.0.0.1")
    add_tracking_uri_option(p)
    p.add_argument("--port", type=int, default=UI_PORT, help=f"port to serve the UI on (default {UI_PORT})")
    p.set_defaults(func=run)


def add_ui_port_option(p: argparse.ArgumentParser) -> None:
    """``--ui-port``, for a command that prints links into the UI: the port those links name."""
    p.add_argument("--ui-port", type=int, default=UI_PORT,
                   help=f"port of the MLflow UI that the printed links name (default {UI_PORT}; the UI is started "
                        "with cafebench ui --port PORT)")


def port_answers(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((UI_HOST, port), timeout=POLL_S):
            return True
    except OSError:
        return False


def wait_until_listening(server: subprocess.Popen, port: int, timeout: float = LISTEN_TIMEOUT_S) -> None:
    """Return once ``port`` answers; raise RuntimeError if ``server`` ends first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not port_answers(port):
        code = server.poll()
        if code is not None:
            raise RuntimeError(f"the MLflow server ended (exit status {code}) before it listened on port {port}; "
                               "its output above says why")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the MLflow server did not listen on port {port} within {timeout:g} s; its output "
                               "above may say why")
        time.sleep(POLL_S)


def stop_process_group(leader: subprocess.Popen) -> None:
    """End every process of ``leader``'s process group (the MLflow server, its web workers and job runner):
    SIGTERM, then SIGKILL for whatever is left after :data:`STOP_GRACE_S`; returns once the group is gone (or
    after the grace period that follows SIGKILL)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(leader.pid, sig)
        except ProcessLookupError:
            break  # the whole group has ended
        if group_ended(leader, STOP_GRACE_S):
            break
    leader.wait()


def group_ended(leader: subprocess.Popen, timeout: float) -> bool:
    """Whether ``leader``'s process group is empty within ``timeout`` seconds. The leader is reaped on the way: as
    a zombie it would still count as a member of its group."""
    deadline = time.monotonic() + timeout
    while True:
        leader.poll()
        try:
            os.killpg(leader.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def run(args: argparse.Namespace) -> int:
    from bench.track.links import all_runs_urls

    uri = checked_store(args.tracking_uri)
    if port_answers(args.port):
        raise RuntimeError(f"port {args.port} is in use (another UI or program listens there); choose a free one "
                           "with --port PORT")
    urls = all_runs_urls(uri, args.port)
    print(f"starting the MLflow UI on port {args.port} (it takes a few seconds) ...", flush=True)
    # A process group of its own, so that stopping `cafebench ui` (Ctrl-C, kill) stops all of the server's processes
    server = subprocess.Popen(ui_command(uri, args.port), start_new_session=True)
    try:
        wait_until_listening(server, args.port)
        print(f"MLflow UI at http://{UI_HOST}:{args.port} (Ctrl-C to stop); the training runs of each experiment:")
        for name, url in urls.items():
            print(f"  {name}: {url}")
        sys.stdout.flush()
        return server.wait()
    finally:
        stop_process_group(server)
