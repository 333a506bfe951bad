"""``cafebench ui``: the MLflow UI on 127.0.0.1 over the tracking store."""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.track.links import all_runs_urls
from bench.track.mlflow_tracker import tracking_uri


def ui_command(uri: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI bound to 127.0.0.1")
    p.add_argument("--tracking-uri", help="backend store (default: sqlite:///mlflow.db)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    uri = tracking_uri(args.tracking_uri)
    cmd = ui_command(uri, args.port)
    print(f"MLflow UI at http://127.0.0.1:{args.port} (Ctrl-C to stop); the training runs of each experiment:")
    for name, url in all_runs_urls(uri, args.port).items():
        print(f"  {name}: {url}")
    sys.stdout.flush()  # before the server's own output
    return subprocess.call(cmd)
