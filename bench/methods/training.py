"""Local training every method shares: the SGD optimiser of the config's ``train`` section and its epoch loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from bench.ground.precision import autocast, grad_scaler
from bench.methods.api import ClientData, TrainSettings
from bench.methods.losses import LossFn
from bench.models.base import EarlyExitNet


def make_optimizer(params: Iterable[torch.nn.Parameter], train: TrainSettings,
                   lr: float | None = None) -> torch.optim.SGD:
    """SGD with the run's momentum and weight decay, at ``lr`` (default: the run's learning rate)."""
    return torch.optim.SGD(list(params), lr=train.lr if lr is None else lr, momentum=train.momentum,
                           weight_decay=train.weight_decay)


def train_epochs(model: EarlyExitNet, data: ClientData, gen: torch.Generator, train: TrainSettings,
                 loss_fn: LossFn,
                 params: Iterable[torch.nn.Parameter] | None = None, epochs: int | None = None,
                 lr: float | None = None, after_step: Callable[[], None] | None = None) -> float:
    """Plain SGD over the client's train split; returns the mean loss. ``params`` defaults to all parameters.

    ``loss_fn(model, x, y)`` returns the scalar loss of a batch; ``after_step`` runs after each optimiser step.
    The forward pass runs in ``train.precision`` (autocast; fp16 with a gradient scaler). Losses are summed on the
    batches' device in float64 and read back once, at the end: no host-device sync per batch.
    """
    model.train()
    chosen = list(model.parameters()) if params is None else list(params)
    opt = make_optimizer(chosen, train, lr)
    device_type = data.batches.device.type
    scaler = grad_scaler(device_type, train.precision)
    total = torch.zeros((), dtype=torch.float64, device=data.batches.device)
    count = 0
    n_epochs = train.local_epochs if epochs is None else epochs
    for xb, yb in data.batches.train_batches(data.train_idx, train.batch_size, gen, epochs=n_epochs):
        opt.zero_grad(set_to_none=True)
        with autocast(device_type, train.precision):
            loss = loss_fn(model, xb, yb)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if after_step is not None:
            after_step()
        total += loss.detach().double()
        count += 1
    return float(total) / max(count, 1)
