"""The paper's claims, each checked against the experiment's runs: one row per claim and (dataset, α).

Every row shows the claim, the paper's figure, the measured figure with its 95% Student-t interval over seeds, a
verdict, and how far the row was from being decidable. Nothing in a row is chosen on test data: thresholds and
values of μ are chosen on validation figures, and test figures are read at the choice. Interval rule: a claim
states that a quantity lies on one side of a bound; it *holds* when the whole interval lies on the claimed side,
*does not hold* when the whole interval lies on the other side, and is *inconclusive* when the interval contains the
bound (the column ``decidable beyond`` gives the interval's half-width: the measured mean must lie at least that
far from the bound). A row without the runs it needs is *missing* and names them; with one seed there is no
interval and the row is *inconclusive*.

Claims (Liu et al. 2026; ``docs/cafedistill.md``, "What the paper reports"):

(a) CAFEDistill's accuracy is above every baseline's. A conjunction, so decided by the intersection-union test
    (Berger 1982): holds when every baseline's one-sided paired-t p-value (ours above it, unadjusted) is below
    0.05; does not hold when the comparison table (two-sided, Holm-corrected over the baselines) has a loss;
    inconclusive otherwise. ``decidable beyond``: the largest over the baselines of the smallest difference the
    one-sided test declares at the measured spread.
(b) dynamic inference cuts the inference cost by 30.79–46.86%: per run, the threshold with the largest
    *validation* cost reduction among those whose *validation* accuracy drop is at most 2.01 points, and the
    run's *test* cost reduction at it; two rows, against the low end (at least) and the high end (at most). The
    2.01-point limit is borrowed from (c) — the abstract states it with the 37.15% cut at threshold 0.6 — since
    (b) states no accuracy cost of its own.
(c) at exit threshold 0.6, a 2.01-point accuracy drop and a 37.15% MACs cut: two rows (drop ≤ 2.01, cut ≥ 37.15);
    the threshold is fixed in advance.
(d) removing cross-client distillation lowers accuracy: the full method minus ``cross_client=False``, paired over
    seeds, against 0.
(e) removing the progressive student selection lowers accuracy: the full method minus ``selection=all``, paired.
(f) μ has an interior optimum: over the sensitivity runs (μ fixed, at least three values), the μ with the best
    mean *validation* accuracy; holds when it is interior and its *test* accuracy beats both end values (one-sided
    paired t, each p < 0.05: an intersection-union test), does not hold when an end value is chosen and beats
    every interior value so, inconclusive otherwise.

The claims are checked for the method under test (:mod:`bench.report.context`), CAFEDistill or a method standing in
its place. (d), (e) and (f) vary one of CAFEDistill's hyperparameters (``cross_client``, ``selection``, ``mu``): a
method under test without that hyperparameter has no row for the claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from bench.record_names import REPORT_THRESHOLD, TEST_ACCURACY, dynamic
from bench.report.compare import paired_values
from bench.report.context import Column, Context, column_of
from bench.report.selection import (
    MU,
    mu_points,
    select_best,
    sensitivity_runs,
    without_sensitivity,
)
from bench.report.stats import SIGNIFICANCE, Paired, detectable_difference, paired_difference, t_half_width
from bench.report.tables import Table

HOLDS, FAILS, INCONCLUSIVE, MISSING_RUNS = "holds", "does not hold", "inconclusive", "missing runs"
# (d) and (e): the letter, the ablation variant's switch label (the hyperparameter it changes, =, its value), the claim
VARIANT_CLAIMS = (("d", "cross_client", "False", "removing cross-client distillation lowers accuracy"),
                  ("e", "selection", "all", "removing the progressive student selection lowers accuracy"))
PAPER_DROP, PAPER_CUT, PAPER_RANGE = 0.0201, 0.3715, (0.3079, 0.4686)
FIELDS = ("claim", "paper", "measured", "verdict", "decidable beyond", "runs it lacks")


@dataclass
class ClaimRow:
    key: str  # e.g. "(d) fmnist α=0.1"
    claim: str
    paper: str
    measured: str = "—"
    verdict: str = MISSING_RUNS
    decidable: str = ""  # how far from the bound the mean must lie for the rule to decide, at the measured spread
    lacks: str = ""


def side_verdict(low: float, high: float, bound: float, above: bool) -> str:
    """The stated rule: the claim says the quantity is above (``above``) or below ``bound``."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if (low > bound) if above else (high < bound):
        return HOLDS
    if (high < bound) if above else (low > bound):
        return FAILS
    return INCONCLUSIVE


def points(value: float) -> str:
    return f"{100 * value:.2f}"


