"""Paired comparison of the method under test (:mod:`bench.report.context`) with every baseline: per (dataset, α),
the runs of both on the same seeds.

Runs of one seed share the partition and the client-sampling stream, so the difference of two methods' accuracies
on a seed is a paired observation. Per (dataset, α) and baseline: the mean of ``ours − baseline`` over the seeds
both ran, its 95% Student-t interval, the two-sided paired-t p-value and the p-value Holm-adjusted over the
baselines of that (dataset, α); then ``win`` / ``tie`` / ``loss`` at the 5% level of the adjusted p-value
(``n/a`` below three paired seeds or at zero spread). The one-sided p-value (ours above the baseline, unadjusted)
is kept for claim (a)'s intersection-union test.
"""

from __future__ import annotations

import pandas as pd

from bench.record_names import TEST_ACCURACY
from bench.report.context import Context, column_of
from bench.report.stats import PAIRED_TEST, SIGNIFICANCE, holm, paired_difference, verdict
from bench.report.tables import COLUMN_LEVELS, Table

PAIRED_COLUMNS = ["baseline", "dataset", "alpha", "n", "mean", "low", "high", "se", "p", "p_greater", "p_holm",
                  "result"]
QUANTITIES = ("Δ [95% CI]", "p (Holm)", "result")
QUANTITY_UNITS = dict(zip(QUANTITIES, ("points", "", ""), strict=True))  # the CSV's: Δ in points, p unitless


def paired_values(a: pd.DataFrame, b: pd.DataFrame, values: pd.Series) -> pd.DataFrame:
    """``seed``, ``a``, ``b``: the ``values`` of the runs of ``a`` and ``b`` (frames with a ``seed`` column,
    indexed by run id) on the seeds both have a value for, in seed order."""
    left = a[["seed"]].assign(a=values.reindex(a.index)).dropna()
    right = b[["seed"]].assign(b=values.reindex(b.index)).dropna()
    return left.merge(right, on="seed").sort_values("seed").reset_index(drop=True)


def paired_comparisons(ctx: Context, metric: str = TEST_ACCURACY) -> pd.DataFrame:
    """One row per (baseline, dataset, α) where both the method under test and the baseline have main runs (see
    module doc)."""
    values = ctx.data.metrics[metric] if metric in ctx.data.metrics else pd.Series(dtype=float)
    rows = []
    for column in ctx.columns:
        runs = column_of(ctx.main, column)
        mine = runs[runs["method"] == ctx.under_test]
        if mine.empty:
            continue
        found = []
        for baseline in ctx.baselines():
            pairs = paired_values(mine, runs[runs["method"] == baseline], values)
            if len(pairs):
                result = paired_difference(pairs["a"], pairs["b"])
                found.append({"baseline": baseline, "dataset": column[0], "alpha": column[1], "n": result.n,
                              "mean": result.mean, "low": result.low, "high": result.high, "se": result.se,
                              "p": result.p, "p_greater": result.p_greater})
        for row, adjusted in zip(found, holm([r["p"] for r in found]), strict=True):
            row.update(p_holm=adjusted, result=verdict(row["mean"], adjusted))
        rows += found
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def signed(value: float) -> str:
    return f"{100 * value:+.2f}"


def paired_table(ctx: Context, comparisons: pd.DataFrame) -> Table:
    """The comparisons laid out as baselines × (dataset, α, quantity), numbers in the CSV, text on screen."""
    baselines = ctx.baselines()
    columns = [(*column, q) for column in ctx.columns for q in QUANTITIES]
    index = pd.MultiIndex.from_tuples(columns, names=[*COLUMN_LEVELS, "quantity"])
    mean = pd.DataFrame(float("nan"), index=pd.Index(baselines, name="baseline"), columns=index)
    text = pd.DataFrame("", index=mean.index, columns=index)
    for row in comparisons.itertuples():
        d, a = row.dataset, row.alpha
        interval = "" if pd.isna(row.low) else f" [{signed(row.low)}, {signed(row.high)}]"
        text.at[row.baseline, (d, a, QUANTITIES[0])] = f"{signed(row.mean)}{interval} (n={row.n})"
        mean.at[row.baseline, (d, a, QUANTITIES[0])] = 100 * row.mean
        if not pd.isna(row.p_holm):
            text.at[row.baseline, (d, a, QUANTITIES[1])] = f"{row.p_holm:.3g}"
            mean.at[row.baseline, (d, a, QUANTITIES[1])] = row.p_holm
        text.at[row.baseline, (d, a, QUANTITIES[2])] = row.result
    groups = pd.Series({m: ctx.group(m) for m in baselines})
    units = pd.Series([QUANTITY_UNITS[column[-1]] for column in columns], index=index)
    return Table("paired_comparison", f"{ctx.under_test} against each baseline, paired over seeds (points of test "
                 "accuracy)", mean, mean * float("nan"), pd.Series("", index=index), scale=1.0, groups=groups,
                 text=text, units=units,
                 note=f"Δ = {ctx.under_test} − baseline in mean-over-exits test accuracy, averaged over the seeds "
                      f"both ran (same partitions); 95% Student-t interval of the mean difference; two-sided "
                      f"{PAIRED_TEST} test, p-values Holm-corrected over the baselines of each (dataset, α); win / "
                      f"loss when the corrected p < {SIGNIFICANCE:g}, else tie; n/a with fewer than three paired "
                      "seeds or zero spread.")


def tally(comparisons: pd.DataFrame) -> str:
    """The wins / ties / losses summary, overall and per (dataset, α)."""
    if comparisons.empty:
        return "No (dataset, α) has runs of both the method under test and a baseline: nothing to compare."

    def counts(frame: pd.DataFrame) -> str:
        got = frame["result"].value_counts()
        text = f"{got.get('win', 0)} wins, {got.get('tie', 0)} ties, {got.get('loss', 0)} losses"
        return text + (f", {got['n/a']} without enough paired seeds" if "n/a" in got else "")

    per_column = "; ".join(f"{d} α={a}: {counts(g)}"
                           for (d, a), g in comparisons.groupby(["dataset", "alpha"], sort=False))
    return f"Against the baselines: {counts(comparisons)} ({per_column})."
