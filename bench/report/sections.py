"""What the report holds: its sections, in :data:`SECTIONS` order, each built from the experiment's runs by one
function. To add a section (or a table to one), write its function and list it in :data:`SECTIONS`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from bench.record_names import REPORT_THRESHOLD
from bench.report.claims import claim_rows, claims_table, lacking_text
from bench.report.compare import paired_comparisons, paired_table, tally
from bench.report.context import OURS, Context
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
from bench.report.render import FigureFile, Section
from bench.report.selection import MU, switch_example
from bench.report.tables import (
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


@dataclass
class SectionInputs:
    """What a section is built from: the runs, where its figures go, the report's exit threshold, and the paired
    comparisons of the method under test (computed once, read by two sections)."""

    ctx: Context
    figures_dir: Path
    threshold: float
    comparisons: pd.DataFrame


def save_figure(fig: Figure, figures_dir: Path, name: str, caption: str) -> FigureFile:
    path = figures_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    return FigureFile(name, caption, path)


def left_out_text(left_out: list[str]) -> str:
    """One sentence naming what a section leaves out for want of data, and why; empty when nothing is."""
    return ("Left out: " + "; ".join(left_out) + ".") if left_out else ""


def accuracy_section(inputs: SectionInputs) -> Section:
    ctx = inputs.ctx
    return Section("Accuracy", "Each client's personalized model on its own test split, averaged over clients. "
                   "Each cell is the grid point's own run of the method (tag role=main; with a tune stage, the "
                   "setting its study chose on validation accuracy); ablation variants and runs that fix a tuned "
                   "hyperparameter (μ sensitivity) have their own tables and never fill a cell here.",
                   [main_table(ctx), *filter(None, [per_exit_table(ctx), eval_point_table(ctx)])])


def dynamic_section(inputs: SectionInputs) -> Section:
    ctx, threshold = inputs.ctx, inputs.threshold
    return Section("Dynamic inference", "Early exit at the first exit whose top softmax probability reaches the "
                   "threshold; costs in multiply-accumulates (MACs) per sample.",
                   [dynamic_table(ctx, threshold), macs_table(ctx)],
                   [save_figure(accuracy_macs_figure(ctx, threshold), inputs.figures_dir, "accuracy_macs",
                                f"Dynamic inference: accuracy against expected MACs as the exit threshold goes from "
                                f"0 to 1, averaged over seeds; dots mark threshold {threshold:g}")])


def comparison_section(inputs: SectionInputs) -> Section:
    """The paired comparison of the method under test with every baseline, its wins / ties / losses and the
    per-client spread."""
    ctx, comparisons = inputs.ctx, inputs.comparisons
    spread = client_spread_figure(ctx)
    figures = [] if spread is None else [save_figure(
        spread, inputs.figures_dir, "client_spread", "Per-client test accuracy (mean over the exits each client "
        "holds) of the main-table runs, clients of all seeds pooled: box = quartiles, whiskers = 1.5 IQR")]
    others = [m for m in ctx.methods if ctx.family[m] == OURS and m != ctx.under_test]
    uncompared = (f" The method under test is {ctx.under_test}, the first of family ours in the report's order; "
                  f"{', '.join(others)}, also of family ours, {'is' if len(others) == 1 else 'are'} listed in the "
                  "method tables but not compared." if others else "")
    return Section("Paired comparison", tally(comparisons) + uncompared,
                   [paired_table(ctx, comparisons)] if len(comparisons) else [], figures)


def claims_section(inputs: SectionInputs) -> Section:
    """The paper's claims checked (rows are named with the runs they lack)."""
    rows = claim_rows(inputs.ctx, inputs.comparisons, inputs.threshold)
    return Section("The paper's claims", lacking_text(rows), [claims_table(rows)])


