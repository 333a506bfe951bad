"""The end-of-run measurements: per-exit MACs, dynamic inference, communication, per-client results.

Everything here is computed from a :class:`FinishedRun` — the last evaluation's per-sample exit records (one forward
pass per client and split), the model to count, the clients' tiers, splits and bytes — with no further forward
passes. The engine builds that input at the end of every run (:meth:`bench.fed.engine.Simulation.finished_run`); the
tracker records what :func:`final_measures` returns. Metrics (see the README):

* ``macs/exit_{k}``, ``params/exit_{k}``, ``macs/static`` — of the full model (cumulative, earlier heads included);
* ``dyn/acc_at_{thr}``, ``dyn/macs_at_{thr}``, ``dyn/cost_reduction_at_{thr}``, ``dyn/acc_drop_at_{thr}`` (the
  architecture page's ``dyn/acc@{thr}``; MLflow does not allow ``@`` in metric names) at the thresholds readers
  compare (:data:`HEADLINE_THRESHOLDS` and ``eval.report_threshold``) — mean over clients; MACs of each client
  are those of its own (sub-)model; ``cost_reduction = 1 − expected MACs / static MACs`` where the static model
  is the backbone plus the last head; ``acc_drop`` = last-exit accuracy minus dynamic accuracy at that threshold;
* ``comm/total_bytes_up``, ``comm/total_bytes_down``.

The whole dynamic-inference curve (every threshold of ``eval.thresholds``: the four figures and the share of
samples leaving at each exit) is a table, :attr:`FinalMeasures.curve`, which a tracked run stores at
``record_names.CURVE_ARTIFACT``; its ``val_*`` columns (``val_accuracy``, ``val_cost_reduction``, ``val_acc_drop``)
are the same curve on the validation splits, on which an operating threshold is chosen before its test figures are
read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from bench.data.partition import label_entropy
from bench.measure.dynamic import (
    DynamicPoint,
    ExitRecords,
    accuracy_drop,
    budgeted_accuracy,
    cost_reduction,
    dynamic_curve,
    mean_over_clients,
)
from bench.measure.flops import CostTable, exit_costs
from bench.models.base import EarlyExitNet
from bench.record_names import DOWNLOAD, STATIC_MACS, UPLOAD, bytes_total, dynamic, exit_macs, exit_params

HEADLINE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
# dyn/{name}_at_{thr} metric name -> column of the curve table
CURVE_COLUMNS = {"acc": "accuracy", "macs": "expected_macs", "cost_reduction": "cost_reduction",
                 "acc_drop": "acc_drop"}


@dataclass(frozen=True)
class FinishedRun:
    """What the end-of-run measures read of a finished run; per-client sequences are indexed by client."""

    model_of_width: Callable[[float | None], EarlyExitNet]  # a new model of a width multiplier (None: the full one)
    input_shape: tuple[int, ...]  # one sample's, without the batch dimension
    num_exits: int  # the full model's
    full_width: float  # the configured width multiplier (model.width)
    widths: Sequence[float | None]  # each client's sub-model width (None: the full width)
    exits_held: Sequence[int]  # how many exits each client's model holds
    split_sizes: np.ndarray  # clients × (train, val, test) sample counts
    class_histogram: np.ndarray  # clients × classes sample counts
    test: Mapping[int, ExitRecords]  # the last evaluation's records, per client
    val: Mapping[int, ExitRecords]  # the same on the val splits (clients with one)
    bytes_up: Sequence[int]  # each client's, over the whole run
    bytes_down: Sequence[int]
    thresholds: Sequence[float]  # the curve's (eval.thresholds); the report threshold is added
    report_threshold: float


@dataclass
class FinalMeasures:
    """The end-of-run measures: summary metrics (logged at the last round) and the tables a tracked run stores."""

    metrics: dict[str, float]
    costs: CostTable  # the full model's
    per_client: pd.DataFrame  # a row per client: splits, label entropy, tier, accuracies, dynamic figures, bytes
    curve: pd.DataFrame  # the dynamic-inference curve, a row per threshold
    budgets: pd.DataFrame  # each client's test accuracy under each exit's MACs as budget (budgeted_accuracy)
    class_histogram: np.ndarray  # clients × classes sample counts


def is_headline(threshold: float, report_threshold: float) -> bool:
    """Whether the threshold's dynamic-inference figures are logged as metrics (the rest are in the table)."""
    return any(abs(threshold - t) < 1e-9 for t in (*HEADLINE_THRESHOLDS, report_threshold))


def padded(point: DynamicPoint, num_exits: int) -> DynamicPoint:
    """The point with exit fractions for all ``num_exits`` exits (zero at exits a shallow client does not hold)."""
    fractions = list(point.exit_fractions) + [0.0] * (num_exits - len(point.exit_fractions))
    return replace(point, exit_fractions=fractions)


