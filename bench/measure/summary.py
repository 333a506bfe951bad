"""The end-of-run measurements: per-exit MACs, dynamic inference, communication, per-client results.

Everything here is computed from the last evaluation's per-sample exit records (one forward pass per client
and split) and the per-exit cost table, with no further forward passes. Metrics logged (see the README):

* ``macs/exit_{k}``, ``params/exit_{k}``, ``macs/static`` — of the full model (cumulative, earlier heads included);
* ``dyn/acc_at_{thr}``, ``dyn/macs_at_{thr}``, ``dyn/cost_reduction_at_{thr}``, ``dyn/acc_drop_at_{thr}`` (the
  architecture page's ``dyn/acc@{thr}``; MLflow does not allow ``@`` in metric names) at the thresholds readers
  compare (:data:`HEADLINE_THRESHOLDS` and ``eval.report_threshold``) — mean over clients; MACs of each client
  are those of its own (sub-)model; ``cost_reduction = 1 − expected MACs / static MACs`` where the static model
  is the backbone plus the last head; ``acc_drop`` = last-exit accuracy minus dynamic accuracy at that threshold;
* ``comm/total_bytes_up``, ``comm/total_bytes_down``.

The whole dynamic-inference curve (every threshold of ``eval.thresholds``: the four figures and the share of
samples leaving at each exit) is a table, :data:`CURVE_TABLE`, logged with ``mlflow.log_table``; its ``val_*``
columns (``val_accuracy``, ``val_cost_reduction``, ``val_acc_drop``) are the same curve on the validation splits,
on which an operating threshold is chosen before its test figures are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.data.partition import class_histogram, label_entropy, partition_title, plot_partition_heatmap
from bench.measure.dynamic import (
    DynamicPoint,
    accuracy_drop,
    budgeted_accuracy,
    cost_reduction,
    dynamic_curve,
    mean_over_clients,
)
from bench.measure.flops import CostTable, exit_costs

if TYPE_CHECKING:
    from bench.fed.engine import Simulation


HEADLINE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
CURVE_TABLE = "dynamic/curve.json"
# dyn/{name}_at_{thr} metric name -> column of the curve table
CURVE_COLUMNS = {"acc": "accuracy", "macs": "expected_macs", "cost_reduction": "cost_reduction",
                 "acc_drop": "acc_drop"}


@dataclass
class FinalMeasures:
    metrics: dict[str, float]
    artifacts: list[tuple[Path, str]] = field(default_factory=list)  # (file, MLflow artifact directory)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # MLflow table artifact file -> table


def dyn_metric(name: str, threshold: float) -> str:
    """MLflow name of a dynamic-inference figure: ``dyn/{name}_at_{threshold}`` (MLflow refuses ``@``)."""
    return f"dyn/{name}_at_{threshold:g}"


def is_headline(threshold: float, report_threshold: float) -> bool:
    """Whether the threshold's dynamic-inference figures are logged as metrics (the rest are in the table)."""
    return any(abs(threshold - t) < 1e-9 for t in (*HEADLINE_THRESHOLDS, report_threshold))


def padded(point: DynamicPoint, num_exits: int) -> DynamicPoint:
    """The point with exit fractions for all ``num_exits`` exits (zero at exits a shallow client does not hold)."""
    fractions = list(point.exit_fractions) + [0.0] * (num_exits - len(point.exit_fractions))
    return replace(point, exit_fractions=fractions)


def client_cost_tables(sim: Simulation) -> dict[int, CostTable]:
    """Each client's cost table, of the model it actually runs (a narrower sub-model for narrow tiers);
    one table per distinct width."""
    by_width: dict[float | None, CostTable] = {}
    tables = {}
    for c in range(sim.fed.num_clients):
        width = sim.fed.method.client_width(c)
        if width not in by_width:
            by_width[width] = exit_costs(sim.fed.new_model(width), sim.fed.dataset.input_shape)
        tables[c] = by_width[width]
    return tables


def curve_cost(curves: dict[int, list[DynamicPoint]], records: dict, tables: dict[int, CostTable],
               exits_held, i: int) -> dict[str, float]:
    """The clients' mean ``cost_reduction`` and ``acc_drop`` at threshold ``i`` of their curves (each against
    its own static model and its own last-exit accuracy on the split the curves were taken on)."""
    reductions = [1 - curves[c][i].expected_macs / tables[c].static_macs_upto(exits_held(c)) for c in curves]
    drops = [float(records[c].correct[:, -1].mean()) - curves[c][i].accuracy for c in curves]
    return {"cost_reduction": float(np.mean(reductions)), "acc_drop": float(np.mean(drops))}


