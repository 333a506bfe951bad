"""Per-exit accuracy of a client's model: one forward pass per batch gives every exit's prediction."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from bench.data.batching import BatchMaker
from bench.ground.precision import autocast
from bench.measure.dynamic import ExitRecords, exit_outcomes
from bench.methods.api import Predictor
from bench.record_names import accuracy_mean, exit_accuracy, exit_accuracy_spread

# Evaluation batches are padded to a multiple of this many rows. Every new input shape makes the CPU kernels
# (oneDNN) build and cache code for it, about 200 KB for a small CNN; clients' val and test splits have as many
# sizes as clients have different sample counts, so unpadded, that cache grew with the number of clients.
EVAL_SHAPE_MULTIPLE = 8


def padded_forward(predict: Predictor, x: torch.Tensor) -> list[torch.Tensor]:
    """Every exit's logits of the batch ``x``, computed on ``x`` padded with zero rows to a multiple of
    :data:`EVAL_SHAPE_MULTIPLE` rows; the padding rows are dropped from the result.

    Predictors score every sample on its own (models in eval mode), so the padding changes no real row's logits
    beyond floating-point rounding.
    """
    n = x.shape[0]
    padding = -n % EVAL_SHAPE_MULTIPLE
    if padding:
        x = torch.cat([x, x.new_zeros((padding, *x.shape[1:]))])
    logits = predict(x)
    for k, exit_logits in enumerate(logits):
        if exit_logits.dim() < 1 or exit_logits.shape[0] != x.shape[0]:
            raise ValueError(f"the predictor returned {tuple(exit_logits.shape)} logits at exit {k + 1} for a "
                             f"batch of {x.shape[0]} inputs; it must return one row per input")
    return [exit_logits[:n] for exit_logits in logits]


@torch.no_grad()
def exit_outcomes_of(predict: Predictor, batches: BatchMaker, idx: torch.Tensor, batch_size: int,
                     precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample confidence and correctness (N × m tensors, see :func:`~bench.measure.dynamic.exit_outcomes`) at
    every exit the predictor returns, computed on the batches' device in ``precision`` (batches run through
    :func:`padded_forward`); nothing is read back to the host."""
    if isinstance(predict, torch.nn.Module):
        predict.eval()
    parts = []
    for xb, yb in batches.eval_batches(idx, batch_size):
        with autocast(batches.device.type, precision):
            logits = padded_forward(predict, xb)
        parts.append(exit_outcomes(logits, yb))
    if not parts:
        raise ValueError("no samples to evaluate: idx is empty")
    if len(parts) == 1:
        return parts[0]
    counts = {part[0].shape[1] for part in parts}
    if len(counts) > 1:
        raise ValueError(f"the predictor returned different numbers of exits across batches: {sorted(counts)}")
    return torch.cat([c for c, _ in parts]), torch.cat([k for _, k in parts])


def exit_records(predict: Predictor, batches: BatchMaker, idx: torch.Tensor, batch_size: int,
                 precision: str = "fp32") -> ExitRecords:
    """:func:`exit_outcomes_of` as host records (the engine keeps a whole evaluation's in
    :class:`~bench.measure.dynamic.ClientRecords` instead)."""
    confidence, correct = exit_outcomes_of(predict, batches, idx, batch_size, precision)
    return ExitRecords(confidence.cpu().numpy(), correct.cpu().numpy())


def summarize_exits(per_client: Mapping[int, ExitRecords], num_exits: int, split: str) -> dict[str, float]:
    """Mean client accuracy per exit, its spread over clients, and the mean over exits, named after ``split``
    (``test``, ``val``, or either under the ``local/`` prefix).

    A client that holds fewer exits (a shallow capacity tier) counts only for the exits it holds.
    ``{split}/acc/mean`` is the mean over clients of each client's mean over its own exits.
    """
    per_exit: list[list[float]] = [[] for _ in range(num_exits)]
    client_means: list[float] = []
    for records in per_client.values():
        acc = records.exit_accuracy
        for k, a in enumerate(acc):
            per_exit[k].append(float(a))
        client_means.append(float(acc.mean()))
    metrics: dict[str, float] = {}
    for k, values in enumerate(per_exit, start=1):
        if values:
            metrics[exit_accuracy(k, split)] = float(np.mean(values))
            metrics[exit_accuracy_spread(k, split)] = float(np.std(values))
    metrics[accuracy_mean(split)] = float(np.mean(client_means))
    return metrics
