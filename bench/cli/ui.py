"""``cafebench ui``: the MLflow UI on 127.0.0.1 over the tracking store."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from bench.track.links import all_runs_urls
from bench.track.mlflow_tracker import tracking_uri
from bench.track.store import check_store

STOP_GRACE_S = 3.0  # after SIGTERM, the server's processes get this long before SIGKILL


def ui_command(uri: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI bound to 127.0.0.1")
    p.add_argument("--tracking-uri", help="backend store (default: sqlite:///mlflow.db)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=run)


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
    uri = tracking_uri(args.tracking_uri)
    check_store(uri)
    print(f"MLflow UI at http://127.0.0.1:{args.port} (Ctrl-C to stop); the training runs of each experiment:")
    for name, url in all_runs_urls(uri, args.port).items():
        print(f"  {name}: {url}")
    sys.stdout.flush()  # before the server's own output
    # A process group of its own, so that stopping `cafebench ui` (Ctrl-C, kill) stops all of the server's processes
    server = subprocess.Popen(ui_command(uri, args.port), start_new_session=True)
    try:
        return server.wait()
    finally:
        stop_process_group(server)