def with_interval(mean: float, low: float, high: float, n: int, signed: bool = False) -> str:
    text = f"{100 * mean:+.2f}" if signed else points(mean)
    if math.isnan(low):
        return f"{text} (n={n}, no interval)"
    return f"{text} [{100 * low:.2f}, {100 * high:.2f}] (n={n})"


def margin(value: float) -> str:
    return "n/a" if math.isnan(value) else f"±{100 * value:.2f} points"


def column_name(column: Column) -> str:
    return f"{column[0]} α={column[1]}"


def seeds_text(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def lacking_pairs(name_a: str, a: pd.DataFrame, name_b: str, b: pd.DataFrame, column: Column) -> str:
    """The runs that would make two groups of runs pairable over at least two seeds."""
    seeds_a, seeds_b = set(a["seed"]), set(b["seed"])
    where = column_name(column)
    if not seeds_a or not seeds_b:
        return "; ".join(f"{name} at {where}" for name, seeds in ((name_a, seeds_a), (name_b, seeds_b))
                         if not seeds)
    wanted = seeds_a | seeds_b
    needs = [f"{name} at {where}, seed {seeds_text(sorted(wanted - seeds))}"
             for name, seeds in ((name_a, seeds_a), (name_b, seeds_b)) if wanted - seeds]
    if len(wanted) < 2:
        needs.append(f"a second seed of {name_a} and {name_b} at {where}")
    return "; ".join(needs)


def paired_row(row: ClaimRow, method: str, full: pd.DataFrame, other: pd.DataFrame, other_name: str,
               column: Column, values: pd.Series) -> ClaimRow:
    """``full − other`` paired over seeds, against 0 (the claim: ``method``'s full runs are above)."""
    pairs = paired_values(full, other, values)
    if len(pairs) < 2:
        row.lacks = lacking_pairs(f"{method} (default)", full, other_name, other, column)
        if len(pairs) == 1:
            row.measured = with_interval(pairs["a"][0] - pairs["b"][0], math.nan, math.nan, 1, signed=True)
            row.verdict = INCONCLUSIVE
        return row
    diff = paired_difference(pairs["a"], pairs["b"])
    row.measured = with_interval(diff.mean, diff.low, diff.high, diff.n, signed=True)
    row.verdict = side_verdict(diff.low, diff.high, 0.0, above=True)
    row.decidable = margin((diff.high - diff.low) / 2)
    return row


def cell_row(row: ClaimRow, method: str, values: pd.Series, bound: float, above: bool, where: str,
             what: str = "") -> ClaimRow:
    """A cell mean over seeds of ``method``'s runs with its interval, against ``bound``; ``what`` names what the
    runs must hold."""
    values = values.dropna()
    if values.empty:
        row.lacks = f"{method} (default) at {where}{what}"
        return row
    n, mean, std = len(values), float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan
    half = t_half_width(std, n)
    row.measured = with_interval(mean, mean - half, mean + half, n)
    row.verdict = side_verdict(mean - half, mean + half, bound, above)
    row.decidable = margin(half)
    if n < 2:
        row.lacks = f"a second seed of {method} (default) at {where}"
    return row


def variant_runs(ctx: Context, switches: str, column: Column) -> pd.DataFrame:
    """The method under test's runs of one switch label in a column, the best validation setting among them."""
    runs = without_sensitivity(column_of(ctx.runs, column))
    return select_best(runs[(runs["method"] == ctx.under_test) & (runs["switches"] == switches)], ["dataset"])


def accuracy_claim(ctx: Context, comparisons: pd.DataFrame, column: Column) -> ClaimRow:
    method = ctx.under_test
    row = ClaimRow(f"(a) {column_name(column)}", f"{method}'s accuracy is above every baseline's",
                   "above every baseline (Tables 1–2)")
    runs = column_of(ctx.main, column)
    ours = runs[runs["method"] == method]
    baselines = [m for m in ctx.baselines() if (runs["method"] == m).any()]
    if ours.empty or not baselines:
        row.lacks = "; ".join(([f"{method} (default) at {column_name(column)}"] if ours.empty else [])
                              + ([f"any baseline at {column_name(column)}"] if not baselines else []))
        return row
    found = comparisons[(comparisons["dataset"] == column[0]) & (comparisons["alpha"] == column[1])]
    lacks = [lacking_pairs(method, ours, b, runs[runs["method"] == b], column) for b in baselines]
    row.lacks = "; ".join(s for s in lacks if s)
    if found.empty:
        return row
    closest = found.loc[found["mean"].idxmin()]  # the baseline closest to (or above) ours
    clear = found["p_greater"] < SIGNIFICANCE
    row.measured = (f"closest: {closest['baseline']} "
                    + with_interval(closest["mean"], closest["low"], closest["high"], closest["n"], True)
                    + f"; one-sided p < {SIGNIFICANCE:g} against {int(clear.sum())} of {len(baselines)} baselines; "
                    + ", ".join(f"{r}: {c}" for r, c in found["result"].value_counts().items()))
    detectable = found.apply(lambda r: detectable_difference(r["se"], int(r["n"])), axis=1)
    if detectable.notna().any():
        widest = found.loc[detectable.idxmax()]
        row.decidable = f"{margin(detectable.max())} (against {widest['baseline']}, the widest spread)"
    else:
        row.decidable = "n/a (fewer than three paired seeds or zero spread)"
    complete = len(found) == len(baselines)
    row.verdict = (FAILS if (found["result"] == "loss").any()
                   else HOLDS if complete and bool(clear.all()) else INCONCLUSIVE)
    return row


def budget_cut(ctx: Context, runs: pd.DataFrame) -> pd.DataFrame:
    """Per run (index): ``threshold``, the one with the largest *validation* cost reduction among those whose
    *validation* accuracy drop is at most the limit (:data:`PAPER_DROP`; the last exit alone, cut 0, where none
    is), and the *test* ``cost_reduction`` and ``acc_drop`` at it. NaN for a run without a validation curve."""
    columns = ["threshold", "cost_reduction", "acc_drop"]
    curves = ctx.data.curves
    needed = {"threshold", "cost_reduction", "acc_drop", "val_cost_reduction", "val_acc_drop"}
    if not needed <= set(curves.columns):
        return pd.DataFrame(math.nan, index=runs.index, columns=columns)
    rows = curves[curves["run_id"].isin(runs.index) & (curves["val_acc_drop"] <= PAPER_DROP + 1e-12)]
    chosen = rows.sort_values(["val_cost_reduction", "threshold"]).groupby("run_id").tail(1).set_index("run_id")
    chosen = chosen[columns].reindex(runs.index)
    static = chosen["threshold"].isna() & runs.index.isin(curves["run_id"])  # no threshold within the limit
    chosen.loc[static, columns] = [math.inf, 0.0, 0.0]
    return chosen


def budget_rows(ctx: Context, ours: pd.DataFrame, where: str) -> list[ClaimRow]:
    """Claim (b) against both ends of the paper's range, at thresholds chosen on validation."""
    chosen = budget_cut(ctx, ours)
    drop = chosen["acc_drop"].dropna()
    read_at = (f"; test accuracy drop there {points(drop.mean())} points, thresholds "
               f"{', '.join(f'{t:g}' for t in sorted(set(chosen['threshold'].dropna())))}" if len(drop) else "")
    rows = []
    for end, bound, above in (("low", PAPER_RANGE[0], True), ("high", PAPER_RANGE[1], False)):
        row = cell_row(ClaimRow(f"(b) {where}, {end} end", "dynamic inference cuts the inference cost by "
                                "30.79–46.86%", f"{'≥' if above else '≤'} {points(bound)}%"), ctx.under_test,
                       chosen["cost_reduction"], bound, above, where,
                       " with validation and test dynamic curves (the curve table's val_* columns)")
        if row.measured != "—":
            row.measured += read_at
        rows.append(row)
    return rows


def one_sided(diffs: list[Paired]) -> bool:
    """Every difference is above 0 by a one-sided paired t-test at the 5% level (an intersection-union test)."""
    return all(not math.isnan(d.p_greater) and d.p_greater < SIGNIFICANCE for d in diffs)


def mu_claim(ctx: Context, column: Column, values: pd.Series) -> ClaimRow:
    row = ClaimRow(f"(f) {column_name(column)}", "μ has an interior optimum", "an interior optimum (sensitivity "
                   "figure)")
    runs = column_of(mu_points(ctx.runs[ctx.runs["method"] == ctx.under_test], ctx.data.params), column)
    mus = sorted(set(runs["mu"]))
    if len(mus) < 3:
        row.lacks = (f"{ctx.under_test} sensitivity runs (μ fixed) at {column_name(column)} with at least three "
                     f"values of μ (found {', '.join(f'{m:g}' for m in mus) or 'none'})")
        return row
    chosen = float(runs.groupby("mu")["val"].mean().idxmax())  # on validation accuracy
    by_mu = {m: runs[runs["mu"] == m] for m in mus}
    interior = chosen not in (mus[0], mus[-1])
    rivals = [mus[0], mus[-1]] if interior else mus[1:-1]
    diffs = [paired_difference(*paired_values(by_mu[chosen], by_mu[m], values)[["a", "b"]].T.values) for m in rivals]
    lowest = min(diffs, key=lambda d: d.mean if not math.isnan(d.mean) else -math.inf)
    row.measured = (f"μ chosen on validation: {chosen:g} of {', '.join(f'{m:g}' for m in mus)}; its test margin "
                    f"over {'the ends' if interior else 'the interior values'} (the smallest): "
                    + with_interval(lowest.mean, lowest.low, lowest.high, lowest.n, signed=True))
    row.verdict = (HOLDS if interior else FAILS) if one_sided(diffs) else INCONCLUSIVE
    detectable = [detectable_difference(d.se, d.n) for d in diffs]
    row.decidable = margin(max(detectable)) if not any(math.isnan(d) for d in detectable) else "n/a"
    if any(d.n < 3 for d in diffs):
        row.lacks = f"three seeds of every μ at {column_name(column)}"
    return row


def claim_rows(ctx: Context, comparisons: pd.DataFrame, threshold: float = REPORT_THRESHOLD) -> list[ClaimRow]:
    """Every claim the method under test has the hyperparameters for, for every (dataset, α) of the experiment (see
    the module doc)."""
    metrics = ctx.data.metrics
    accuracy = metrics[TEST_ACCURACY]
    method = ctx.under_test
    hyperparameters = ctx.hyperparameters_under_test()
    sensitivity = sensitivity_runs(ctx.runs[ctx.runs["method"] == method])
    # (f) where μ sensitivity runs are (presets run them at one α); everywhere, as missing, when none are
    mu_columns = [c for c in ctx.columns if len(column_of(sensitivity, c))] or ctx.columns
    rows = []
    for column in ctx.columns:
        where = column_name(column)
        ours = column_of(ctx.main, column)
        ours = ours[ours["method"] == method]
        rows.append(accuracy_claim(ctx, comparisons, column))
        rows += budget_rows(ctx, ours, where)
        for name, bound, above, text in (("acc_drop", PAPER_DROP, False, "accuracy drop at threshold"),
                                         ("cost_reduction", PAPER_CUT, True, "MACs cut at threshold")):
            key = dynamic(name, threshold)
            values = metrics[key].reindex(ours.index) if key in metrics else pd.Series(math.nan, index=ours.index)
            paper = f"{'≤' if not above else '≥'} {points(bound)}{' points' if not above else '%'}"
            rows.append(cell_row(ClaimRow(f"(c) {where}, {name.replace('_', ' ')}", f"{text} {threshold:g}", paper),
                                 method, values, bound, above, where, f" with {key}"))
        for letter, hyperparameter, value, claim in VARIANT_CLAIMS:
            if hyperparameter not in hyperparameters:
                continue
            switches = f"{hyperparameter}={value}"
            row = ClaimRow(f"({letter}) {where}", claim, "lower accuracy (ablation table)")
            rows.append(paired_row(row, method, ours, variant_runs(ctx, switches, column), f"{method} {switches}",
                                   column, accuracy))
        if MU in hyperparameters and column in mu_columns:
            rows.append(mu_claim(ctx, column, accuracy))
    return rows


def claims_table(rows: list[ClaimRow]) -> Table:
    index = pd.MultiIndex.from_tuples([(f,) for f in FIELDS], names=["field"])
    keys = pd.Index([r.key for r in rows], name="row")
    text = pd.DataFrame([[r.claim, r.paper, r.measured, r.verdict, r.decidable, r.lacks] for r in rows], index=keys,
                        columns=index)
    empty = pd.DataFrame(math.nan, index=keys, columns=index)
    return Table("claims", "The paper's claims, checked", empty, empty, pd.Series("", index=index), text=text,
                 unit="",
                 note="Measured figures in % (points for differences), mean over seeds with the 95% Student-t "
                      "interval in brackets. Rule: holds when the whole interval lies on the claimed side of the "
                      "paper's bound (0 for differences), does not hold when it lies wholly on the other side, "
                      "inconclusive when it contains the bound or has one seed; 'decidable beyond' is how far from "
                      "the bound the mean must lie for the rule to decide at the measured spread. (a) is an "
                      "intersection-union test: every baseline's one-sided paired-t p (ours above it) < 0.05 holds, "
                      "a Holm-corrected loss does not hold. (b) reads test figures at thresholds chosen on "
                      "validation (the largest validation cost cut within a 2.01-point validation accuracy drop, "
                      "the limit (c) states); (f) chooses μ on validation and tests it against the others on test "
                      "accuracy. Missing runs: the runs the row lacks are named.")


def lacking_text(rows: list[ClaimRow]) -> str:
    """The runs the claims lack, one line, or that none are missing."""
    lacks = [f"{r.key}: {r.lacks}" for r in rows if r.lacks]
    if not lacks:
        return "Every claim has the runs it needs."
    return "Runs the claims lack — " + " | ".join(lacks)