def client_cost_tables(run: FinishedRun, full: CostTable | None = None) -> dict[int, CostTable]:
    """Each client's cost table, of the model it actually runs (a narrower sub-model for narrow tiers);
    one table per distinct width (``full``, the full model's when already counted, serves the full-width clients)."""
    by_width: dict[float | None, CostTable] = {} if full is None else {None: full}
    tables = {}
    for c, width in enumerate(run.widths):
        if width not in by_width:
            by_width[width] = exit_costs(run.model_of_width(width), run.input_shape)
        tables[c] = by_width[width]
    return tables


def curve_cost(curves: dict[int, list[DynamicPoint]], records: Mapping[int, ExitRecords],
               tables: dict[int, CostTable], exits_held: Sequence[int], i: int) -> dict[str, float]:
    """The clients' mean ``cost_reduction`` and ``acc_drop`` at threshold ``i`` of their curves (each against
    its own static model and its own last-exit accuracy on the split the curves were taken on)."""
    reductions = [1 - curves[c][i].expected_macs / tables[c].static_macs_upto(exits_held[c]) for c in curves]
    drops = [float(records[c].correct[:, -1].mean()) - curves[c][i].accuracy for c in curves]
    return {"cost_reduction": float(np.mean(reductions)), "acc_drop": float(np.mean(drops))}


def final_measures(run: FinishedRun) -> FinalMeasures:
    """The end-of-run measures of ``run``: its cost table and metrics, the curve, per-client and budget tables."""
    full = exit_costs(run.model_of_width(None), run.input_shape)
    metrics: dict[str, float] = {STATIC_MACS: float(full.static_macs)}
    for cost in full.exits:
        metrics[exit_macs(cost.exit)] = float(cost.macs)
        metrics[exit_params(cost.exit)] = float(cost.params)
    thresholds = sorted(set(run.thresholds) | {run.report_threshold})

    tables = client_cost_tables(run, full)
    # per client: the MACs of the exits its own model holds
    held_macs = {c: [e.macs for e in tables[c].exits[:run.exits_held[c]]] for c in tables}
    curves: dict[int, list[DynamicPoint]] = {}
    rows = []
    entropy = label_entropy(run.class_histogram)
    for c, records in run.test.items():
        table = tables[c]
        held = run.exits_held[c]
        curves[c] = [padded(p, run.num_exits) for p in dynamic_curve(records, held_macs[c], thresholds)]
        acc = records.exit_accuracy
        report = next(p for p in curves[c] if p.threshold == run.report_threshold)
        train, val, test = (int(n) for n in run.split_sizes[c])
        row = {"client": c, "train_samples": train, "val_samples": val, "test_samples": test,
               "label_entropy": float(entropy[c]), "exits_held": held, "width": run.widths[c] or run.full_width}
        row.update({f"test_acc_exit_{k + 1}": float(a) for k, a in enumerate(acc)})
        if c in run.val:
            row.update({f"val_acc_exit_{k + 1}": float(a) for k, a in enumerate(run.val[c].exit_accuracy)})
        row.update({"dyn_acc": report.accuracy, "dyn_macs": report.expected_macs,
                    "dyn_cost_reduction": cost_reduction(report, table.static_macs_upto(held)),
                    "dyn_acc_drop": accuracy_drop(report, float(acc[-1])),
                    "bytes_up": run.bytes_up[c], "bytes_down": run.bytes_down[c]})
        rows.append(row)

    mean_curve = mean_over_clients(list(curves.values()))
    val_curves = {c: dynamic_curve(run.val[c], held_macs[c], thresholds) for c in run.val if run.val[c].num_samples}
    curve_rows = []
    for i, point in enumerate(mean_curve):
        row = {"threshold": point.threshold, "accuracy": point.accuracy, "expected_macs": point.expected_macs,
               **curve_cost(curves, run.test, tables, run.exits_held, i)}
        if val_curves:
            val = curve_cost(val_curves, run.val, tables, run.exits_held, i)
            row.update({f"val_{k}": v for k, v in val.items()},
                       val_accuracy=float(np.mean([val_curves[c][i].accuracy for c in val_curves])))
        if is_headline(point.threshold, run.report_threshold):
            metrics.update({dynamic(name, point.threshold): row[column] for name, column in CURVE_COLUMNS.items()})
        curve_rows.append({**row, **{f"exit_{k + 1}_fraction": f for k, f in enumerate(point.exit_fractions)}})

    budgets = [e.macs for e in full.exits]
    budget_rows = []
    for c in run.test:
        if c in run.val:
            for entry in budgeted_accuracy(run.val[c], run.test[c], held_macs[c], budgets, thresholds):
                budget_rows.append({"client": c, **entry})
    metrics[bytes_total(UPLOAD)] = float(sum(run.bytes_up))
    metrics[bytes_total(DOWNLOAD)] = float(sum(run.bytes_down))
    return FinalMeasures(metrics, full, pd.DataFrame(rows), pd.DataFrame(curve_rows), pd.DataFrame(budget_rows),
                         run.class_histogram)
