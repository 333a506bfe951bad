"""Statistics of the report against scipy and hand computations; the paired comparison and the paper's claims on
hand-made run frames (no training)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.report.claims import FAILS, HOLDS, INCONCLUSIVE, MISSING_RUNS, claim_rows, lacking_text
from bench.report.collect import RunData
from bench.report.compare import paired_comparisons, paired_table, tally
from bench.report.context import make_context
from bench.report.stats import detectable_difference, holm, paired_difference, t_half_width, verdict


def test_t_interval_matches_scipy_and_the_hand_value():
    values = np.array([0.71, 0.74, 0.69, 0.77])
    half = t_half_width(values.std(ddof=1), len(values))
    low, high = sps.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=sps.sem(values))
    assert values.mean() - half == pytest.approx(low, rel=1e-12)
    assert values.mean() + half == pytest.approx(high, rel=1e-12)
    # [1, 2, 3]: std 1, t(0.975, 2) = 4.30265272974946, half-width 4.3027 / sqrt(3)
    assert t_half_width(1.0, 3) == pytest.approx(4.30265272974946 / math.sqrt(3), rel=1e-9)
    assert math.isnan(t_half_width(0.1, 1))


def test_paired_difference_matches_scipy_paired_t():
    a, b = [0.80, 0.75, 0.90, 0.82], [0.70, 0.72, 0.85, 0.83]
    got = paired_difference(a, b)
    diff = np.subtract(a, b)
    low, high = sps.t.interval(0.95, 3, loc=diff.mean(), scale=sps.sem(diff))
    assert (got.n, got.mean) == (4, pytest.approx(diff.mean(), rel=1e-12))
    assert (got.low, got.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    assert got.p == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-12)
    assert 0 < got.p < 1
    assert got.p_greater == pytest.approx(sps.ttest_rel(a, b, alternative="greater").pvalue, rel=1e-12)
    one = paired_difference([0.8], [0.7])
    assert one.mean == pytest.approx(0.1) and math.isnan(one.low) and math.isnan(one.p)
    with pytest.raises(ValueError, match="paired values need equal lengths, got 2 and 1"):
        paired_difference([0.1, 0.2], [0.3])


def test_holm_on_a_hand_made_case():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04); NaN is not a test
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, 0.04, 0.03, math.nan])[3])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert (verdict(0.02, 0.01), verdict(-0.02, 0.01), verdict(0.02, 0.2), verdict(0.02, math.nan)) == (
        "win", "loss", "tie", "n/a")


def test_two_pairs_or_zero_spread_give_no_p_value_and_no_win():
    flat = paired_difference([0.8, 0.8, 0.8], [0.7, 0.7, 0.7])  # identical differences: a t-test means nothing
    two = paired_difference([0.80, 0.82], [0.70, 0.71])
    assert math.isnan(flat.p) and math.isnan(two.p) and not math.isnan(two.low)
    assert verdict(flat.mean, holm([flat.p])[0]) == verdict(two.mean, holm([two.p])[0]) == "n/a"


def test_detectable_difference_is_the_one_sided_critical_mean():
    # differences 0.01, 0.02, 0.03: se = 0.01 / sqrt(3), t(0.95, 2) = 2.919985580355516
    got = paired_difference([0.81, 0.82, 0.83], [0.80, 0.80, 0.80])
    assert detectable_difference(got.se, got.n) == pytest.approx(2.919985580355516 * 0.01 / math.sqrt(3), rel=1e-9)
    assert math.isnan(detectable_difference(got.se, 2))


# -- hand-made runs -----------------------------------------------------------------------------------------------
# (method, variant, seed) -> test accuracy, or (test, validation) accuracy. Variant "" is the grid point's own run
# (role main; CAFEDistill's tuned mu 0.37), "cross_client=False" / "selection=all" an ablation row, "mu=V" a
# sensitivity row with mu fixed at V.

TUNED_MU = "0.37"


def cafedistill_params(variant: str) -> tuple[dict[str, str], str]:
    params = {"method.hparams.mu": TUNED_MU, "method.hparams.selection": "progressive",
              "method.hparams.cross_client": "True"}
    if variant.startswith("mu="):
        return {**params, "method.hparams.mu": variant.removeprefix("mu=")}, "sensitivity"
    if variant:
        key, value = variant.split("=")
        return {**params, f"method.hparams.{key}": value}, "ablation"
    return params, "main"


def run_data(accuracy: dict[tuple[str, str, int], float | tuple[float, float]],
             curves: pd.DataFrame | None = None) -> RunData:
    rows, params, metrics = [], {}, {}
    for i, ((method, variant, seed), acc) in enumerate(accuracy.items()):
        test, val = acc if isinstance(acc, tuple) else (acc, acc)
        run_id = f"r{i}" if curves is None else f"{method}/{variant}/{seed}"
        role = "main"
        params[run_id] = {"seed": str(seed), "method.name": method}
        if method == "cafedistill":
            extra, role = cafedistill_params(variant)
            params[run_id].update(extra)
        rows.append({"run_id": run_id, "method": method, "family": "ours" if method == "cafedistill" else "base",
                     "dataset": "d", "model": "conv3", "alpha": 0.1, "seed": seed, "start_time": i, "role": role})
        metrics[run_id] = {"test/acc/mean": test, "val/acc/mean": val, "dyn/acc_drop_at_0.6": 0.015,
                           "dyn/cost_reduction_at_0.6": 0.40 + 0.01 * seed}
    runs = pd.DataFrame(rows).set_index("run_id")
    return RunData("hand", runs, pd.DataFrame(params).T.reindex(runs.index),
                   pd.DataFrame(metrics).T.reindex(runs.index).astype(float),
                   pd.DataFrame(columns=["run_id", "metric", "step", "value"]),
                   pd.DataFrame(columns=["run_id", "threshold", "accuracy", "expected_macs"]) if curves is None
                   else curves)


def seeds(method: str, variant: str, values: list[float | tuple[float, float]]) -> dict:
    return {(method, variant, seed): v for seed, v in enumerate(values)}


BASE = {**seeds("cafedistill", "", [0.80, 0.82, 0.81]),
        **seeds("cafedistill", "cross_client=False", [0.75, 0.78, 0.76]),
        **seeds("fedavg", "", [0.70, 0.71, 0.69]), **seeds("local", "", [0.81, 0.80])}


def rows_by_key(accuracy: dict, curves: pd.DataFrame | None = None) -> dict[str, object]:
    ctx = make_context(run_data(accuracy, curves))
    return {r.key: r for r in claim_rows(ctx, paired_comparisons(ctx))}


def test_paired_comparison_pairs_seeds_and_corrects_over_baselines():
    ctx = make_context(run_data(BASE))
    found = paired_comparisons(ctx).set_index("baseline")
    fedavg = paired_difference([0.80, 0.82, 0.81], [0.70, 0.71, 0.69])
    assert found.loc["fedavg", "mean"] == pytest.approx(fedavg.mean) and found.loc["local", "n"] == 2
    assert found.loc["fedavg", "p_holm"] == pytest.approx(holm([fedavg.p])[0])  # local's two pairs: no test
    assert found["result"].tolist() == ["win", "n/a"]
    assert tally(paired_comparisons(ctx)).startswith("Against the baselines: 1 wins, 0 ties, 0 losses, 1 without")
    text = paired_table(ctx, paired_comparisons(ctx)).text
    assert text.loc["fedavg", ("d", "0.1", "result")] == "win"
    assert text.loc["fedavg", ("d", "0.1", "Δ [95% CI]")].startswith(f"{100 * fedavg.mean:+.2f} [")


def test_a_claim_flips_from_holds_to_does_not_hold_when_a_run_metric_changes():
    before = rows_by_key(BASE)["(d) d α=0.1"]
    assert before.verdict == HOLDS and before.measured.startswith("+4.67 [")
    flipped = {**BASE, **seeds("cafedistill", "cross_client=False", [0.85, 0.88, 0.86])}
    assert rows_by_key(flipped)["(d) d α=0.1"].verdict == FAILS
    noisy = {**BASE, ("cafedistill", "cross_client=False", 1): 0.95}
    assert rows_by_key(noisy)["(d) d α=0.1"].verdict == INCONCLUSIVE
    cut = rows_by_key(BASE)["(c) d α=0.1, cost reduction"]
    assert cut.verdict == HOLDS and cut.measured.startswith("41.00 [")  # 0.40, 0.41, 0.42 against 37.15%
    assert cut.decidable == f"±{100 * t_half_width(0.01, 3):.2f} points"
    assert rows_by_key(BASE)["(a) d α=0.1"].verdict == INCONCLUSIVE  # local: two seeds, no test


def test_claims_name_the_runs_they_lack():
    rows = rows_by_key(BASE)
    assert rows["(e) d α=0.1"].verdict == MISSING_RUNS
    assert rows["(e) d α=0.1"].lacks == "cafedistill selection=all at d α=0.1"
    assert rows["(f) d α=0.1"].lacks.startswith("cafedistill sensitivity runs (μ fixed) at d α=0.1 with at least "
                                                "three values of μ (found none)")
    assert "validation and test dynamic curves" in rows["(b) d α=0.1, low end"].lacks
    assert "local at d α=0.1, seed 2" in rows["(a) d α=0.1"].lacks
    text = lacking_text(list(rows.values()))
    assert "(e) d α=0.1: cafedistill selection=all at d α=0.1" in text
    one_seed = rows_by_key({k: v for k, v in BASE.items() if k[2] == 0})["(d) d α=0.1"]
    assert one_seed.verdict == INCONCLUSIVE
    assert one_seed.lacks == "a second seed of cafedistill (default) and cafedistill cross_client=False at d α=0.1"


def test_the_main_cell_is_the_tuned_run_even_where_a_fixed_mu_row_validates_better():
    runs = {**BASE, **seeds("cafedistill", "mu=10", [(0.95, 0.99), (0.96, 0.99), (0.94, 0.99)])}
    ctx = make_context(run_data(runs))
    main = ctx.main[ctx.main["method"] == "cafedistill"]
    assert sorted(ctx.data.metrics.loc[main.index, "test/acc/mean"]) == [0.80, 0.81, 0.82]
    assert set(ctx.data.params.loc[main.index, "method.hparams.mu"]) == {TUNED_MU}


FIVE = range(5)


def test_accuracy_claim_is_decided_at_five_seeds_by_the_intersection_union_test():
    ours = [0.80, 0.82, 0.81, 0.83, 0.79]
    spread = [0.01, -0.01, 0.005, 0.0, -0.005]  # a 1-point spread of the differences
    gap = {**seeds("cafedistill", "", ours)}
    for baseline, offset in (("fedavg", 0.05), ("local", 0.06), ("fedper", 0.05)):
        gap.update(seeds(baseline, "", [o - offset + spread[(s + len(baseline)) % 5] for s, o in enumerate(ours)]))
    row = rows_by_key(gap)["(a) d α=0.1"]
    assert row.verdict == HOLDS and "one-sided p < 0.05 against 3 of 3 baselines" in row.measured
    assert row.decidable.startswith("±") and "the widest spread" in row.decidable
    reversed_gap = {k: (v if k[0] == "cafedistill" else v + 0.10) for k, v in gap.items()}
    assert rows_by_key(reversed_gap)["(a) d α=0.1"].verdict == FAILS
    # Holm over the baselines would need every corrected p < 0.05; the IUT needs each unadjusted one-sided p
    ctx = make_context(run_data(gap))
    found = paired_comparisons(ctx)
    assert (found["p_greater"] < 0.05).all() and len(found) == 3


def test_mu_claim_chooses_mu_on_validation_not_on_test():
    main = seeds("cafedistill", "", [0.80, 0.82, 0.81, 0.80, 0.81])
    # validation ranks mu = 10 first; test ranks the interior mu = 1 first (by about 5 points)
    sens = {**seeds("cafedistill", "mu=0.1", [(0.70 + 0.01 * s, 0.70) for s in FIVE]),
            **seeds("cafedistill", "mu=1", [(0.80 + 0.01 * s + 0.002 * (s % 2), 0.72) for s in FIVE]),
            **seeds("cafedistill", "mu=10", [(0.75 + 0.01 * s, 0.90) for s in FIVE])}
    row = rows_by_key({**main, **sens})["(f) d α=0.1"]
    assert row.measured.startswith("μ chosen on validation: 10 of 0.1, 1, 10")
    assert row.verdict == INCONCLUSIVE  # mu = 10 does not beat mu = 1 on test; a test-chosen mu = 1 would "hold"
    swapped = {**main, **{(m, v, s): (acc[0], 0.95 if v == "mu=1" else 0.70) for (m, v, s), acc in sens.items()}}
    row = rows_by_key(swapped)["(f) d α=0.1"]
    assert row.measured.startswith("μ chosen on validation: 1 of") and row.verdict == HOLDS


def dynamic_curves(runs: dict, test_cut: dict[float, float]) -> pd.DataFrame:
    """Every cafedistill main run's curve over thresholds 0.5, 0.6, 0.7: on validation 0.5 drops 5 points (out of
    the 2.01-point limit) and 0.6 cuts most within it; ``test_cut`` per threshold, plus 0.1 point per seed."""
    val = {0.5: (0.60, 0.05), 0.6: (0.40, 0.01), 0.7: (0.20, 0.0)}
    rows = [{"run_id": f"{m}/{v}/{s}", "threshold": t, "accuracy": 0.8, "expected_macs": 1.0,
             "cost_reduction": test_cut[t] + 0.001 * s, "acc_drop": 0.0 if t == 0.5 else 0.01,
             "val_cost_reduction": val[t][0], "val_acc_drop": val[t][1]}
            for (m, v, s) in runs if m == "cafedistill" and not v for t in val]
    return pd.DataFrame(rows)


def test_budget_claim_picks_the_threshold_on_validation_and_checks_both_ends():
    runs = seeds("cafedistill", "", [0.80, 0.82, 0.81, 0.80, 0.81])
    # on test, 0.5 would look best (cut 60%, no drop); validation rules it out, so 0.6 (35%) is read
    rows = rows_by_key(runs, dynamic_curves(runs, {0.5: 0.60, 0.6: 0.35, 0.7: 0.20}))
    low, high = rows["(b) d α=0.1, low end"], rows["(b) d α=0.1, high end"]
    assert low.measured.startswith("35.20 [") and "thresholds 0.6" in low.measured
    assert low.verdict == HOLDS and high.verdict == HOLDS  # within 30.79-46.86%
    above = rows_by_key(runs, dynamic_curves(runs, {0.5: 0.60, 0.6: 0.55, 0.7: 0.20}))
    assert above["(b) d α=0.1, low end"].verdict == HOLDS and above["(b) d α=0.1, high end"].verdict == FAILS
