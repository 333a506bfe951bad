"""``cafebench demo``: the first thing a new user runs — a few methods on real data, tracked in MLflow."""

from __future__ import annotations

import argparse
import time

from bench.cli.tracking import add_tracking_uri_option, checked_store, tracking_uri_override
from bench.cli.ui import add_ui_port_option
from bench.config import load_config
from bench.record_names import TEST_ACCURACY, exit_accuracy, exits_logged

DEMO_METHODS = ("cafedistill", "fedavg", "local")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="CAFEDistill against a few baselines on Fashion-MNIST, tracked in MLflow")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides of the demo preset")
    p.add_argument("--methods", nargs="+", default=None, help=f"methods to compare (default: {DEMO_METHODS})")
    add_tracking_uri_option(p)
    add_ui_port_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.methods.registry import available_methods

    known = available_methods()
    methods = args.methods or [m for m in DEMO_METHODS if m in known]
    overrides = [*args.overrides, *tracking_uri_override(args)]
    configs = [load_config("demo", [*overrides, f"method.name={name}"]) for name in methods]
    # imported once the configs are checked, so that a config error answers without loading MLflow
    from bench.cli.progress import ProgressBar
    from bench.report import default_report_dir, render_report
    from bench.track.links import experiment_runs_link
    from bench.track.runner import run_experiment

    uri = checked_store(configs[0].run.tracking_uri)  # the demo's runs share it: one config, a method apiece
    started = time.perf_counter()
    rows = []
    for name, config in zip(methods, configs, strict=True):
        result = run_experiment(config, [ProgressBar(name)])
        metrics = result.evaluation.metrics
        exits = [metrics[exit_accuracy(k)] for k in exits_logged(metrics)]
        rows.append((name, exits, metrics[TEST_ACCURACY], result.run_id))
    print(f"\nmean client test accuracy per exit ({config.data.dataset}, {config.data.clients} clients, "
          f"alpha={config.data.alpha}, {config.model.name}, {config.train.rounds} rounds):")
    for name, exits, mean, run_id in rows:
        print(f"  {name:12s} " + " ".join(f"{a:.4f}" for a in exits) + f"   mean {mean:.4f}   run {run_id}")
    report = render_report(config.run.experiment, default_report_dir(config.run.experiment), config.run.tracking_uri)
    print(f"report: {report}")
    runs = experiment_runs_link(uri, config.run.experiment, args.ui_port)
    print(f"done in {time.perf_counter() - started:.0f} s; the runs: {runs}")
    return 0
