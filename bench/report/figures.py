"""The report's figures (matplotlib, no pyplot state): one panel per (dataset, α), one line per method."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.record_names import TEST_ACCURACY, exit_accuracy, exits_logged
from bench.report.aggregate import accuracy_at_communication, mean_curves, mean_history, seed_stats
from bench.report.context import OURS, Column, Context, alpha_label, column_of
from bench.report.selection import mu_points

PANEL_SIZE = (4.2, 3.2)


def method_styles(ctx: Context) -> dict[str, dict]:
    """A fixed colour per method across all figures; federated-EE baselines dashed; the method under test thick and
    black (another method of family ours thick, in a colour of its own)."""
    colors = colormaps["tab20"].colors
    palette = colors[0::2] + colors[1::2]  # the ten strong colours first
    styles = {}
    for i, method in enumerate(m for m in ctx.methods if m != ctx.under_test):
        styles[method] = {"color": palette[i % len(palette)], "linewidth": 2.4 if ctx.family[method] == OURS else 1.3,
                          "linestyle": "--" if ctx.family[method] == "fee" else "-"}
    styles[ctx.under_test] = {"color": "black", "linewidth": 2.4, "linestyle": "-"}
    return styles


def column_title(column: Column) -> str:
    return f"{column[0]}, α={column[1]}"


def panels(ctx: Context, draw: Callable[[Axes, Column], None], xlabel: str, ylabel: str,
           panel_size: tuple[float, float] = PANEL_SIZE) -> Figure:
    """A grid of one panel per (dataset, α) column, ``draw`` filling each, one legend for all."""
    return panel_grid(ctx, ctx.columns, draw, column_title, xlabel, ylabel, min(len(ctx.columns), 3), panel_size)


def panel_grid(ctx: Context, keys: list, draw: Callable[[Axes, object], None], title: Callable[[object], str],
               xlabel: str, ylabel: str, cols: int, panel_size: tuple[float, float] = PANEL_SIZE) -> Figure:
    """A grid of one panel per key, ``cols`` to a row, ``draw`` filling each, one legend of methods for all."""
    n = len(keys)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(panel_size[0] * cols + 1.8, panel_size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        draw(ax, key)
        ax.set_title(title(key))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    handles: dict[str, object] = {}
    for ax in axes[:n]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    shown = [m for m in ctx.methods if m in handles]
    if shown:
        fig.legend([handles[m] for m in shown], shown, loc="outside right upper", fontsize=8)
    return fig


def accuracy_macs_figure(ctx: Context, threshold: float) -> Figure:
    """Seed-averaged dynamic-inference curves: accuracy against expected MMACs per sample, threshold 0.6
    (or the report threshold) marked."""
    curves = mean_curves(ctx.main, ctx.data.curves)
    styles = method_styles(ctx)

    def draw(ax: Axes, column: Column) -> None:
        for method, curve in column_of(curves, column).groupby("method"):
            curve = curve.sort_values("threshold")
            ax.plot(curve["expected_macs"] / 1e6, 100 * curve["accuracy"], label=method, **styles[method])
            marked = curve[(curve["threshold"] - threshold).abs() < 1e-9]
            ax.plot(marked["expected_macs"] / 1e6, 100 * marked["accuracy"], "o", color=styles[method]["color"],
                    markersize=4)
    return panels(ctx, draw, "expected MMACs per sample", "mean test accuracy (%)")


def convergence_figure(ctx: Context) -> Figure:
    """Mean-over-exits test accuracy per round, averaged over seeds."""
    history = mean_history(ctx.main, ctx.data.history, TEST_ACCURACY)
    styles = method_styles(ctx)

    def draw(ax: Axes, column: Column) -> None:
        draw_rounds(ax, column_of(history, column), styles)
    return panels(ctx, draw, "round", "mean test accuracy (%)")


def draw_rounds(ax: Axes, history: pd.DataFrame, styles: dict[str, dict]) -> None:
    """One line per method of a seed-averaged history: accuracy (%) against the round."""
    for method, rows in history.groupby("method"):
        rows = rows.sort_values("step")
        ax.plot(rows["step"], 100 * rows["value"], label=method, **styles[method])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def per_exit_convergence_figure(ctx: Context) -> Figure | None:
    """Each exit's test accuracy per round, averaged over seeds: a row of panels per (dataset, α), a column per exit;
    None when no run's history holds per-exit accuracy."""
    exits = exits_logged(set(ctx.data.history["metric"]))
    if not exits:
        return None
    histories = {k: mean_history(ctx.main, ctx.data.history, exit_accuracy(k)) for k in exits}
    styles = method_styles(ctx)

    def draw(ax: Axes, key: tuple[int, Column]) -> None:
        draw_rounds(ax, column_of(histories[key[0]], key[1]), styles)
    keys = [(k, column) for column in ctx.columns for k in exits]
    return panel_grid(ctx, keys, draw, lambda key: f"exit {key[0]}: {column_title(key[1])}", "round",
                      "test accuracy (%)", len(exits))


