"""``cafebench tune METHOD PRESET --trials N [--storage URL] [--study NAME] [key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.tracking import add_tracking_uri_option, checked_store, tracking_uri_override
from bench.cli.ui import add_ui_port_option
from bench.config import load_config
from bench.defaults import DEFAULT_STORAGE
from bench.record_names import OBJECTIVE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune a method's hyperparameters with Optuna on validation accuracy",
                       description=f"An Optuna study (seeded TPE per candidate, median pruning) over the method's "
                                   f"declared hyperparameter ranges, maximizing the final {OBJECTIVE}. Each trial is a "
                                   f"child MLflow run; the best configuration is written as a preset.")
    p.add_argument("method", help="method name (see `cafebench methods` for the tunable ranges); a plugin's method "
                                  "needs plugins='[FILE.py]' among the overrides")
    p.add_argument("preset", help="experiment preset name or config file")
    p.add_argument("overrides", nargs="*",
                   help="key.path=value overrides; method.hparams.X=V holds X fixed instead of tuning it")
    p.add_argument("--trials", type=int, required=True,
                   help="finished trials the study should hold (running again continues the study)")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL, shared by workers on several machines (default {DEFAULT_STORAGE})")
    p.add_argument("--study", help="study name (default: method, preset and config hash)")
    p.add_argument("--output", type=Path, help="where to write the best preset (default tuned/<study>.yaml)")
    add_tracking_uri_option(p)
    add_ui_port_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = [*args.overrides, *tracking_uri_override(args)]
    config = load_config(args.preset, [*overrides, f"method.name={args.method}"])
    # imported once the config is checked, so that a config error answers without loading PyTorch, MLflow and Optuna
    from bench.track.links import run_page_link
    from bench.tune import tune

    uri = checked_store(config.run.tracking_uri)
    result = tune(args.method, args.preset, args.trials, overrides, storage=args.storage,
                  study_name=args.study, output=args.output)
    parent = run_page_link(uri, result.parent_run_id, args.ui_port)
    print(f"study {result.study_name}: {result.completed} completed, {result.pruned} pruned trials "
          f"(parent MLflow run {result.parent_run_id}, the trials nested beneath it: {parent})")
    print(f"best {OBJECTIVE} = {result.best_value:.4f} with "
          + ", ".join(f"{k}={v!r}" for k, v in result.best_params.items()))
    print(f"best configuration written to {result.preset_path} (its seed, {result.tuning_seed}, is the one it was "
          f"tuned on); test it on another seed:  {result.test_command}")
    return 0
