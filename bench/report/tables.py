"""The report's tables, in the shape of the paper's: the numbers (mean, std and 95% interval over seeds) and how to
show them.

Values keep MLflow's units (accuracies and cost reductions as fractions, MACs, bytes); ``scale`` converts them
into the unit the table shows and its CSV names (``unit``, e.g. ``acc_pct``, ``mmacs``). A cell with no run holds
NaN and shows as "—", never as zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.record_names import (
    DOWNLOAD,
    LOCAL_TEST_ACCURACY,
    TEST_ACCURACY,
    UPLOAD,
    bytes_sent,
    dynamic,
    dynamic_thresholds,
    exit_accuracy,
)
from bench.report.aggregate import CELL, late_gain, mean_curves, per_round_mean, seed_stats
from bench.report.context import OURS, Context, alpha_label, column_of
from bench.report.selection import DEFAULT_LABEL, is_number, select_best, without_sensitivity

INTERVAL = "95% Student-t interval"
COLUMN_LEVELS = ["dataset", "alpha"]


@dataclass
class Table:
    """Rows × columns of means, with the sample std and the half-width of the 95% Student-t interval over seeds
    (``ci``; shown as ``mean ± ci``). ``better`` says per column whether the best cell is the largest ("max") or
    the smallest ("min") mean, or that none is marked (""); ``groups`` maps rows to the group they are listed
    under; ``text``, where given, holds each cell's display string (empty: missing) in place of the numbers.
    ``unit`` names the unit of the scaled values (``units`` per column, where they differ); ``significant``, where
    set, gives each column as many decimals as show its largest value with that many significant digits (one
    precision per column) in place of ``fmt``."""

    name: str
    title: str
    mean: pd.DataFrame
    std: pd.DataFrame
    better: pd.Series
    scale: float = 100.0
    fmt: str = ".2f"
    groups: pd.Series | None = None
    note: str = ""
    ci: pd.DataFrame | None = None
    text: pd.DataFrame | None = None
    unit: str = "acc_pct"
    units: pd.Series | None = None
    significant: int = 0

    def unit_of(self, column: object) -> str:
        return str(self.units[column]) if self.units is not None else self.unit

    def column_format(self, column: object) -> str:
        """The format of every number in ``column`` (see the class doc)."""
        if not self.significant:
            return self.fmt
        largest = (self.mean[column] * self.scale).abs().max()
        if pd.isna(largest) or largest == 0:
            return f".{self.significant - 1}f"
        return f".{max(0, self.significant - 1 - math.floor(math.log10(largest)))}f"

    def best(self) -> pd.DataFrame:
        """True where a cell holds the best mean of its column (all of them on ties)."""
        mask = pd.DataFrame(False, index=self.mean.index, columns=self.mean.columns)
        for column, direction in self.better.items():
            values = self.mean[column]
            if direction and values.notna().any():
                target = values.max() if direction == "max" else values.min()
                mask[column] = np.isclose(values, target, rtol=0, atol=1e-12)
        return mask


def grid(stats: pd.DataFrame, row_key: str, rows: list[str], columns: list[tuple], column_keys: list[str],
         value: str) -> pd.DataFrame:
    """``stats[value]`` laid out as rows × columns; absent cells are NaN."""
    lookup = {(r[row_key], *(r[k] for k in column_keys)): r[value] for r in stats.to_dict("records")}
    index = pd.MultiIndex.from_tuples(columns, names=column_keys)
    return pd.DataFrame([[lookup.get((row, *col), math.nan) for col in columns] for row in rows],
                        index=pd.Index(rows, name=row_key), columns=index, dtype=float)


def cell_table(name: str, title: str, stats: pd.DataFrame, rows: list[str], columns: list[tuple],
               column_keys: list[str], better: str | list[str] = "max", row_key: str = "method",
               **display: object) -> Table:
    stats = stats.assign(alpha=stats["alpha"].map(alpha_label))
    mean = grid(stats, row_key, rows, columns, column_keys, "mean")
    std = grid(stats, row_key, rows, columns, column_keys, "std") if "std" in stats else mean * math.nan
    ci = grid(stats, row_key, rows, columns, column_keys, "ci") if "ci" in stats else mean * math.nan
    directions = [better] * len(columns) if isinstance(better, str) else better
    return Table(name, title, mean, std, pd.Series(directions, index=mean.columns), ci=ci, **display)


def main_table(ctx: Context) -> Table:
    stats = seed_stats(ctx.main, ctx.data.metrics[TEST_ACCURACY], CELL)
    return cell_table("main_accuracy", "Mean-over-exits test accuracy (%)", stats, ctx.methods, ctx.columns,
                      COLUMN_LEVELS, groups=ctx.groups(),
                      note="Mean over clients of each client's accuracy averaged over exits; mean ± half-width "
                           f"of the {INTERVAL} over seeds (the mean alone with one seed). Best per column in bold.")


EVAL_POINTS = (("aggregated", TEST_ACCURACY), ("own model", LOCAL_TEST_ACCURACY))


def eval_point_table(ctx: Context) -> Table | None:
    """Mean-over-exits test accuracy after aggregation and right after local training (``eval.point``), side by
    side; None when no run logged the local point."""
    metrics = ctx.data.metrics
    if EVAL_POINTS[1][1] not in metrics or metrics.loc[ctx.main.index, EVAL_POINTS[1][1]].isna().all():
        return None
    frames = [seed_stats(ctx.main, metrics[key], CELL).assign(point=point) for point, key in EVAL_POINTS
              if key in metrics]
    columns = [(*column, point) for column in ctx.columns for point, _ in EVAL_POINTS]
    return cell_table("eval_point", "Mean-over-exits test accuracy by evaluation point (%)",
                      pd.concat(frames, ignore_index=True), ctx.methods, columns, [*COLUMN_LEVELS, "point"],
                      groups=ctx.groups(),
                      note="aggregated: the model after the round's aggregation (the main table); own model: the "
                           "model each client holds right after its local training in the last round; mean ± "
                           f"{INTERVAL} "
                           "over seeds; — where a run did not log that point (eval.point).")


def per_exit_table(ctx: Context) -> Table | None:
    """Each exit's test accuracy (columns: dataset, α, exit); None when no main-table run logged one."""
    metrics = ctx.data.metrics
    frames, columns = [], []
    for column in ctx.columns:
        in_column = column_of(ctx.main, column)
        k = 1
        while exit_accuracy(k) in metrics and metrics.loc[in_column.index, exit_accuracy(k)].notna().any():
            frames.append(seed_stats(in_column, metrics[exit_accuracy(k)], CELL).assign(exit=f"exit {k}"))
            columns.append((*column, f"exit {k}"))
            k += 1
    if not frames:
        return None
    stats = pd.concat(frames, ignore_index=True)
    return cell_table("per_exit_accuracy", "Test accuracy per exit (%)", stats, ctx.methods, columns,
                      [*COLUMN_LEVELS, "exit"], groups=ctx.groups(),
                      note=f"Exit k answers every sample; mean ± {INTERVAL} over seeds. Best per column in bold.")