def final_measures(sim: Simulation, out_dir: Path) -> FinalMeasures:
    fed, ev, cfg = sim.fed, sim.last_eval, sim.config
    assert ev is not None, "final_measures needs an evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    full = exit_costs(fed.new_model(), fed.dataset.input_shape)
    metrics: dict[str, float] = {"macs/static": float(full.static_macs)}
    for cost in full.exits:
        metrics[f"macs/exit_{cost.exit}"] = float(cost.macs)
        metrics[f"params/exit_{cost.exit}"] = float(cost.params)
    thresholds = sorted(set(cfg.eval.thresholds) | {cfg.eval.report_threshold})

    tables = client_cost_tables(sim)
    # per client: the MACs of the exits its own model holds
    exit_macs = {c: [e.macs for e in tables[c].exits[:fed.method.client_exits(c)]] for c in tables}
    curves: dict[int, list[DynamicPoint]] = {}
    rows = []
    hist = class_histogram(fed.partition, fed.dataset.y, fed.dataset.num_classes)
    entropy = label_entropy(hist)
    for c, records in ev.test.items():
        table = tables[c]
        held = fed.method.client_exits(c)
        curves[c] = [padded(p, fed.method.ctx.num_exits) for p in dynamic_curve(records, exit_macs[c], thresholds)]
        acc = records.exit_accuracy
        report = next(p for p in curves[c] if p.threshold == cfg.eval.report_threshold)
        row = {"client": c, "train_samples": int(fed.partition.train[c].numel()),
               "val_samples": int(fed.partition.val[c].numel()), "test_samples": int(fed.partition.test[c].numel()),
               "label_entropy": float(entropy[c]), "exits_held": held,
               "width": fed.method.client_width(c) or cfg.model.width}
        row.update({f"test_acc_exit_{k + 1}": float(a) for k, a in enumerate(acc)})
        if c in ev.val:
            row.update({f"val_acc_exit_{k + 1}": float(a) for k, a in enumerate(ev.val[c].exit_accuracy)})
        row.update({"dyn_acc": report.accuracy, "dyn_macs": report.expected_macs,
                    "dyn_cost_reduction": cost_reduction(report, table.static_macs_upto(held)),
                    "dyn_acc_drop": accuracy_drop(report, float(acc[-1])),
                    "bytes_up": sim.state.comm.up[c], "bytes_down": sim.state.comm.down[c]})
        rows.append(row)
    per_client = pd.DataFrame(rows)

    mean_curve = mean_over_clients(list(curves.values()))
    val_curves = {c: dynamic_curve(ev.val[c], exit_macs[c], thresholds) for c in ev.val if ev.val[c].num_samples}
    curve_rows = []
    for i, point in enumerate(mean_curve):
        row = {"threshold": point.threshold, "accuracy": point.accuracy, "expected_macs": point.expected_macs,
               **curve_cost(curves, ev.test, tables, fed.method.client_exits, i)}
        if val_curves:
            val = curve_cost(val_curves, ev.val, tables, fed.method.client_exits, i)
            row.update({f"val_{k}": v for k, v in val.items()},
                       val_accuracy=float(np.mean([val_curves[c][i].accuracy for c in val_curves])))
        if is_headline(point.threshold, cfg.eval.report_threshold):
            metrics.update({dyn_metric(name, point.threshold): row[column] for name, column in CURVE_COLUMNS.items()})
        curve_rows.append({**row, **{f"exit_{k + 1}_fraction": f for k, f in enumerate(point.exit_fractions)}})
    curve = pd.DataFrame(curve_rows)

    budgets = [e.macs for e in full.exits]
    budget_rows = []
    for c in ev.test:
        if c in ev.val:
            for entry in budgeted_accuracy(ev.val[c], ev.test[c], exit_macs[c], budgets, thresholds):
                budget_rows.append({"client": c, **entry})
    metrics["comm/total_bytes_up"] = float(sum(sim.state.comm.up))
    metrics["comm/total_bytes_down"] = float(sum(sim.state.comm.down))

    files = write_artifacts(out_dir, full, per_client, curve, pd.DataFrame(budget_rows), hist,
                            partition_title(cfg.data.dataset, cfg.data.alpha))
    return FinalMeasures(metrics, files, {CURVE_TABLE: curve})


def write_artifacts(out_dir: Path, costs: CostTable, per_client: pd.DataFrame, curve: pd.DataFrame,
                    budgets: pd.DataFrame, hist: np.ndarray, heatmap_title: str) -> list[tuple[Path, str]]:
    files: list[tuple[Path, str]] = []

    def save_csv(frame: pd.DataFrame, name: str, artifact_dir: str) -> None:
        path = out_dir / name
        frame.to_csv(path, index=False)
        files.append((path, artifact_dir))

    save_csv(costs.to_frame(), "macs.csv", "costs")
    unsupported = pd.DataFrame(sorted(costs.unsupported_ops.items()), columns=["operator", "count"])
    save_csv(unsupported, "unsupported_ops.csv", "costs")
    save_csv(per_client, "per_client.csv", "results")
    save_csv(budgets, "budgeted_accuracy.csv", "dynamic")
    save_csv(pd.DataFrame(hist, columns=[f"class_{k}" for k in range(hist.shape[1])]).rename_axis("client")
             .reset_index(), "partition_histogram.csv", "partition")
    heatmap = plot_partition_heatmap(hist, out_dir / "partition_heatmap.png", title=heatmap_title)
    files.append((heatmap, "partition"))
    files.append((plot_dynamic_curve(curve, out_dir / "dynamic_curve.png"), "dynamic"))
    return files


def plot_dynamic_curve(curve: pd.DataFrame, path: Path) -> Path:
    fig = Figure(figsize=(5, 3.6))
    ax = fig.add_subplot()
    ax.plot(curve["expected_macs"] / 1e6, curve["accuracy"], marker="o", markersize=3)
    for _, row in curve.iloc[:: max(1, len(curve) // 6)].iterrows():
        ax.annotate(f"{row['threshold']:g}", (row["expected_macs"] / 1e6, row["accuracy"]), fontsize=7)
    ax.set_xlabel("expected MMACs per sample")
    ax.set_ylabel("mean client test accuracy")
    ax.set_title("dynamic inference (labels: threshold)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