def accuracy_communication_figure(ctx: Context) -> Figure | None:
    """Mean-over-exits test accuracy against the bytes uploaded and downloaded so far (all clients, MB), at every
    evaluated round, averaged over seeds; None without communication histories."""
    points = accuracy_at_communication(ctx.main, ctx.data.history)
    if points.empty:
        return None
    styles = method_styles(ctx)

    def draw(ax: Axes, column: Column) -> None:
        for method, rows in column_of(points, column).groupby("method"):
            rows = rows.sort_values("step")
            ax.plot(rows["bytes"] / 1e6, 100 * rows["accuracy"], marker="o", markersize=3, label=method,
                    **styles[method])
    return panels(ctx, draw, "cumulative communication, up + down (MB)", "mean test accuracy (%)")


def client_spread_figure(ctx: Context) -> Figure | None:
    """Per (dataset, α), one box per method: the test accuracy of each client (averaged over the exits it
    holds) pooled over the seeds of the main-table runs; None without per-client results."""
    clients = ctx.data.clients.merge(ctx.main[["method", "dataset", "alpha"]], left_on="run_id", right_index=True)
    if clients.empty:
        return None
    styles = method_styles(ctx)

    def draw(ax: Axes, column: Column) -> None:
        rows = column_of(clients, column)
        shown = [m for m in ctx.methods if (rows["method"] == m).any()]
        if not shown:
            return
        boxes = ax.boxplot([100 * rows.loc[rows["method"] == m, "accuracy"].to_numpy() for m in shown],
                           orientation="horizontal", patch_artist=True, widths=0.6, medianprops={"color": "black"})
        for patch, method in zip(boxes["boxes"], shown, strict=True):
            patch.set_facecolor(styles[method]["color"])
            patch.set_alpha(0.6)
        ax.set_yticks(range(1, len(shown) + 1), shown, fontsize=8)
        ax.invert_yaxis()  # the first method on top
    height = 0.9 + 0.28 * len(ctx.methods)  # a readable line per method
    return panels(ctx, draw, "client test accuracy (%)", "", (PANEL_SIZE[0], max(PANEL_SIZE[1], height)))


def varied_mu(stats: pd.DataFrame) -> pd.Series:
    """Per row of :func:`sensitivity_stats`: whether its (dataset, α) has runs at two or more values of μ."""
    return stats.groupby(["dataset", "alpha"])["mu"].transform("nunique") >= 2


def sensitivity_stats(ctx: Context) -> pd.DataFrame:
    """The method under test's mean-over-exits accuracy per μ, from its sensitivity runs (μ fixed; best validation
    setting per μ)."""
    chosen = mu_points(ctx.runs[ctx.runs["method"] == ctx.under_test], ctx.data.params)
    if chosen.empty:
        return pd.DataFrame(columns=["dataset", "alpha", "mu", "mean", "std", "n", "ci"])
    return seed_stats(chosen, ctx.data.metrics[TEST_ACCURACY], ["dataset", "alpha", "mu"])


def sensitivity_figure(stats: pd.DataFrame, method: str) -> Figure:
    """``method``'s accuracy against μ, one line per (dataset, α) with runs at two or more values of μ, error bars =
    the 95% Student-t interval over seeds."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for (dataset, alpha), rows in stats[varied_mu(stats)].groupby(["dataset", "alpha"]):
        rows = rows.sort_values("mu")
        ax.errorbar(rows["mu"], 100 * rows["mean"], yerr=100 * rows["ci"].fillna(0), marker="o", capsize=3,
                    label=f"{dataset}, α={alpha_label(alpha)}")
    if (stats["mu"] > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel("μ")
    ax.set_ylabel("mean test accuracy (%)")
    ax.set_title(f"{method}: sensitivity to μ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
