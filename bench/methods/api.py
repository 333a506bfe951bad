"""The plugin API: what a federated method declares and the hooks the engine calls.

A method is a class with a ``name``, a ``family`` (``ours`` | ``pfl`` | ``fee`` | ``base``), its hyperparameters
as a pydantic model ``Hparams`` (defaults, and ``json_schema_extra={"search": ...}`` ranges for tuning) and five
hooks:

* :meth:`Method.init_server` / :meth:`Method.init_client` — the global state and each client's personal state;
* :meth:`Method.payload` — the message the server sends to a client in a round;
* :meth:`Method.local_update` — the client's update, a *pure function* of (payload, personal state, the
  client's data, a seeded generator): it must not read or write anything else, which is what lets serial,
  process and Ray executors give bitwise-identical results and lets a run resume after a crash;
* :meth:`Method.aggregate` — the server's update from the uploads of the round;
* :meth:`Method.eval_model` — the model to evaluate for a client.

All states are plain containers of tensors (nested dicts/lists of tensors, numbers and strings) so the
engine can checkpoint them with ``torch.save`` and reload them with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from bench.data.batching import BatchMaker
from bench.ground.precision import autocast, grad_scaler
from bench.ground.tensor_ops import TensorDict, state_nbytes
from bench.models.base import EarlyExitNet

FAMILIES = ("ours", "pfl", "fee", "base")
# Inputs → every exit's logits (one row per input). Each row must depend on its own input only: evaluation
# pads its batches with zero rows (bench.measure.accuracy.padded_forward).
Predictor = Callable[[torch.Tensor], list[torch.Tensor]]
LossFn = Callable[[EarlyExitNet, torch.Tensor, torch.Tensor], torch.Tensor]


class Hparams(BaseModel):
    """Base class of every method's hyperparameters: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def search_space(hparams_cls: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """The tuning ranges a method declares: ``{field: {"low":..,"high":..,"log":..} | {"choices": [...]}}``."""
    space = {}
    for name, info in hparams_cls.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "search" in extra:
            space[name] = dict(extra["search"])
    return space


@dataclass
class Message:
    """What crosses the network between server and client: tensors (counted) and small control data."""

    tensors: TensorDict = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return state_nbytes(self.tensors)


@dataclass
class TrainSettings:
    """The local-training settings common to all methods (the config's ``train`` section)."""

    local_epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    precision: str = "fp32"  # fp32 | bf16 | fp16 (bench.ground.precision)


@dataclass
class ClientData:
    """A client's view of the federated data: index tensors into the shared in-memory dataset."""

    client: int
    batches: BatchMaker
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor

    @property
    def num_train(self) -> int:
        return int(self.train_idx.numel())

    def train_labels(self) -> torch.Tensor:
        return self.batches.y[self.train_idx]


@dataclass
class MethodContext:
    """Facts about the experiment a method may use; identical on the server and in every worker."""

    num_clients: int
    num_classes: int
    num_exits: int
    rounds: int
    train: TrainSettings
    client_train_sizes: list[int]
    seed: int
    build_model: Callable[..., EarlyExitNet]


@dataclass
class LocalResult:
    """What a local update returns: the upload (counted), the new personal state, training metrics."""

    upload: Message
    state: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)


