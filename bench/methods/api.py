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
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from bench.config import TrainConfig
from bench.data.batching import BatchMaker
from bench.ground.tensor_ops import TensorDict, state_nbytes
from bench.methods.model_state import load_state
from bench.models.base import EarlyExitNet

FAMILIES = ("ours", "pfl", "fee", "base")
# Inputs → every exit's logits (one row per input). Each row must depend on its own input only: evaluation
# pads its batches with zero rows (bench.measure.accuracy.padded_forward).
Predictor = Callable[[torch.Tensor], list[torch.Tensor]]


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

    @classmethod
    def from_section(cls, section: TrainConfig) -> TrainSettings:
        """These settings, each read by its name off the config's ``train`` section."""
        return cls(**{f.name: getattr(section, f.name) for f in fields(cls)})


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
    """Base class of every method. Subclasses set ``name``, ``family``, ``Hparams`` and override the hooks.

    What the engine relies on beyond each hook's own contract: it evaluates a client's *local* model (the one it
    holds right after training, ``eval.point`` ``local`` or ``both``) through the ordinary hooks, as
    ``eval_model(model, c, aggregate(round, {c: upload_c}, server), new_state_c, ...)``, where ``server`` is the
    server state the round began with: the server as if client ``c`` alone had uploaded. For a method whose
    ``aggregate`` averages the uploads (an average of one upload is that upload) this is the model the client
    trained. So ``aggregate`` must be a pure function of its arguments: it must not change ``server`` or the
    uploads in place, as the engine calls it again, once per client, with the same ``server``.
    """

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
