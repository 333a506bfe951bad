"""Server-side aggregation shared by the methods: one global model, or one personalized model per client.

* :func:`average_uploads` — FedAvg's train-size-weighted average of a round's uploads;
* :class:`GlobalModelMethod` — a method whose server holds one global model ``{"model": tensors}``, sends it
  whole, averages the uploads into it with :func:`average_uploads` and evaluates it (FedAvg, Ditto's global
  model, FedRoD's generic model);
* :func:`personalized_aggregates` — per-client weighted aggregation: client ``i`` of the round receives
  ``Σ_j w_ij θ_j`` over the round's uploads, each row of weights its own (FedAMP's cloud models, pFedGraph's
  graph aggregates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bench.ground.tensor_ops import TensorDict, weighted_average
from bench.methods.api import Message, Method


def average_uploads(uploads: Mapping[int, Message], train_sizes: Sequence[int]) -> TensorDict:
    """The uploads' tensors averaged with weights proportional to their clients' train sizes (FedAvg)."""
    clients = list(uploads)
    return weighted_average([uploads[c].tensors for c in clients], [train_sizes[c] for c in clients])


def personalized_aggregates(uploads: Mapping[int, Message], weights: torch.Tensor,
                            previous: Sequence[TensorDict]) -> list[TensorDict]:
    """Every client's aggregate: ``Σ_j weights[i, j]·θ_j`` for the round's i-th client, ``previous`` for the rest.

    ``weights`` is n×n over the round's n clients in the order of ``uploads``; each row must be non-negative
    with a positive sum (it is normalised). ``previous`` holds one aggregate per client of the federation.
    """
    clients = list(uploads)
    if weights.shape != (len(clients), len(clients)):
        raise ValueError(f"weights must be {len(clients)}×{len(clients)} for the round's {len(clients)} uploads, "
                         f"got {tuple(weights.shape)}")
    models = [uploads[c].tensors for c in clients]
    out = list(previous)
    for row, client in enumerate(clients):
        out[client] = weighted_average(models, weights[row])
    return out


class GlobalModelMethod(Method):
    """Server state ``{"model": tensors}``: sent whole, averaged by train size, evaluated as is.

    Subclasses implement :meth:`~bench.methods.api.Method.local_update` (and override evaluation where the
    evaluated model is not the global one).
    """

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        return Message(server["model"])

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        return {"model": average_uploads(uploads, self.ctx.client_train_sizes)}

    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return server["model"]