class Method:
    """Base class of every method. Subclasses set ``name``, ``family``, ``Hparams`` and override the hooks."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "pfl"
    Hparams: ClassVar[type[Hparams]] = Hparams
    # Where the report lists the method among those of its family: lower first. Read from the class's own body, not
    # inherited (a FedAvg subclass is not listed in FedAvg's place); None lists it after the ranked ones, by name.
    order: ClassVar[int | None] = None

    def __init__(self, hparams: Hparams, ctx: MethodContext):
        self.hp = hparams
        self.ctx = ctx

    @classmethod
    def epochs_per_round(cls, hparams: Hparams, local_epochs: int) -> float:
        """Passes over its train split that a client's local update makes in a round, for workload estimates and
        progress (default: ``train.local_epochs``, as FedAvg). A method that trains more declares it; a phase that
        trains part of the network (a head on a frozen body) counts as a full pass, so this is an upper bound."""
        return float(local_epochs)

    # -- server side -------------------------------------------------------------------------------------
    def init_server(self, model: EarlyExitNet) -> dict[str, Any]:
        """The initial global state, from a freshly initialised model (same seed → same weights)."""
        return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}}

    def init_client(self, client: int, model: EarlyExitNet, server: dict[str, Any]) -> dict[str, Any]:
        """A client's initial personal state (empty for methods without one)."""
        return {}

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        raise NotImplementedError

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # -- client side -------------------------------------------------------------------------------------
    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        raise NotImplementedError

    # -- evaluation --------------------------------------------------------------------------------------
    def eval_model(self, model: EarlyExitNet, client: int, server: dict[str, Any], state: dict[str, Any],
                   data: ClientData, gen: torch.Generator) -> Predictor:
        """The client's model for evaluation; default: load ``eval_params`` and use the network as is."""
        load_state(model, self.eval_params(client, server, state))
        return model

    def eval_params(self, client: int, server: dict[str, Any], state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        raise NotImplementedError

    def client_exits(self, client: int) -> int:
        """How many exits this client's model holds (fewer for shallow capacity tiers)."""
        return self.ctx.num_exits

    def client_width(self, client: int) -> float | None:
        """Width multiplier of this client's sub-model (None: the configured full width)."""
        return None


# -- helpers every method uses --------------------------------------------------------------------------------

def load_state(model: EarlyExitNet, *parts: Mapping[str, torch.Tensor]) -> None:
    """Copy the given tensors into ``model`` in place; together they must cover every parameter and buffer.

    Requiring full coverage keeps local updates pure: nothing of the previous client's model can leak in.
    """
    own = model.state_dict()
    covered: set[str] = set()
    with torch.no_grad():
        for part in parts:
            for key, value in part.items():
                if key not in own:
                    raise KeyError(f"{key!r} is not a parameter or buffer of {type(model).__name__}")
                own[key].copy_(value)
                covered.add(key)
    missing = own.keys() - covered
    if missing:
        raise KeyError(f"load_state left {len(missing)} entries unset, e.g. {sorted(missing)[:3]}: "
                       "a method must provide the whole model (shared part + personal part)")


def extract(model: EarlyExitNet, keep: Callable[[str], bool] = lambda _: True) -> TensorDict:
    """Detached copies of the model's parameters and buffers whose names pass ``keep``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if keep(k)}


def is_head(name: str) -> bool:
    return name.startswith("exits.")


def is_backbone(name: str) -> bool:
    return not name.startswith("exits.")


def head_index(name: str) -> int:
    """0-based exit index of a head parameter name ``exits.{k}.…``."""
    return int(name.split(".")[1])


def split_state(tensors: Mapping[str, torch.Tensor], keep: Callable[[str], bool]) -> TensorDict:
    return {k: v for k, v in tensors.items() if keep(k)}


def exit_logits(model: EarlyExitNet, features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every exit head applied to the pooled features it reads (``model.features(x)``)."""
    return [head(f) for head, f in zip(model.exits, features, strict=True)]


def exit_ce_losses(logits: list[torch.Tensor], y: torch.Tensor) -> list[torch.Tensor]:
    return [F.cross_entropy(z, y) for z in logits]


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, tau: float) -> torch.Tensor:
    """Knowledge distillation: ``τ²·KL(teacher ‖ softmax(z/τ))``, averaged over the batch."""
    log_student = F.log_softmax(student_logits / tau, dim=-1)
    return tau * tau * F.kl_div(log_student, teacher_probs, reduction="batchmean")


def make_optimizer(params, train: TrainSettings, lr: float | None = None) -> torch.optim.SGD:
    return torch.optim.SGD(list(params), lr=train.lr if lr is None else lr, momentum=train.momentum,
                           weight_decay=train.weight_decay)


def train_epochs(model: EarlyExitNet, data: ClientData, gen: torch.Generator, train: TrainSettings,
                 loss_fn: LossFn,
                 params=None, epochs: int | None = None, lr: float | None = None,
                 after_step: Callable[[], None] | None = None) -> float:
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


def sum_ce_loss(model: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The "-EE" default objective: the sum of the cross-entropy losses of all exits."""
    return torch.stack(exit_ce_losses(model(x), y)).sum()
