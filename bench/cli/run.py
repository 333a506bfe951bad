"""``cafebench run CONFIG [key=value ...]`` and ``cafebench run --resume RUN_ID``."""

from __future__ import annotations

import argparse

from bench.cli.tracking import add_tracking_uri_option, checked_store, tracking_uri_override
from bench.cli.ui import add_ui_port_option
from bench.config import load_config
from bench.record_names import TEST_ACCURACY, exit_accuracy, exits_logged


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run one experiment (a config file or preset) as one MLflow run")
    p.add_argument("config", nargs="?", help="YAML config file or preset name (see `cafebench methods` for methods)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.rounds=5 method.name=local")
    p.add_argument("--resume", metavar="RUN_ID", help="continue this MLflow run from its last checkpoint")
    add_tracking_uri_option(p)
    add_ui_port_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.resume and (args.config or args.overrides):
        raise ValueError("--resume takes the config from the run; do not pass a config or overrides as well")
    if not args.resume and not args.config:
        raise ValueError("give a config file or preset name, or --resume RUN_ID")
    config = None
    if not args.resume:
        config = load_config(args.config, [*args.overrides, *tracking_uri_override(args)])
    # imported once the config is checked, so that a config error answers without loading PyTorch and MLflow
    from bench.cli.estimate import run_estimate
    from bench.cli.progress import ProgressBar
    from bench.track.links import run_page_link
    from bench.track.runner import resume_experiment, run_experiment

    uri = checked_store(args.tracking_uri if config is None else config.run.tracking_uri)
    if config is None:
        result = resume_experiment(args.resume, args.tracking_uri, [ProgressBar("resume")])
    else:
        print(run_estimate(config), flush=True)
        result = run_experiment(config, [ProgressBar(config.method.name)])
    metrics = result.evaluation.metrics
    print(f"run {result.run_id} finished: {run_page_link(uri, result.run_id, args.ui_port)}")
    print("  " + "  ".join(f"exit_{k}={metrics[exit_accuracy(k)]:.4f}" for k in exits_logged(metrics))
          + f"  mean={metrics[TEST_ACCURACY]:.4f}")
    return 0