DYNAMIC_QUANTITIES = (("acc", "accuracy", "max", "acc_pct"), ("acc_drop", "acc. drop", "min", "points"),
                      ("cost_reduction", "cost reduction", "max", "pct"))


def dynamic_table(ctx: Context, threshold: float) -> Table:
    if dynamic("acc", threshold) not in ctx.data.metrics:
        logged = dynamic_thresholds(ctx.data.metrics)
        raise ValueError(f"no run logged dynamic inference at threshold {threshold:g}; thresholds logged: "
                         f"{', '.join(f'{t:g}' for t in logged) or 'none'}")
    frames, columns, better, units = [], [], [], []
    for metric, label, _, _ in DYNAMIC_QUANTITIES:
        frames.append(seed_stats(ctx.main, ctx.data.metrics[dynamic(metric, threshold)], CELL)
                      .assign(quantity=label))
    for column in ctx.columns:
        for _, label, direction, unit in DYNAMIC_QUANTITIES:
            columns.append((*column, label))
            better.append(direction)
            units.append(unit)
    index = pd.MultiIndex.from_tuples(columns, names=[*COLUMN_LEVELS, "quantity"])
    return cell_table(f"dynamic_at_{threshold:g}", f"Dynamic inference at threshold {threshold:g} (%)",
                      pd.concat(frames, ignore_index=True), ctx.methods, columns, [*COLUMN_LEVELS, "quantity"],
                      better, groups=ctx.groups(), units=pd.Series(units, index=index),
                      note="A sample leaves at the first exit whose top softmax probability reaches the "
                           "threshold. Accuracy drop = last-exit accuracy − dynamic accuracy (points); cost "
                           "reduction = 1 − expected MACs / MACs of the full model.")


