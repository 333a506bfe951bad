"""Render the report of one MLflow experiment and log it as the artifacts of a report run."""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from bench.record_names import REPORT_THRESHOLD
from bench.report.claims import claim_rows, claims_table, lacking_text
from bench.report.collect import REPORT_TAG, collect_runs, duplicates_note, experiment_id
from bench.report.compare import paired_comparisons, paired_table, tally
from bench.report.context import Context, make_context
from bench.report.figures import (
    accuracy_communication_figure,
    accuracy_macs_figure,
    client_spread_figure,
    convergence_figure,
    per_exit_convergence_figure,
    sensitivity_figure,
    sensitivity_stats,
    varied_mu,
)
from bench.report.render import FigureFile, Section, write_report
from bench.report.tables import (
    ABLATION_METHOD,
    ablation_table,
    chosen_settings_table,
    communication_table,
    convergence_table,
    dynamic_table,
    eval_point_table,
    macs_table,
    main_table,
    per_exit_table,
    seeds_table,
    sensitivity_table,
)
from bench.track.mlflow_tracker import code_version, get_or_create_experiment
from bench.track.mlflow_tracker import tracking_uri as resolve_tracking_uri
from bench.track.run_status import closed_on_exception

log = logging.getLogger(__name__)
REPORTS_ROOT = Path("reports")
REPORTS_SUFFIX = "-reports"


def default_report_dir(experiment: str) -> Path:
    """``reports/EXPERIMENT`` (a ``/`` in the name becomes ``-``)."""
    return REPORTS_ROOT / experiment.replace("/", "-")


def save_figure(fig: Figure, figures_dir: Path, name: str, caption: str) -> FigureFile:
    path = figures_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    return FigureFile(name, caption, path)


