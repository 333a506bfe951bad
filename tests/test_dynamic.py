"""Dynamic inference from recorded exits: hand-computed curves, brute-force agreement, budgets, averaging."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bench.measure.dynamic import (
    DEFAULT_THRESHOLDS,
    DynamicPoint,
    ExitRecords,
    accuracy_drop,
    budgeted_accuracy,
    cost_reduction,
    dynamic_curve,
    mean_over_clients,
)

EXIT_MACS = [10.0, 30.0, 60.0]


def hand_records() -> ExitRecords:
    """4 samples × 3 exits; sample 3's confidence falls and rises again."""
    confidence = [[0.9, 0.95, 0.99], [0.5, 0.8, 0.9], [0.3, 0.4, 0.7], [0.6, 0.5, 0.55]]
    correct = [[True, True, True], [False, True, True], [False, False, True], [True, False, False]]
    return ExitRecords(np.array(confidence), np.array(correct))


def random_records(n: int, m: int, seed: int) -> ExitRecords:
    rng = np.random.default_rng(seed)
    confidence = np.round(rng.uniform(0.1, 1.0, (n, m)), 2)  # rounded: many ties with the thresholds
    return ExitRecords(confidence, rng.uniform(size=(n, m)) < 0.6)


def exit_choice(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """Sample by sample, the 0-based exit where it leaves: the first with confidence ≥ ``threshold``, else the last."""
    return np.array([next((k for k, c in enumerate(row) if c >= threshold), len(row) - 1) for row in confidence])


def test_dynamic_curve_by_hand():
    points = dynamic_curve(hand_records(), EXIT_MACS, [0.0, 0.55, 0.7, 0.9, 1.01])
    assert [p.threshold for p in points] == [0.0, 0.55, 0.7, 0.9, 1.01]
    assert [p.accuracy for p in points] == pytest.approx([0.5, 1.0, 0.75, 0.75, 0.75])
    assert [p.expected_macs for p in points] == pytest.approx([10.0, 27.5, 40.0, 47.5, 60.0])
    assert points[2].exit_fractions == pytest.approx([0.25, 0.25, 0.5])
    assert points[3].exit_fractions == pytest.approx([0.25, 0.0, 0.75])


def test_threshold_zero_stops_at_exit_one_and_above_one_reaches_the_last_exit():
    records = random_records(50, 4, seed=1)
    macs = [1.0, 2.0, 4.0, 8.0]
    first, last = dynamic_curve(records, macs, [0.0, 1.01])
    assert first.expected_macs == 1.0 and first.exit_fractions == [1.0, 0.0, 0.0, 0.0]
    assert first.accuracy == pytest.approx(records.exit_accuracy[0])
    assert last.expected_macs == 8.0 and last.exit_fractions == [0.0, 0.0, 0.0, 1.0]
    assert last.accuracy == pytest.approx(records.exit_accuracy[-1])


def test_curve_matches_a_per_threshold_brute_force():
    records = random_records(300, 4, seed=2)
    macs = np.array([3.0, 5.0, 11.0, 20.0])
    for point in dynamic_curve(records, macs, DEFAULT_THRESHOLDS):
        chosen = exit_choice(records.confidence, point.threshold)
        rows = np.arange(records.num_samples)
        assert point.accuracy == pytest.approx(records.correct[rows, chosen].mean(), abs=1e-12)
        assert point.expected_macs == pytest.approx(macs[chosen].mean(), abs=1e-9)
        assert point.exit_fractions == pytest.approx(np.bincount(chosen, minlength=4) / len(rows), abs=1e-12)


def test_expected_macs_never_fall_as_the_threshold_rises():
    points = dynamic_curve(random_records(500, 3, seed=3), EXIT_MACS, DEFAULT_THRESHOLDS)
    macs = [p.expected_macs for p in points]
    assert all(b >= a for a, b in zip(macs, macs[1:], strict=False))
    assert macs[0] < macs[-1]


def test_a_hundred_thresholds_cost_about_as_much_as_one():
    records = random_records(200_000, 4, seed=4)
    macs = [1.0, 2.0, 3.0, 4.0]

    def best_time(thresholds) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            dynamic_curve(records, macs, thresholds)
            times.append(time.perf_counter() - start)
        return min(times)

    assert best_time(DEFAULT_THRESHOLDS) < 3 * best_time([0.6])


def test_default_thresholds_hold_round_values_and_one_above_one():
    assert len(DEFAULT_THRESHOLDS) == 102
    assert 0.6 in DEFAULT_THRESHOLDS and 0.95 in DEFAULT_THRESHOLDS
    assert DEFAULT_THRESHOLDS[0] == 0.0 and DEFAULT_THRESHOLDS[-1] > 1.0


def test_from_logits_takes_the_softmax_maximum_and_the_argmax():
    torch.manual_seed(0)
    logits = [torch.randn(6, 5) * 3 for _ in range(2)]
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    records = ExitRecords.from_logits(logits, labels)
    for k, exit_logits in enumerate(logits):
        probs = torch.softmax(exit_logits, dim=1)
        np.testing.assert_allclose(records.confidence[:, k], probs.max(dim=1).values.numpy(), rtol=1e-6)
        assert records.correct[:, k].tolist() == (probs.argmax(dim=1) == labels).tolist()
    assert records.confidence.shape == (6, 2)


def test_from_logits_rejects_logits_that_do_not_match_the_labels():
    with pytest.raises(ValueError, match="exit 2"):
        ExitRecords.from_logits([torch.zeros(3, 4), torch.zeros(2, 4)], torch.zeros(3, dtype=torch.long))


def test_concat_stacks_samples_and_rejects_different_exit_counts():
    a, b = hand_records(), random_records(5, 3, seed=5)
    both = ExitRecords.concat([a, b])
    assert both.num_samples == 9 and both.num_exits == 3
    np.testing.assert_array_equal(both.confidence[4:], b.confidence)
    with pytest.raises(ValueError, match="different numbers of exits"):
        ExitRecords.concat([a, random_records(5, 2, seed=6)])


def test_records_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="N samples × m exits"):
        ExitRecords(np.zeros((3, 2)), np.zeros((3, 3), dtype=bool))


