"""The paper's claims, each checked against the experiment's runs: one row per claim and (dataset, α).

Every row shows the claim, the paper's figure, the measured figure with its 95% Student-t interval over seeds and a
verdict by one rule: a claim states that a quantity lies on one side of a bound; it *holds* when the whole interval
lies on the claimed side, *does not hold* when the whole interval lies on the other side, and is *inconclusive*
when the interval contains the bound. A row without the runs it needs is *missing* and names them; with one seed
there is no interval and the row is *inconclusive*.

Claims (Liu et al. 2026; ``../shared/docs/cafedistill.md`` section 7):

(a) CAFEDistill's accuracy is above every baseline's: the paired differences of the report's comparison table
    (Holm-corrected); holds when it wins against every baseline, does not hold when it loses against one,
    inconclusive otherwise.
(b) dynamic inference cuts the inference cost by 30.79–46.86%: per run, the largest cost reduction over the logged
    exit thresholds whose accuracy drop is at most the paper's 2.01 points, against the range's low end.
(c) at exit threshold 0.6, a 2.01-point accuracy drop and a 37.15% MACs cut: two rows (drop ≤ 2.01, cut ≥ 37.15).
(d) removing cross-client distillation lowers accuracy: the full method minus ``cross_client=False``, paired over
    seeds, against 0.
(e) removing the progressive student selection lowers accuracy: the full method minus ``selection=all``, paired.
(f) μ has an interior optimum: the μ with the best mean accuracy among at least three values (default switches)
    lies strictly inside them and beats each end value, paired over seeds; does not hold when an end value is
    best and beats every interior value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from bench.measure.summary import dyn_metric
from bench.report.aggregate import seed_stats
from bench.report.compare import ACCURACY, paired_values
from bench.report.context import Column, Context, column_of
from bench.report.selection import select_best
from bench.report.stats import paired_difference, t_half_width
from bench.report.tables import ABLATION_METHOD, Table

HOLDS, FAILS, INCONCLUSIVE, MISSING_RUNS = "holds", "does not hold", "inconclusive", "missing runs"
CLAIM_THRESHOLD = 0.6
PAPER_DROP, PAPER_CUT, PAPER_RANGE = 0.0201, 0.3715, (0.3079, 0.4686)
MU_PARAM = "method.hparams.mu"
FIELDS = ("claim", "paper", "measured", "verdict", "runs it lacks")


@dataclass
class ClaimRow:
    key: str  # e.g. "(d) fmnist α=0.1"
    claim: str
    paper: str
    measured: str = "—"
    verdict: str = MISSING_RUNS
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


def paired_row(row: ClaimRow, full: pd.DataFrame, other: pd.DataFrame, other_name: str, column: Column,
               values: pd.Series) -> ClaimRow:
    """``full − other`` paired over seeds, against 0 (the claim: full is above)."""
    pairs = paired_values(full, other, values)
    if len(pairs) < 2:
        row.lacks = lacking_pairs(f"{ABLATION_METHOD} (default)", full, other_name, other, column)
        if len(pairs) == 1:
            row.measured = with_interval(pairs["a"][0] - pairs["b"][0], math.nan, math.nan, 1, signed=True)
            row.verdict = INCONCLUSIVE
        return row
    diff = paired_difference(pairs["a"], pairs["b"])
    row.measured = with_interval(diff.mean, diff.low, diff.high, diff.n, signed=True)
    row.verdict = side_verdict(diff.low, diff.high, 0.0, above=True)
    return row


def cell_row(row: ClaimRow, values: pd.Series, bound: float, above: bool, where: str,
             what: str = "") -> ClaimRow:
    """A cell mean over seeds with its interval, against ``bound``; ``what`` names what the runs must hold."""
    values = values.dropna()
    if values.empty:
        row.lacks = f"{ABLATION_METHOD} (default) at {where}{what}"
        return row
    n, mean, std = len(values), float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan
    half = t_half_width(std, n)
    row.measured = with_interval(mean, mean - half, mean + half, n)
    row.verdict = side_verdict(mean - half, mean + half, bound, above)
    if n < 2:
        row.lacks = f"a second seed of {ABLATION_METHOD} (default) at {where}"
    return row


def variant_runs(ctx: Context, switches: str, column: Column) -> pd.DataFrame:
    """CAFEDistill runs of one switch label in a column, the best validation setting among them."""
    runs = column_of(ctx.runs, column)
    return select_best(runs[(runs["method"] == ABLATION_METHOD) & (runs["switches"] == switches)], ["dataset"])


def accuracy_claim(ctx: Context, comparisons: pd.DataFrame, column: Column) -> ClaimRow:
    row = ClaimRow(f"(a) {column_name(column)}", "CAFEDistill's accuracy is above every baseline's",
                   "above every baseline (Tables 1–2)")
    runs = column_of(ctx.main, column)
    ours = runs[runs["method"] == ABLATION_METHOD]
    baselines = [m for m in ctx.methods if m != ABLATION_METHOD and (runs["method"] == m).any()]
    if ours.empty or not baselines:
        row.lacks = "; ".join(([f"{ABLATION_METHOD} (default) at {column_name(column)}"] if ours.empty else [])
                              + ([f"any baseline at {column_name(column)}"] if not baselines else []))
        return row
    found = comparisons[(comparisons["dataset"] == column[0]) & (comparisons["alpha"] == column[1])]
    lacks = [lacking_pairs(ABLATION_METHOD, ours, b, runs[runs["method"] == b], column) for b in baselines]
    row.lacks = "; ".join(s for s in lacks if s)
    short = set(baselines) - set(found.loc[found["n"] >= 2, "baseline"])  # no interval against these
    if found.empty:
        return row
    strongest = found.loc[found["mean"].idxmin()]  # the baseline closest to (or above) ours
    row.measured = (f"{strongest['result']} against {strongest['baseline']} (the closest): "
                    + with_interval(strongest["mean"], strongest["low"], strongest["high"], strongest["n"], True)
                    + f"; {', '.join(f'{r}: {c}' for r, c in found['result'].value_counts().items())}")
    results = set(found["result"])
    row.verdict = (FAILS if "loss" in results else HOLDS if results == {"win"} and not short else INCONCLUSIVE)
    return row


def budget_cut(ctx: Context, runs: pd.DataFrame) -> pd.Series:
    """Per run: the largest cost reduction of its dynamic curve whose accuracy drop is at most the paper's (0 when
    no threshold keeps the drop that small; NaN for a run without a curve)."""
    curves = ctx.data.curves
    if not {"cost_reduction", "acc_drop"} <= set(curves.columns):
        return pd.Series(math.nan, index=runs.index)
    rows = curves[curves["run_id"].isin(runs.index)]
    within = rows["cost_reduction"].where(rows["acc_drop"] <= PAPER_DROP + 1e-12, 0.0)
    return within.groupby(rows["run_id"]).max().reindex(runs.index)


def mu_claim(ctx: Context, column: Column, values: pd.Series) -> ClaimRow:
    row = ClaimRow(f"(f) {column_name(column)}", "μ has an interior optimum", "an interior optimum (sensitivity "
                   "figure)")
    runs = column_of(ctx.runs, column)
    runs = runs[(runs["method"] == ABLATION_METHOD) & runs["is_default"].astype(bool)]
    if MU_PARAM in ctx.data.params:
        runs = runs.assign(mu=pd.to_numeric(ctx.data.params.loc[runs.index, MU_PARAM], errors="coerce"))
        runs = select_best(runs.dropna(subset=["mu"]), ["mu"])
    mus = sorted(set(runs["mu"])) if "mu" in runs else []
    if len(mus) < 3:
        row.lacks = (f"{ABLATION_METHOD} (default) at {column_name(column)} with at least three values of μ "
                     f"(found {', '.join(f'{m:g}' for m in mus) or 'none'})")
        return row
    stats = seed_stats(runs, values, ["mu"]).set_index("mu")
    best = float(stats["mean"].idxmax())
    by_mu = {m: runs[runs["mu"] == m] for m in mus}
    interior = best not in (mus[0], mus[-1])
    rivals = [mus[0], mus[-1]] if interior else mus[1:-1]
    diffs = [paired_difference(*paired_values(by_mu[best], by_mu[m], values)[["a", "b"]].T.values) for m in rivals]
    lowest = min(diffs, key=lambda d: d.low if not math.isnan(d.low) else -math.inf)
    row.measured = (f"best μ = {best:g} of {', '.join(f'{m:g}' for m in mus)}; margin over "
                    f"{'the ends' if interior else 'the interior values'}: "
                    + with_interval(lowest.mean, lowest.low, lowest.high, lowest.n, signed=True))
    clear = all(not math.isnan(d.low) and d.low > 0 for d in diffs)
    row.verdict = (HOLDS if interior else FAILS) if clear else INCONCLUSIVE
    if any(d.n < 2 for d in diffs):
        row.lacks = f"two seeds of every μ at {column_name(column)}"
    return row


def claim_rows(ctx: Context, comparisons: pd.DataFrame, threshold: float = CLAIM_THRESHOLD) -> list[ClaimRow]:
    """Every claim for every (dataset, α) of the experiment (see the module doc)."""
    metrics = ctx.data.metrics
    accuracy = metrics[ACCURACY]
    rows = []
    for column in ctx.columns:
        where = column_name(column)
        ours = column_of(ctx.main, column)
        ours = ours[ours["method"] == ABLATION_METHOD]
        rows.append(accuracy_claim(ctx, comparisons, column))
        rows.append(cell_row(ClaimRow(f"(b) {where}", "dynamic inference cuts the inference cost by 30.79–46.86%",
                                      f"≥ {points(PAPER_RANGE[0])}% (up to {points(PAPER_RANGE[1])}%)"),
                             budget_cut(ctx, ours), PAPER_RANGE[0], True, where,
                             " with dynamic curves (dynamic/dynamic_curve.csv with cost_reduction and acc_drop)"))
        for name, bound, above, text in (("acc_drop", PAPER_DROP, False, "accuracy drop at threshold"),
                                         ("cost_reduction", PAPER_CUT, True, "MACs cut at threshold")):
            key = dyn_metric(name, threshold)
            values = metrics[key].reindex(ours.index) if key in metrics else pd.Series(math.nan, index=ours.index)
            paper = f"{'≤' if not above else '≥'} {points(bound)}{' points' if not above else '%'}"
            rows.append(cell_row(ClaimRow(f"(c) {where}, {name.replace('_', ' ')}", f"{text} {threshold:g}", paper),
                                 values, bound, above, where, f" with {key}"))
        for letter, switches, claim in (("d", "cross_client=False", "removing cross-client distillation lowers "
                                                                    "accuracy"),
                                        ("e", "selection=all", "removing the progressive student selection "
                                                               "lowers accuracy")):
            row = ClaimRow(f"({letter}) {where}", claim, "lower accuracy (ablation table)")
            rows.append(paired_row(row, ours, variant_runs(ctx, switches, column),
                                   f"{ABLATION_METHOD} {switches}", column, accuracy))
        rows.append(mu_claim(ctx, column, accuracy))
    return rows


def claims_table(rows: list[ClaimRow]) -> Table:
    index = pd.MultiIndex.from_tuples([(f,) for f in FIELDS], names=["field"])
    keys = pd.Index([r.key for r in rows], name="row")
    text = pd.DataFrame([[r.claim, r.paper, r.measured, r.verdict, r.lacks] for r in rows], index=keys,
                        columns=index)
    empty = pd.DataFrame(math.nan, index=keys, columns=index)
    return Table("claims", "The paper's claims, checked", empty, empty, pd.Series("", index=index), text=text,
                 note="Measured figures in % (points for differences), mean over seeds with the 95% Student-t "
                      "interval in brackets. Rule: holds when the whole interval lies on the claimed side of the "
                      "paper's bound (0 for differences), does not hold when it lies wholly on the other side, "
                      "inconclusive when it contains the bound or has one seed; (a) uses the paired comparison's "
                      "Holm-corrected verdicts; missing runs: the runs the row lacks are named.")


def lacking_text(rows: list[ClaimRow]) -> str:
    """The runs the claims lack, one line, or that none are missing."""
    lacks = [f"{r.key}: {r.lacks}" for r in rows if r.lacks]
    if not lacks:
        return "Every claim has the runs it needs."
    return "Runs the claims lack — " + " | ".join(lacks)
