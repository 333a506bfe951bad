"""A run's description (the MLflow UI's note, tag ``mlflow.note.content``): a short Markdown summary of what ran,
how accurate each exit ended, what dynamic inference costs at the report threshold, and where the run stopped."""

from __future__ import annotations

from bench.config import ExperimentConfig
from bench.record_names import TEST_ACCURACY, dynamic, exit_accuracy, exits_logged


def run_description(config: ExperimentConfig, metrics: dict[str, float], round_done: int,
                    stopped: str | None = None) -> str:
    """Markdown for a run after ``round_done`` rounds; ``metrics`` hold the latest evaluation (``test/acc/...``)
    and, once finished, the summary (``dyn/...``); ``stopped`` is what stopped an unfinished run."""
    d, t = config.data, config.train
    lines = [f"**{config.method.name}** on **{d.dataset}**: {d.clients} clients, α = {d.alpha:g}, seed "
             f"{config.seed}; model {config.model.name} (width {config.model.width:g}), {t.rounds} rounds."]
    exits = exits_logged(metrics)
    if exits:
        evaluated = "final" if round_done >= t.rounds else f"at round {round_done}"
        lines += ["", f"Mean client test accuracy ({evaluated}):", "",
                  "| " + " | ".join(["exit", *map(str, exits), "mean"]) + " |",
                  "|" + "---|" * (len(exits) + 2),
                  "| " + " | ".join(["accuracy", *(f"{metrics[exit_accuracy(k)]:.4f}" for k in exits),
                                     f"{metrics.get(TEST_ACCURACY, float('nan')):.4f}"]) + " |"]
    threshold = config.eval.report_threshold
    if dynamic("acc", threshold) in metrics:
        lines += ["", f"Dynamic inference at threshold {threshold:g}: accuracy "
                      f"{metrics[dynamic('acc', threshold)]:.4f}, "
                      f"{metrics[dynamic('macs', threshold)] / 1e6:.4g} MMACs per sample, cost reduction "
                      f"{100 * metrics[dynamic('cost_reduction', threshold)]:.1f} %, accuracy drop "
                      f"{100 * metrics[dynamic('acc_drop', threshold)]:.2f} points."]
    if stopped is not None:
        lines += ["", f"**Stopped** after round {round_done} of {t.rounds}: {stopped}"]
    elif round_done < t.rounds:
        lines += ["", f"Running: round {round_done} of {t.rounds} done."]
    return "\n".join(lines)