def test_curve_rejects_bad_inputs():
    with pytest.raises(ValueError, match="one cumulative cost per exit"):
        dynamic_curve(hand_records(), [1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="no samples"):
        dynamic_curve(ExitRecords(np.zeros((0, 3)), np.zeros((0, 3), dtype=bool)), EXIT_MACS, [0.5])


def test_mean_over_clients_is_unweighted_and_sample_weights_give_the_pooled_curve():
    small, large = hand_records(), random_records(40, 3, seed=7)
    thresholds = [0.0, 0.55, 0.7, 1.01]
    curves = [dynamic_curve(r, EXIT_MACS, thresholds) for r in (small, large)]

    mean = mean_over_clients(curves)
    assert mean[1].accuracy == pytest.approx((1.0 + curves[1][1].accuracy) / 2)
    assert mean[2].expected_macs == pytest.approx((40.0 + curves[1][2].expected_macs) / 2)
    assert mean[0].exit_fractions == pytest.approx([1.0, 0.0, 0.0])

    weighted = mean_over_clients(curves, weights=[4, 40])
    pooled = dynamic_curve(ExitRecords.concat([small, large]), EXIT_MACS, thresholds)
    for w, p in zip(weighted, pooled, strict=True):
        assert w.accuracy == pytest.approx(p.accuracy)
        assert w.expected_macs == pytest.approx(p.expected_macs)
        assert w.exit_fractions == pytest.approx(p.exit_fractions)


def test_mean_over_clients_rejects_curves_on_different_thresholds():
    a = dynamic_curve(hand_records(), EXIT_MACS, [0.5])
    b = dynamic_curve(hand_records(), EXIT_MACS, [0.6])
    with pytest.raises(ValueError, match="different thresholds"):
        mean_over_clients([a, b])


def test_cost_reduction_and_accuracy_drop_by_hand():
    point = DynamicPoint(threshold=0.7, accuracy=0.75, expected_macs=40.0, exit_fractions=[0.25, 0.25, 0.5])
    assert cost_reduction(point, static_macs=80.0) == pytest.approx(0.5)
    assert cost_reduction(point, static_macs=32.0) == pytest.approx(-0.25)  # heads cost more than they save
    assert accuracy_drop(point, last_exit_accuracy=0.9) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="positive"):
        cost_reduction(point, static_macs=0.0)


def test_budgeted_accuracy_chooses_on_validation_and_reports_test():
    val = hand_records()  # at 0.55: accuracy 1.0 for 27.5 MACs, the best validation choice
    # On test, 0.55 sends sample 0 out wrongly at exit 1 while 0.7 would get both right.
    test = ExitRecords(np.array([[0.6, 0.9, 0.95], [0.2, 0.3, 0.4]]), np.array([[0, 1, 1], [0, 0, 1]], bool))
    thresholds = [0.0, 0.55, 0.7, 0.9, 1.01]
    assert dynamic_curve(test, EXIT_MACS, thresholds)[2].accuracy == 1.0

    none_fits, tight, loose = budgeted_accuracy(val, test, EXIT_MACS, [5.0, 27.5, 100.0], thresholds)
    assert none_fits["threshold"] is None
    assert np.isnan(none_fits["test_accuracy"]) and np.isnan(none_fits["val_macs"])
    for row in (tight, loose):
        assert row["threshold"] == 0.55
        assert row["val_accuracy"] == 1.0 and row["val_macs"] == 27.5
        assert row["test_accuracy"] == 0.5 and row["test_macs"] == 35.0
    assert [none_fits["budget"], tight["budget"], loose["budget"]] == [5.0, 27.5, 100.0]

    between = budgeted_accuracy(val, test, EXIT_MACS, [20.0], thresholds)[0]
    assert between["threshold"] == 0.0 and between["test_accuracy"] == 0.0 and between["test_macs"] == 10.0


def test_budgeted_accuracy_breaks_ties_by_the_cheaper_threshold():
    # Validation accuracy is 0.75 at 0.7, 0.9 and 1.01; 0.7 is the cheapest (40 MACs).
    row = budgeted_accuracy(hand_records(), hand_records(), EXIT_MACS, [100.0], [1.01, 0.9, 0.7])[0]
    assert row["threshold"] == 0.7 and row["val_macs"] == 40.0
