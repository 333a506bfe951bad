"""Per-exit accuracy of a client's model: one forward pass per batch gives every exit's prediction."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from bench.data.batching import BatchMaker
from bench.measure.dynamic import ExitRecords
from bench.methods.api import Predictor


@torch.no_grad()
def exit_records(predict: Predictor, batches: BatchMaker, idx: torch.Tensor, batch_size: int,
                 out: ExitRecords | None = None) -> ExitRecords:
    """Per-sample confidence and correctness at every exit the predictor returns.

    With ``out`` (records of ``len(idx)`` samples, e.g. a client's view of a :class:`ClientRecords`) the rows are
    written into it and it is returned.
    """
    if isinstance(predict, torch.nn.Module):
        predict.eval()
    parts = (ExitRecords.from_logits(predict(xb), yb) for xb, yb in batches.eval_batches(idx, batch_size))
    if out is None:
        return ExitRecords.concat(list(parts))
    if out.num_samples != len(idx):
        raise ValueError(f"out holds {out.num_samples} samples but {len(idx)} are evaluated")
    start = 0
    for part in parts:
        if part.num_exits != out.num_exits:
            raise ValueError(f"the predictor returned {part.num_exits} exits but out holds {out.num_exits}")
        out.confidence[start : start + part.num_samples] = part.confidence
        out.correct[start : start + part.num_samples] = part.correct
        start += part.num_samples
    return out


def summarize_exits(per_client: Mapping[int, ExitRecords], num_exits: int, prefix: str) -> dict[str, float]:
    """Mean client accuracy per exit, its spread over clients, and the mean over exits.

    A client that holds fewer exits (a shallow capacity tier) counts only for the exits it holds.
    ``{prefix}/acc/mean`` is the mean over clients of each client's mean over its own exits.
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
            metrics[f"{prefix}/acc/exit_{k}"] = float(np.mean(values))
            metrics[f"{prefix}/acc/exit_{k}/client_std"] = float(np.std(values))
    metrics[f"{prefix}/acc/mean"] = float(np.mean(client_means))
    return metrics
