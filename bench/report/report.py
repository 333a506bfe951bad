"""Render the report of one MLflow experiment and log it as the artifacts of a report run."""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from bench.record_names import REPORT_TAG, REPORT_THRESHOLD
from bench.report.collect import collect_runs, duplicates_note, experiment_id
from bench.report.context import make_context
from bench.report.render import write_report
from bench.report.sections import build_sections
from bench.track.mlflow_tracker import code_version, get_or_create_experiment
from bench.track.mlflow_tracker import tracking_uri as resolve_tracking_uri
from bench.track.run_status import closed_on_exception

log = logging.getLogger(__name__)
REPORTS_ROOT = Path("reports")
REPORTS_SUFFIX = "-reports"


def default_report_dir(experiment: str) -> Path:
    """``reports/EXPERIMENT`` (a ``/`` in the name becomes ``-``)."""
    return REPORTS_ROOT / experiment.replace("/", "-")


def report_experiment(experiment: str) -> str:
    """The experiment that holds the report runs of ``experiment`` (kept out of its list of training runs)."""
    return f"{experiment}{REPORTS_SUFFIX}"


def log_report_run(client: MlflowClient, experiment: str, out_dir: Path) -> str:
    """An MLflow run tagged ``cafebench.report=true`` that holds the report directory of ``experiment``, in the
    experiment :func:`report_experiment` names."""
    experiment_id(client, experiment)  # the experiment reported on must exist
    run = client.create_run(get_or_create_experiment(client, report_experiment(experiment)),
                            run_name=f"report {experiment}", tags={REPORT_TAG: "true"})
    with closed_on_exception(client, run.info.run_id):
        client.log_artifacts(run.info.run_id, str(out_dir))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def provenance(runs: pd.DataFrame) -> str:
    """Which code made the runs, and over what span of time, and which code renders the report."""
    versions = sorted(v for v in set(runs["code_version"]) if v) if "code_version" in runs else []
    made = f"Runs made by code version {', '.join(versions)}" if versions else "Runs made by an unrecorded code version"
    if "end_time" in runs and runs["end_time"].notna().any():
        start, end = runs["start_time"].min(), runs["end_time"].max()
        made += (f" between {utc(start)} and {utc(end)} (the benchmark runs alone span "
                 f"{(end - start) / 3.6e6:.2f} h)")
    return f"{made}; report rendered by code version {code_version()}."


def utc(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def render_report(experiment: str, out_dir: str | Path, tracking_uri: str | None = None,
                  threshold: float = REPORT_THRESHOLD, preamble: str = "") -> Path:
    """Render the report of ``experiment``'s finished runs into ``out_dir`` (report.md, report.html, tables/,
    figures/), log it as a report run in the experiment ``EXPERIMENT-reports``, and return the path of
    ``report.html``.
    ``preamble`` (e.g. the command that made the runs, the machine, the wall time) opens the report."""
    uri = resolve_tracking_uri(tracking_uri)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        data = collect_runs(experiment, Path(tmp), uri)
        ctx = make_context(data)
        if out.exists():
            shutil.rmtree(out / "figures", ignore_errors=True)
            shutil.rmtree(out / "tables", ignore_errors=True)
        sections = build_sections(ctx, out / "figures", threshold)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro = (f"Experiment '{experiment}' ({uri}): {len(ctx.runs)} finished runs of {len(ctx.methods)} methods "
             f"on {len(ctx.columns)} (dataset, α) settings; rendered {stamp}. Accuracies in %, mean ± half-width "
             "of the 95% Student-t interval over seeds (the mean alone where one seed ran); — marks a cell without a "
             "finished run. " + provenance(ctx.runs) + duplicates_note(data))
    if preamble:
        intro = f"{preamble.strip()} {intro}"
    html_path = write_report(out, f"cafebench report: {experiment}", intro, sections)
    run_id = log_report_run(MlflowClient(tracking_uri=uri), experiment, out)
    log.info("report of %s written to %s and logged as run %s", experiment, out, run_id)
    return html_path
