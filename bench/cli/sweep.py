"""``cafebench sweep PRESET [key=value ...] [--backend local --workers N | --backend ray --address ADDR]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.tracking import add_tracking_uri_option, checked_store, store_uri, tracking_uri_override
from bench.cli.ui import add_ui_port_option
from bench.config import ConfigError, did_you_mean, preset_names, sweep_preset_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of experiments (a sweep preset); finished runs are skipped",
                       description="Run every experiment of a sweep preset (the format: bench/sweep/__init__.py). "
                                   "Runs already FINISHED in the sweep's MLflow experiment are skipped, so "
                                   "running the same command again resumes an interrupted sweep.")
    p.add_argument("preset", help="sweep preset name (e.g. smoke) or YAML file")
    p.add_argument("overrides", nargs="*",
                   help="key.path=value: changes the base config, or replaces a grid axis (e.g. seed=[0,1,2])")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local processes on this machine, or Ray tasks on a cluster")
    p.add_argument("--workers", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: local cores // workers; on Ray: run.threads)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="GPUs each run asks Ray for (default: 1 where the cluster has GPUs; 0.25 packs four runs on "
                        "one GPU). Locally each worker gets its own GPU, round-robin")
    add_tracking_uri_option(p)
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    add_ui_port_option(p)
    p.set_defaults(func=run)


def require_sweep_preset(source: str) -> None:
    """Refuse a name that is neither a file nor a shipped preset, naming the closest sweep preset."""
    if Path(source).suffix in (".yaml", ".yml") or Path(source).is_file():
        return  # a file: load_sweep reads it, or says it is missing
    sweeps = sweep_preset_names()
    if source not in sweeps and source not in preset_names():
        raise ConfigError(f"{source!r} is neither a sweep file nor a sweep preset{did_you_mean(source, sweeps)} "
                          f"(sweep presets: {', '.join(sweeps)})")


def run(args: argparse.Namespace) -> int:
    overrides = [*args.overrides, *tracking_uri_override(args)]
    require_sweep_preset(args.preset)
    # imported once the preset is known, so that a mistyped name answers without loading PyTorch, MLflow and Optuna
    from bench.cli.progress import SweepStatus
    from bench.sweep import load_sweep, run_sweep, summary
    from bench.sweep.tune_stage import tune_summary
    from bench.track.links import experiment_runs_link

    sweep = load_sweep(args.preset, overrides)
    uri = store_uri(sweep.configs[0].run.tracking_uri)  # the store the whole sweep logs to
    line = SweepStatus(sweep, uri)
    estimate = line.estimate() + (f"; first, {tune_summary(sweep)}" if sweep.tune else "")
    if args.dry_run:
        print(f"sweep {sweep.name}: {len(sweep.configs)} runs into MLflow experiment {sweep.experiment!r}"
              + (f", after {tune_summary(sweep)}" if sweep.tune else ""))
        for config, label in zip(sweep.configs, sweep.labels, strict=True):
            print(f"  {config.content_hash()}  {label}")
        print(estimate)
        return 0
    checked_store(uri)
    print(estimate, flush=True)
    try:
        result = run_sweep(sweep, args.backend, args.workers, args.address, line, args.threads, args.gpus_per_run,
                           run_callbacks=line.callbacks_for(args.backend, args.workers))
    finally:
        line.close()
    print(f"sweep {sweep.name}: {summary(result)}; MLflow experiment {sweep.experiment!r}: "
          f"{experiment_runs_link(uri, sweep.experiment, args.ui_port)}")
    for failure in result.failures:
        print(f"  FAILED {failure.label}: {failure.reason}")
    return 1 if result.failed else 0
