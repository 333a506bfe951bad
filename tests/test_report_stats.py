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
from bench.report.stats import holm, paired_difference, t_half_width, verdict


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


# -- hand-made runs: cafedistill (default, cross_client=False), fedavg and local, one (dataset, α) -------------

def run_data(accuracy: dict[tuple[str, str, int], float]) -> RunData:
    """Runs keyed (method, switch label, seed) -> test accuracy; switch label "" or "cross_client=False"."""
    rows, params, metrics = [], {}, {}
    for i, ((method, switch, seed), acc) in enumerate(accuracy.items()):
        run_id = f"r{i}"
        rows.append({"run_id": run_id, "method": method, "family": "ours" if method == "cafedistill" else "base",
                     "dataset": "d", "model": "conv3", "alpha": 0.1, "seed": seed, "start_time": i})
        params[run_id] = {"seed": str(seed), "method.name": method}
        if method == "cafedistill":
            params[run_id].update({"method.hparams.mu": "1.0", "method.hparams.selection": "progressive",
                                   "method.hparams.cross_client": str(switch != "cross_client=False")})
        metrics[run_id] = {"test/acc/mean": acc, "val/acc/mean": acc, "dyn/acc_drop_at_0.6": 0.015,
                           "dyn/cost_reduction_at_0.6": 0.40 + 0.01 * seed}
    runs = pd.DataFrame(rows).set_index("run_id")
    return RunData("hand", runs, pd.DataFrame(params).T.reindex(runs.index),
                   pd.DataFrame(metrics).T.reindex(runs.index).astype(float),
                   pd.DataFrame(columns=["run_id", "metric", "step", "value"]),
                   pd.DataFrame(columns=["run_id", "threshold", "accuracy", "expected_macs"]))


BASE = {("cafedistill", "", 0): 0.80, ("cafedistill", "", 1): 0.82, ("cafedistill", "", 2): 0.81,
        ("cafedistill", "cross_client=False", 0): 0.75, ("cafedistill", "cross_client=False", 1): 0.78,
        ("cafedistill", "cross_client=False", 2): 0.76,
        ("fedavg", "", 0): 0.70, ("fedavg", "", 1): 0.71, ("fedavg", "", 2): 0.69,
        ("local", "", 0): 0.81, ("local", "", 1): 0.80}


def rows_by_key(accuracy: dict) -> dict[str, object]:
    ctx = make_context(run_data(accuracy))
    return {r.key: r for r in claim_rows(ctx, paired_comparisons(ctx))}


def test_paired_comparison_pairs_seeds_and_corrects_over_baselines():
    ctx = make_context(run_data(BASE))
    found = paired_comparisons(ctx).set_index("baseline")
    fedavg = paired_difference([0.80, 0.82, 0.81], [0.70, 0.71, 0.69])
    local = paired_difference([0.80, 0.82], [0.81, 0.80])  # local ran seeds 0 and 1 only
    assert found.loc["fedavg", "mean"] == pytest.approx(fedavg.mean) and found.loc["local", "n"] == 2
    assert found["p_holm"].tolist() == pytest.approx(holm([fedavg.p, local.p]))
    assert found["result"].tolist() == ["win", "tie"]
    assert tally(paired_comparisons(ctx)).startswith("Against the baselines: 1 wins, 1 ties, 0 losses")
    text = paired_table(ctx, paired_comparisons(ctx)).text
    assert text.loc["fedavg", ("d", "0.1", "result")] == "win"
    assert text.loc["fedavg", ("d", "0.1", "Δ [95% CI]")].startswith(f"{100 * fedavg.mean:+.2f} [")


def test_a_claim_flips_from_holds_to_does_not_hold_when_a_run_metric_changes():
    before = rows_by_key(BASE)["(d) d α=0.1"]
    assert before.verdict == HOLDS and before.measured.startswith("+4.67 [")
    flipped = dict(BASE)
    flipped.update({("cafedistill", "cross_client=False", 0): 0.85, ("cafedistill", "cross_client=False", 1): 0.88,
                    ("cafedistill", "cross_client=False", 2): 0.86})
    assert rows_by_key(flipped)["(d) d α=0.1"].verdict == FAILS
    noisy = dict(BASE)
    noisy[("cafedistill", "cross_client=False", 1)] = 0.95
    assert rows_by_key(noisy)["(d) d α=0.1"].verdict == INCONCLUSIVE
    cut = rows_by_key(BASE)["(c) d α=0.1, cost reduction"]
    assert cut.verdict == HOLDS and cut.measured.startswith("41.00 [")  # 0.40, 0.41, 0.42 against 37.15%
    assert rows_by_key(BASE)["(a) d α=0.1"].verdict == INCONCLUSIVE  # a tie with local


def test_claims_name_the_runs_they_lack():
    rows = rows_by_key(BASE)
    assert rows["(e) d α=0.1"].verdict == MISSING_RUNS
    assert rows["(e) d α=0.1"].lacks == "cafedistill selection=all at d α=0.1"
    assert rows["(f) d α=0.1"].lacks.startswith("cafedistill (default) at d α=0.1 with at least three values of μ "
                                                "(found 1)")
    assert "dynamic curves" in rows["(b) d α=0.1"].lacks
    assert "local at d α=0.1, seed 2" in rows["(a) d α=0.1"].lacks
    text = lacking_text(list(rows.values()))
    assert "(e) d α=0.1: cafedistill selection=all at d α=0.1" in text
    one_seed = rows_by_key({k: v for k, v in BASE.items() if k[2] == 0})["(d) d α=0.1"]
    assert one_seed.verdict == INCONCLUSIVE
    assert one_seed.lacks == "a second seed of cafedistill (default) and cafedistill cross_client=False at d α=0.1"