def convergence_section(inputs: SectionInputs) -> Section:
    """Accuracy per round: mean over exits, and each exit on its own."""
    ctx = inputs.ctx
    figures = [save_figure(convergence_figure(ctx), inputs.figures_dir, "convergence",
                           "Mean-over-exits test accuracy per round, averaged over seeds")]
    per_exit = per_exit_convergence_figure(ctx)
    if per_exit is not None:
        figures.append(save_figure(per_exit, inputs.figures_dir, "per_exit_convergence", "Test accuracy of each "
                                   "exit per round (columns: exits), averaged over seeds"))
    return Section("Convergence", left_out_text([] if per_exit else [
        "per-exit accuracy per round (the runs logged no per-round test/acc/exit_K history)"]),
        [convergence_table(ctx)], figures)


def ablation_section(inputs: SectionInputs) -> Section:
    """The method under test's switch ablation and μ sensitivity, each only where the runs vary what it shows."""
    ctx, method = inputs.ctx, inputs.ctx.under_test
    title = f"{method} ablation and sensitivity"
    ablation = ablation_table(ctx)
    if ablation is None:
        return Section(title, f"No {method} runs.")
    tables, figures, left_out = [], [], []
    if len(ablation.mean.index) > 1:
        tables.append(ablation)
    else:
        example = switch_example(method)
        left_out.append(f"the ablation table (the {method} runs hold only its default switches; runs of a variant"
                        + (f", e.g. {example}," if example else "") + " fill it)")
    sensitivity = sensitivity_stats(ctx)
    has_mu = MU in ctx.hyperparameters_under_test()  # a method without μ has no sensitivity to it to show
    if has_mu and varied_mu(sensitivity).any():
        tables.append(sensitivity_table(ctx, sensitivity))
        figures.append(save_figure(sensitivity_figure(sensitivity, method), inputs.figures_dir, "mu_sensitivity",
                                   f"{method}: mean-over-exits test accuracy against μ (default switches), with the "
                                   "95% Student-t interval over seeds"))
    elif has_mu:
        found = ", ".join(f"{m:g}" for m in sorted(set(sensitivity["mu"]))) or "none"
        left_out.append(f"the μ sensitivity table and figure (values of μ among the runs: {found}; they need runs "
                        "at two or more fixed values of μ in one (dataset, α))")
    return Section(title, left_out_text(left_out), tables, figures)


def communication_section(inputs: SectionInputs) -> Section:
    """Bytes per round, and accuracy against the bytes sent so far."""
    ctx = inputs.ctx
    figure = accuracy_communication_figure(ctx)
    figures = [] if figure is None else [save_figure(
        figure, inputs.figures_dir, "accuracy_communication", "Mean-over-exits test accuracy against the "
        "cumulative communication (uploads + downloads of all clients, MB) at each evaluated round, averaged over "
        "seeds")]
    return Section("Communication", left_out_text([] if figure else [
        "accuracy against communication (the runs logged no per-round comm/bytes_* history)"]),
        [communication_table(ctx)], figures)


def partitions_section(inputs: SectionInputs) -> Section:
    """The label distribution of every (dataset, α), copied from a run's heatmap."""
    heatmaps = []
    for (dataset, alpha), source in sorted(inputs.ctx.data.heatmaps.items()):
        path = inputs.figures_dir / f"partition_{dataset}_alpha{alpha:g}.png"
        shutil.copyfile(source, path)
        heatmaps.append(FigureFile(path.stem, f"Label distribution over clients: {dataset}, α={alpha:g}", path))
    return Section("Partitions", "Samples of each class (columns) held by each client (rows).", figures=heatmaps)


def runs_section(inputs: SectionInputs) -> Section:
    """The tune stage's choices (where it ran) and the seeds behind every main-table cell."""
    ctx = inputs.ctx
    return Section("Runs", tables=[*filter(None, [chosen_settings_table(ctx)]), seeds_table(ctx)])


SECTIONS: tuple[Callable[[SectionInputs], Section], ...] = (
    accuracy_section, dynamic_section, comparison_section, claims_section, convergence_section, ablation_section,
    communication_section, partitions_section, runs_section)


def build_sections(ctx: Context, figures_dir: Path, threshold: float = REPORT_THRESHOLD) -> list[Section]:
    """The report's sections, in :data:`SECTIONS` order, figures saved into ``figures_dir`` on the way."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    inputs = SectionInputs(ctx, figures_dir, threshold, paired_comparisons(ctx))
    return [build(inputs) for build in SECTIONS]
