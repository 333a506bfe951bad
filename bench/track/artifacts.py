"""The files a tracked run stores beside its metrics: the end-of-run tables as CSV and their figures.

:func:`write_run_artifacts` lays them out in a folder as the run's artifact tree (``costs/macs.csv``,
``partition/partition_heatmap.png``, … — the paths :mod:`bench.record_names` names), so that the tracker logs the
folder whole. The dynamic-inference curve itself is logged as an MLflow table (``record_names.CURVE_ARTIFACT``) by the
tracker; its figure is drawn here. :func:`plot_partition_heatmap` also draws ``cafebench partition``'s heatmap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.record_names import (
    BUDGETS_ARTIFACT,
    CURVE_PLOT_ARTIFACT,
    HEATMAP_ARTIFACT,
    HISTOGRAM_ARTIFACT,
    MACS_ARTIFACT,
    PER_CLIENT_ARTIFACT,
    UNSUPPORTED_OPS_ARTIFACT,
)

if TYPE_CHECKING:  # for the annotation only: `cafebench partition` draws its heatmap without loading fvcore
    from bench.measure.summary import FinalMeasures


def write_run_artifacts(measures: FinalMeasures, folder: Path, heatmap_title: str) -> None:
    """Write the end-of-run files into ``folder`` at their artifact paths (folders made as needed)."""
    costs, hist = measures.costs, measures.class_histogram
    unsupported = pd.DataFrame(sorted(costs.unsupported_ops.items()), columns=["operator", "count"])
    histogram = (pd.DataFrame(hist, columns=[f"class_{k}" for k in range(hist.shape[1])]).rename_axis("client")
                 .reset_index())
    tables = {MACS_ARTIFACT: costs.to_frame(), UNSUPPORTED_OPS_ARTIFACT: unsupported,
              PER_CLIENT_ARTIFACT: measures.per_client, BUDGETS_ARTIFACT: measures.budgets,
              HISTOGRAM_ARTIFACT: histogram}
    for artifact, frame in tables.items():
        path = folder / artifact
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    plot_partition_heatmap(hist, folder / HEATMAP_ARTIFACT, title=heatmap_title)
    plot_dynamic_curve(measures.curve, folder / CURVE_PLOT_ARTIFACT)


def plot_partition_heatmap(hist: np.ndarray, path: Path, title: str = "") -> Path:
    """Write a clients × classes heatmap of sample counts to ``path`` as PNG; returns ``path``."""
    counts = np.asarray(hist)
    num_clients, num_classes = counts.shape
    fig = Figure(figsize=(min(2 + 0.25 * num_classes, 20), min(1.5 + 0.25 * num_clients, 20)))
    ax = fig.add_subplot()
    image = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="samples")
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_dynamic_curve(curve: pd.DataFrame, path: Path) -> Path:
    """Write the mean client test accuracy against expected MACs, points labelled by threshold, to ``path`` as PNG."""
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
