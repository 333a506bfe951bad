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


MIN_PAIRS = 3  # fewer paired seeds give no p-value (n/a): two pairs leave a t-test one degree of freedom


@dataclass(frozen=True)
class Paired:
    """``a − b`` over paired seeds: mean difference, its Student-t interval, the paired-t p-values (two-sided, and
    one-sided for ``a > b``) and the standard error of the mean difference."""

    n: int
    mean: float
    low: float
    high: float
    p: float
    p_greater: float = math.nan
    se: float = math.nan


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Paired:
    """The paired comparison of ``a`` and ``b`` (equal length, position i of both from the same seed).

    With fewer than two pairs the interval is NaN; with fewer than :data:`MIN_PAIRS` pairs, or identical
    differences (zero spread, where a t-test has no meaning), the p-values are NaN: the comparison is n/a.
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
    se = std / math.sqrt(n)
    half = t_half_width(std, n, confidence)
    if std == 0 or n < MIN_PAIRS:
        return Paired(n, mean, mean - half, mean + half, math.nan, math.nan, se)
    p = float(sps.ttest_1samp(diff, 0.0).pvalue)
    p_greater = float(sps.ttest_1samp(diff, 0.0, alternative="greater").pvalue)
    return Paired(n, mean, mean - half, mean + half, p, p_greater, se)


def detectable_difference(se: float, n: int, level: float = 0.05) -> float:
    """The smallest mean difference a one-sided paired t-test at ``level`` declares, given the measured standard
    error: ``t(1 − level, n − 1) · se`` (NaN below :data:`MIN_PAIRS` pairs or at zero spread)."""
    if n < MIN_PAIRS or not math.isfinite(se) or se == 0:
        return math.nan
    return float(sps.t.ppf(1 - level, n - 1) * se)


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
    difference is positive / negative, else ``tie``; ``n/a`` without a p-value (fewer than three paired seeds, or
    zero spread)."""
    if math.isnan(p_adjusted):
        return "n/a"
    if p_adjusted < level:
        return "win" if mean > 0 else "loss"
    return "tie"
