"""``cafebench reproduce quick|cpu|paper``: run a scale's sweep presets (their tune stages first), then render the
report of their experiment(s).

The presets live in ``bench/presets/sweeps/{quick,cpu,paper}/``; runs already FINISHED are skipped, so running the
command again resumes an interrupted reproduction and re-renders the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.tracking import add_tracking_uri_option, checked_store, store_uri, tracking_uri_override
from bench.cli.ui import add_ui_port_option
from bench.config import sweep_preset_names

SCALES = ("quick", "reference", "cpu", "paper")


def scale_presets(scale: str) -> list[str]:
    """The sweep preset names of a scale, e.g. ``cpu/main``, in file-name order."""
    return [name for name in sweep_preset_names() if name.startswith(f"{scale}/")]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run the sweeps behind the paper's tables (cpu or paper scale), then "
                                         "render the report",
                       description="Run every sweep preset of bench/presets/sweeps/SCALE/ (finished runs are "
                                   "skipped) and render the report of each MLflow experiment they write to.")
    p.add_argument("scale", choices=SCALES, help="quick: Fashion-MNIST, five methods, half an hour on 2 cores; "
                                                 "cpu: Fashion-MNIST, every method, overnight on 2 cores; paper: "
                                                 "the paper's datasets and models, for GPUs")
    p.add_argument("overrides", nargs="*", help="key.path=value applied to every sweep (a grid axis is replaced)")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores // workers)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    add_tracking_uri_option(p)
    p.add_argument("--out", type=Path, help="report directory (default: reports/EXPERIMENT; with several "
                                            "experiments, one folder per experiment inside it)")
    p.add_argument("--dry-run", action="store_true", help="list the sweeps and their run counts, run nothing")
    add_ui_port_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.report import default_report_dir, render_report
    from bench.sweep import load_sweep, run_sweep
    from bench.sweep.tune_stage import tune_summary
    from bench.track.links import experiment_runs_link

    presets = scale_presets(args.scale)
    overrides = [*args.overrides, *tracking_uri_override(args)]
    sweeps = [load_sweep(name, overrides) for name in presets]  # validates every config before any run
    experiments = list(dict.fromkeys(s.experiment for s in sweeps))
    checked_store(sweeps[0].configs[0].run.tracking_uri)  # the store every sweep of the scale logs to
    for sweep in sweeps:
        print(f"sweep {sweep.name}: {len(sweep.configs)} runs into MLflow experiment {sweep.experiment!r}"
              + (f", after {tune_summary(sweep)}" if sweep.tune else ""))
    if args.dry_run:
        return 0
    failed = 0
    from bench.cli.progress import SweepStatus

    for sweep in sweeps:
        line = SweepStatus(sweep, store_uri(sweep.configs[0].run.tracking_uri))
        print(line.estimate(), flush=True)
        try:
            result = run_sweep(sweep, args.backend, args.workers, args.address, line, args.threads,
                               run_callbacks=line.callbacks_for(args.backend, args.workers))
        finally:
            line.close()
        failed += result.failed
        for failure in result.failures:
            print(f"  FAILED {failure.label}: {failure.reason}")
    for experiment in experiments:
        if args.out is None:
            out = default_report_dir(experiment)
        else:
            out = args.out if len(experiments) == 1 else args.out / default_report_dir(experiment).name
        path = render_report(experiment, out, args.tracking_uri)
        print(f"report of experiment {experiment!r}: {path}; runs: "
              f"{experiment_runs_link(store_uri(args.tracking_uri), experiment, args.ui_port)}")
    if failed:
        print(f"{failed} runs failed; their cells show as missing. Run the same command again to retry them.")
    return 1 if failed else 0
