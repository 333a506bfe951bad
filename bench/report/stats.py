"""Statistics over seeds: Student-t intervals, paired comparisons with Holm's correction, wins / ties / losses.

Every figure is computed from per-seed values (one run per seed): a cell's interval treats its seeds as a sample;
a paired comparison pairs two methods' runs of the same seed, which share the partition and the client-sampling
stream, so seed-to-seed variation common to both cancels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
PAIRED_TEST = "paired t"  # the test named in the report (Student's t on the per-seed differences)


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the two-sided Student-t interval of a mean of ``n`` values with sample std ``std``
    (NaN with fewer than two values)."""
    if n < 2 or not math.isfinite(std):
        return math.nan
    return float(sps.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))


@dataclass(frozen=True)
class Paired:
    """``a − b`` over paired seeds: mean difference, its Student-t interval, the paired-t p-value (two-sided)."""

    n: int
    mean: float
    low: float
    high: float
    p: float


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Paired:
    """The paired comparison of ``a`` and ``b`` (equal length, position i of both from the same seed).

    With fewer than two pairs the interval and p-value are NaN; with identical differences (zero spread) the
    interval is the point and the p-value is 0 unless the difference is zero (then 1).
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(diff)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(diff.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, math.nan)
    std = float(diff.std(ddof=1))
    if std == 0:
        return Paired(n, mean, mean, mean, 1.0 if mean == 0 else 0.0)
    half = t_half_width(std, n, confidence)
    p = float(sps.ttest_1samp(diff, 0.0).pvalue)
    return Paired(n, mean, mean - half, mean + half, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over the given tests); NaN stays NaN and is not
    counted among the tests."""
    adjusted = [math.nan] * len(pvalues)
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, running = len(order), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


SIGNIFICANCE = 0.05


def verdict(mean: float, p_adjusted: float, level: float = SIGNIFICANCE) -> str:
    """``win`` / ``loss`` when the Holm-adjusted p-value of ``ours − baseline`` is below ``level`` and the mean
    difference is positive / negative, else ``tie``; ``n/a`` without a p-value (fewer than two paired seeds)."""
    if math.isnan(p_adjusted):
        return "n/a"
    if p_adjusted < level:
        return "win" if mean > 0 else "loss"
    return "tie"