def macs_to_reach(curves: pd.DataFrame, family: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (method, dataset, α): the smallest expected MACs at which the method's seed-averaged dynamic curve
    reaches the best accuracy any non-ours method reaches on its own curve (NaN if never), and the targets
    (dataset, alpha, target accuracy, the method that sets it)."""
    rows, targets = [], []
    for (dataset, alpha), column in curves.groupby(["dataset", "alpha"]):
        baselines = column[column["method"].map(family) != OURS]
        if baselines.empty:
            continue
        best = baselines.loc[baselines["accuracy"].idxmax()]
        targets.append({"dataset": dataset, "alpha": alpha, "target": best["accuracy"], "by": best["method"]})
        for method, curve in column.groupby("method"):
            reached = curve[curve["accuracy"] >= best["accuracy"] - 1e-12]
            rows.append({"method": method, "dataset": dataset, "alpha": alpha,
                         "mean": reached["expected_macs"].min() if len(reached) else math.nan})
    return (pd.DataFrame(rows, columns=[*CELL, "mean"]),
            pd.DataFrame(targets, columns=["dataset", "alpha", "target", "by"]))


def macs_table(ctx: Context) -> Table:
    reach, targets = macs_to_reach(mean_curves(ctx.main, ctx.data.curves), ctx.family)
    listed = "; ".join(f"{t.dataset} α={alpha_label(t.alpha)}: {100 * t.target:.2f}% ({t.by})"
                       for t in targets.itertuples())
    return cell_table("macs_to_best_baseline", "MMACs per sample to reach the best baseline's accuracy", reach,
                      ctx.methods, ctx.columns, COLUMN_LEVELS, "min", scale=1e-6, significant=4, unit="mmacs",
                      groups=ctx.groups(),
                      note="Smallest expected MACs on the method's dynamic-inference curve (averaged over seeds "
                           "threshold by threshold) at which it reaches the highest accuracy of any baseline's "
                           f"curve; — if it never does. Targets: {listed or 'none (no baseline runs)'}.")


def communication_table(ctx: Context) -> Table:
    frames = []
    for direction in (UPLOAD, DOWNLOAD):
        values = per_round_mean(ctx.data.history, bytes_sent(direction))
        frames.append(seed_stats(ctx.main, values, CELL).assign(direction=direction))
    columns = [(*column, direction) for column in ctx.columns for direction in (UPLOAD, DOWNLOAD)]
    return cell_table("communication", "Communication per round (MB, all clients)", pd.concat(frames), ctx.methods,
                      columns, [*COLUMN_LEVELS, "direction"], "", scale=1e-6, fmt=".3f", unit="mb",
                      groups=ctx.groups(),
                      note="Bytes of every payload (down) and upload (up) in a round, summed over the clients "
                           f"and averaged over rounds; mean ± {INTERVAL} over seeds.")


def convergence_table(ctx: Context) -> Table:
    stats = seed_stats(ctx.main, late_gain(ctx.data.history, TEST_ACCURACY), CELL)
    return cell_table("late_gain", "Test accuracy gained in the last quarter of the rounds (points)", stats,
                      ctx.methods, ctx.columns, COLUMN_LEVELS, "", unit="points", groups=ctx.groups(),
                      note="Mean-over-exits test accuracy at the last round minus at the round a quarter of the "
                           "rounds earlier (R - round(R/4), at least one round back); near zero where a curve has "
                           f"flattened. Mean ± {INTERVAL} over seeds; — without an evaluation that far back.")


def setting_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def chosen_settings_table(ctx: Context) -> Table | None:
    """The parameters the sweep's tune stage chose behind each main-table cell; None when no run was tuned."""
    tuned = ctx.main[ctx.main["tuned"].astype(bool)] if "tuned" in ctx.main else ctx.main.iloc[:0]
    if tuned.empty:
        return None
    index = pd.MultiIndex.from_tuples(ctx.columns, names=COLUMN_LEVELS)
    text = pd.DataFrame("", index=pd.Index(ctx.methods, name="method"), columns=index)
    for run in tuned.itertuples():
        text.at[run.method, (run.dataset, alpha_label(run.alpha))] = setting_text(json.loads(run.tuned)) or "(none)"
    empty = pd.DataFrame(math.nan, index=text.index, columns=index)
    return Table("chosen_settings", "Settings chosen by the tune stage", empty, empty, pd.Series("", index=index),
                 groups=ctx.groups(), text=text, unit="",
                 note="Best trial of each setting's Optuna study (same number of trials for every method, mean "
                      "final validation accuracy over the tuning seeds); the test runs behind each cell use it. "
                      + candidates_text(ctx.data.candidates))


def candidates_text(candidates: pd.DataFrame) -> str:
    """What trial k of every study was offered, for each shared ``train.*`` parameter that varies between trials
    (e.g. ``train.lr``): one value per candidate when all studies got the same, else the spread, flagged."""
    if candidates.empty:
        return ""
    shared = [c for c in candidates.columns if c.startswith("train.") and candidates[c].nunique() > 1]
    parts = []
    for name in shared:
        per_candidate = candidates.groupby("candidate")[name].agg(
            lambda v: sorted({f"{float(x):.3g}" if is_number(x) else str(x) for x in v}))
        values = [f"{k}: {v[0]}" if len(v) == 1 else f"{k}: {', '.join(v)} (differs between studies)"
                  for k, v in per_candidate.items()]
        parts.append(f"{name} by trial — " + "; ".join(values))
    studies = candidates["study"].nunique()
    return (f"Candidates offered to all {studies} studies: " + " | ".join(parts) + ".") if parts else ""


def seeds_table(ctx: Context) -> Table:
    stats = seed_stats(ctx.main, ctx.data.metrics[TEST_ACCURACY], CELL)[[*CELL, "n"]].rename(columns={"n": "mean"})
    return cell_table("seeds", "Seeds behind each main-table cell", stats, ctx.methods, ctx.columns, COLUMN_LEVELS,
                      "", scale=1.0, fmt=".0f", unit="runs", groups=ctx.groups(),
                      note="Finished runs (one per seed) of the setting each main-table cell reports.")


def ablation_table(ctx: Context) -> Table | None:
    """The method under test's switch settings (rows) × (dataset, α); None without its runs."""
    runs = without_sensitivity(ctx.runs[ctx.runs["method"] == ctx.under_test])
    if runs.empty:
        return None
    chosen = select_best(runs, ["switches", "dataset", "alpha"])
    stats = seed_stats(chosen, ctx.data.metrics[TEST_ACCURACY], ["switches", "dataset", "alpha"])
    rows = sorted(set(runs["switches"]), key=lambda s: (s != DEFAULT_LABEL, s))
    return cell_table("ablation", f"{ctx.under_test} ablation: mean-over-exits test accuracy (%)", stats, rows,
                      ctx.columns, COLUMN_LEVELS, row_key="switches",
                      note="Rows: the switch settings found among the runs, named by how they differ from the "
                           "defaults (the default row is the main table's run); sensitivity runs (μ fixed) are not "
                           "among them.")


def sensitivity_table(ctx: Context, stats: pd.DataFrame) -> Table | None:
    """The method under test's accuracy per fixed μ (rows) × (dataset, α) from :func:`figures.sensitivity_stats`;
    None without sensitivity runs."""
    if stats.empty:
        return None
    labels = {m: f"μ = {m:g}" for m in sorted(set(stats["mu"]))}
    stats = stats.assign(mu=stats["mu"].map(labels))
    return cell_table("mu_sensitivity", f"{ctx.under_test} sensitivity to μ: mean-over-exits test accuracy (%)",
                      stats, list(labels.values()), ctx.columns, COLUMN_LEVELS, row_key="mu",
                      note="Runs with μ fixed (tag role=sensitivity; their lr tuned like every setting's). The "
                           "main table's μ is tuned, so its run is none of these points.")