def build_sections(ctx: Context, figures_dir: Path, threshold: float = REPORT_THRESHOLD) -> list[Section]:
    """The report's sections, figures saved into ``figures_dir`` on the way."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    comparisons = paired_comparisons(ctx)
    sections = [
        Section("Accuracy", "Each client's personalized model on its own test split, averaged over clients. "
                "Each cell is the grid point's own run of the method (tag role=main; with a tune stage, the "
                "setting its study chose on validation accuracy); ablation variants and runs that fix a tuned "
                "hyperparameter (μ sensitivity) have their own tables and never fill a cell here.",
                [main_table(ctx), per_exit_table(ctx), *filter(None, [eval_point_table(ctx)])]),
        Section("Dynamic inference", "Early exit at the first exit whose top softmax probability reaches the "
                "threshold; costs in multiply-accumulates (MACs) per sample.",
                [dynamic_table(ctx, threshold), macs_table(ctx)],
                [save_figure(accuracy_macs_figure(ctx, threshold), figures_dir, "accuracy_macs",
                             f"Dynamic inference: accuracy against expected MACs as the exit threshold goes from "
                             f"0 to 1, averaged over seeds; dots mark threshold {threshold:g}")]),
        comparison_section(ctx, comparisons, figures_dir),
        claims_section(ctx, comparisons, threshold),
        convergence_section(ctx, figures_dir),
        ablation_section(ctx, figures_dir),
        communication_section(ctx, figures_dir),
    ]
    heatmaps = []
    for (dataset, alpha), source in sorted(ctx.data.heatmaps.items()):
        path = figures_dir / f"partition_{dataset}_alpha{alpha:g}.png"
        shutil.copyfile(source, path)
        heatmaps.append(FigureFile(path.stem, f"Label distribution over clients: {dataset}, α={alpha:g}", path))
    sections.append(Section("Partitions", "Samples of each class (columns) held by each client (rows).",
                            figures=heatmaps))
    sections.append(Section("Runs", tables=[*filter(None, [chosen_settings_table(ctx)]), seeds_table(ctx)]))
    return sections


def left_out_text(left_out: list[str]) -> str:
    """One sentence naming what a section leaves out for want of data, and why; empty when nothing is."""
    return ("Left out: " + "; ".join(left_out) + ".") if left_out else ""


def convergence_section(ctx: Context, figures_dir: Path) -> Section:
    """Accuracy per round: mean over exits, and each exit on its own."""
    figures = [save_figure(convergence_figure(ctx), figures_dir, "convergence",
                           "Mean-over-exits test accuracy per round, averaged over seeds")]
    per_exit = per_exit_convergence_figure(ctx)
    if per_exit is not None:
        figures.append(save_figure(per_exit, figures_dir, "per_exit_convergence", "Test accuracy of each exit "
                                   "per round (columns: exits), averaged over seeds"))
    return Section("Convergence", left_out_text([] if per_exit else [
        "per-exit accuracy per round (the runs logged no per-round test/acc/exit_K history)"]),
        [convergence_table(ctx)], figures)


def ablation_section(ctx: Context, figures_dir: Path) -> Section:
    """CAFEDistill's switch ablation and μ sensitivity, each only where the runs vary what it shows."""
    title = f"{ABLATION_METHOD} ablation and sensitivity"
    ablation = ablation_table(ctx)
    if ablation is None:
        return Section(title, f"No {ABLATION_METHOD} runs.")
    tables, figures, left_out = [], [], []
    if len(ablation.mean.index) > 1:
        tables.append(ablation)
    else:
        left_out.append(f"the ablation table (the {ABLATION_METHOD} runs hold only its default switches; runs of "
                        "a variant, e.g. method.hparams.cross_client=false, fill it)")
    sensitivity = sensitivity_stats(ctx)
    if varied_mu(sensitivity).any():
        tables.append(sensitivity_table(ctx, sensitivity))
        figures.append(save_figure(sensitivity_figure(sensitivity), figures_dir, "mu_sensitivity",
                                   f"{ABLATION_METHOD}: mean-over-exits test accuracy against μ (default switches), "
                                   "with the 95% Student-t interval over seeds"))
    else:
        found = ", ".join(f"{m:g}" for m in sorted(set(sensitivity["mu"]))) or "none"
        left_out.append(f"the μ sensitivity table and figure (values of μ among the runs: {found}; they need runs "
                        "at two or more fixed values of μ in one (dataset, α))")
    return Section(title, left_out_text(left_out), tables, figures)


def communication_section(ctx: Context, figures_dir: Path) -> Section:
    """Bytes per round, and accuracy against the bytes sent so far."""
    figure = accuracy_communication_figure(ctx)
    figures = [] if figure is None else [save_figure(
        figure, figures_dir, "accuracy_communication", "Mean-over-exits test accuracy against the cumulative "
        "communication (uploads + downloads of all clients, MB) at each evaluated round, averaged over seeds")]
    return Section("Communication", left_out_text([] if figure else [
        "accuracy against communication (the runs logged no per-round comm/bytes_* history)"]),
        [communication_table(ctx)], figures)


def comparison_section(ctx: Context, comparisons: pd.DataFrame, figures_dir: Path) -> Section:
    """The paired comparison of ours with every baseline, its wins / ties / losses and the per-client spread."""
    spread = client_spread_figure(ctx)
    figures = [] if spread is None else [save_figure(
        spread, figures_dir, "client_spread", "Per-client test accuracy (mean over the exits each client holds) of "
        "the main-table runs, clients of all seeds pooled: box = quartiles, whiskers = 1.5 IQR")]
    return Section("Paired comparison", tally(comparisons), [paired_table(ctx, comparisons)] if len(comparisons)
                   else [], figures)


def claims_section(ctx: Context, comparisons: pd.DataFrame, threshold: float) -> Section:
    """The paper's claims checked (rows are named with the runs they lack)."""
    rows = claim_rows(ctx, comparisons, threshold)
    return Section("The paper's claims", lacking_text(rows), [claims_table(rows)])


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
