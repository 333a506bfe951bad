"""Averages over seeds: per-cell statistics, seed-averaged dynamic curves and metric histories."""

from __future__ import annotations

import pandas as pd

from bench.record_names import BYTES_DOWN, BYTES_UP, TEST_ACCURACY
from bench.report.stats import t_half_width

CELL = ["method", "dataset", "alpha"]
COMM_METRICS = (BYTES_UP, BYTES_DOWN)


def seed_stats(runs: pd.DataFrame, values: pd.Series, by: list[str]) -> pd.DataFrame:
    """Per ``by`` group of ``runs``: ``mean``, ``std`` (sample std, ddof=1; NaN with one seed), ``n`` and ``ci``
    (half-width of the 95% Student-t interval of the mean; NaN with one seed) of the runs' ``values`` (a Series
    indexed by run id; runs without a value are not counted)."""
    frame = runs[by].assign(value=values.reindex(runs.index))
    stats = frame.groupby(by, dropna=False)["value"].agg(["mean", "std", "count"])
    stats = stats.rename(columns={"count": "n"}).reset_index()
    stats["ci"] = [t_half_width(std, n) for std, n in zip(stats["std"], stats["n"], strict=True)]
    return stats


def mean_curves(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """The dynamic-inference curves of ``runs`` averaged over seeds, point by point (threshold by threshold):
    columns method, dataset, alpha, threshold, accuracy, expected_macs."""
    columns = [*CELL, "threshold", "accuracy", "expected_macs"]
    if runs.empty or curves.empty:
        return pd.DataFrame(columns=columns)
    merged = curves.merge(runs[CELL], left_on="run_id", right_index=True)
    return merged.groupby([*CELL, "threshold"])[["accuracy", "expected_macs"]].mean().reset_index()[columns]


def mean_history(runs: pd.DataFrame, history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric`` per round averaged over seeds: columns method, dataset, alpha, step, value."""
    rows = history[history["metric"] == metric]
    merged = rows.merge(runs[CELL], left_on="run_id", right_index=True)
    return merged.groupby([*CELL, "step"])["value"].mean().reset_index()


def per_round_mean(history: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's ``metric`` averaged over the rounds it was logged in (indexed by run id)."""
    rows = history[history["metric"] == metric]
    return rows.groupby("run_id")["value"].mean()


def late_gain(history: pd.DataFrame, metric: str, share: float = 0.25) -> pd.Series:
    """Each run's gain in ``metric`` over the last ``share`` of its rounds (indexed by run id): the value at its
    last logged round R minus the value at the latest logged round at or before R - max(1, round(share * R)); runs
    with no such earlier round are left out. Near zero when the run's curve has flattened."""
    gains = {}
    for run_id, rows in history[history["metric"] == metric].groupby("run_id"):
        steps = rows.set_index("step")["value"].sort_index()
        last = int(steps.index[-1])
        earlier = steps[steps.index <= last - max(1, round(share * last))]
        if len(earlier):
            gains[run_id] = steps.iloc[-1] - earlier.iloc[-1]
    return pd.Series(gains, dtype=float)


def accuracy_at_communication(runs: pd.DataFrame, history: pd.DataFrame, metric: str = TEST_ACCURACY
                              ) -> pd.DataFrame:
    """Per (method, dataset, α, evaluated round), averaged over the seeds of ``runs``: ``accuracy`` (``metric``) and
    ``bytes``, what was uploaded and downloaded up to and including that round (the running sum of the per-round
    ``comm/bytes_up`` and ``comm/bytes_down``). Columns method, dataset, alpha, step, accuracy, bytes."""
    columns = [*CELL, "step", "accuracy", "bytes"]
    comm = history[history["metric"].isin(COMM_METRICS)].drop_duplicates(["run_id", "metric", "step"], keep="last")
    if runs.empty or comm.empty:
        return pd.DataFrame(columns=columns)
    per_round = comm.groupby(["run_id", "step"])["value"].sum().sort_index()
    sent = per_round.groupby(level="run_id").cumsum().rename("bytes").reset_index()
    accuracy = history.loc[history["metric"] == metric, ["run_id", "step", "value"]]
    accuracy = accuracy.rename(columns={"value": "accuracy"})
    merged = accuracy.merge(sent, on=["run_id", "step"]).merge(runs[CELL], left_on="run_id", right_index=True)
    return merged.groupby([*CELL, "step"])[["accuracy", "bytes"]].mean().reset_index()[columns]
