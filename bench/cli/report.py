"""``cafebench report EXPERIMENT [--out DIR] [--tracking-uri URI]``: the paper's tables and figures from runs."""

from __future__ import annotations

import argparse

from bench.cli.tracking import add_tracking_uri_option, checked_store
from bench.cli.ui import add_ui_port_option
from bench.record_names import REPORT_THRESHOLD


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render an MLflow experiment's tables and figures (Markdown, HTML, CSV, LaTeX)",
                       description="Render the report of an experiment's FINISHED runs: report.md, a "
                                   "self-contained report.html, tables/*.csv|.tex and figures/*.png; the report "
                                   "is also logged as a run tagged cafebench.report=true in the same experiment.")
    p.add_argument("experiment", help="MLflow experiment name (e.g. demo, reproduce-cpu)")
    p.add_argument("--out", help="output directory (default: reports/EXPERIMENT)")
    add_tracking_uri_option(p)
    p.add_argument("--threshold", type=float, default=REPORT_THRESHOLD,
                   help=f"exit threshold of the dynamic-inference table (default {REPORT_THRESHOLD:g}; must be "
                        "one of the runs' eval.thresholds)")
    p.add_argument("--preamble", default="",
                   help="text that opens the report, e.g. the command that made the runs, the machine and its wall "
                        "time")
    add_ui_port_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.report import default_report_dir, render_report
    from bench.track.links import experiment_runs_link

    uri = checked_store(args.tracking_uri)
    path = render_report(args.experiment, args.out or default_report_dir(args.experiment), args.tracking_uri,
                         args.threshold, args.preamble)
    print(f"report of experiment {args.experiment!r}: {path} (and report.md, tables/, figures/ beside it)")
    print(f"its runs: {experiment_runs_link(uri, args.experiment, args.ui_port)}")
    return 0
