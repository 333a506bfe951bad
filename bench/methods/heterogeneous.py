"""Capacity tiers: clients that hold depth- and width-scaled sub-models of one global early-exit network.

Shared by the federated early-exit baselines (DepthFL, ScaleFL, InclusiveFL):

* a :class:`CapacityLevel` is ``(fraction of clients, depth, width)``: a client at that level holds the first
  ``depth`` stages and their exits, at width multiplier ``width`` (``None``: the configured ``model.width``);
* :func:`assign_tiers` assigns clients to levels deterministically from (seed, fractions): the fractions are
  turned into client counts by largest-remainder rounding (:func:`tier_sizes`), and a permutation of the
  clients drawn from the generator of ``(seed, "capacity-tiers")`` is cut into consecutive blocks of those
  sizes, level 0 first;
* a width-``w`` model's parameters are the *leading slices* of the full model's (``bench.models`` scales
  every hidden size and keeps the architecture), so a narrow client's sub-model is
  ``full[:out_w, :in_w, ...]`` of every entry (:func:`leading_region`);
* :func:`aggregate_held` averages every entry over exactly the clients that hold it (weighted by train size),
  element-wise for width slices; what nobody in the round holds keeps its previous global value;
* :class:`CapacityPlan` puts these together for one experiment (and caches one sub-model per (width, depth),
  optionally with the activation scaler of :func:`bench.methods.batchnorm.add_activation_scaler`);
  :class:`TieredMethod` is the base class of methods whose server keeps one global model of which every
  client trains its own sub-model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from pydantic import AfterValidator
from torch import nn

from bench.ground.rng import numpy_generator
from bench.ground.tensor_ops import TensorDict, weighted_average
from bench.methods.api import ClientData, Hparams, Message, Method, MethodContext, Predictor
from bench.methods.batchnorm import add_activation_scaler
from bench.methods.losses import LossFn
from bench.methods.model_state import load_state
from bench.methods.training import train_epochs
from bench.models.base import EXITS_PREFIX, STAGES_PREFIX, EarlyExitNet

FRACTION_TOLERANCE = 1e-6
Shapes = dict[str, torch.Size]


@dataclass(frozen=True)
class CapacityLevel:
    """A share of the clients that hold the first ``depth`` stages (and exits) at width ``width``."""

    fraction: float
    depth: int
    width: float | None = None


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """The fractions, if they are non-negative and sum to one; else a ValueError saying so."""
    values = [float(f) for f in fractions]
    if not values or any(f < 0 for f in values) or abs(sum(values) - 1.0) > FRACTION_TOLERANCE:
        raise ValueError(f"client fractions must be non-negative and sum to 1, got {values} "
                         f"(sum {sum(values):.6g})")
    return values


#: Hyperparameter type of per-tier client fractions (validated: non-negative, summing to one).
ClientFractions = Annotated[list[float], AfterValidator(check_fractions)]


def tier_sizes(num_clients: int, fractions: Sequence[float]) -> list[int]:
    """Clients per tier: ``floor(f·N)``, then one more each to the largest remainders (ties: lower tier)."""
    exact = [f * num_clients for f in check_fractions(fractions)]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda k: (-(exact[k] - sizes[k]), k))
    for k in by_remainder[: num_clients - sum(sizes)]:
        sizes[k] += 1
    return sizes


def assign_tiers(seed: int, num_clients: int, fractions: Sequence[float]) -> list[int]:
    """Tier of every client: a seeded permutation of the clients cut into blocks of :func:`tier_sizes`."""
    order = numpy_generator(seed, "capacity-tiers").permutation(num_clients)
    tiers = [0] * num_clients
    start = 0
    for tier, size in enumerate(tier_sizes(num_clients, fractions)):
        for client in order[start:start + size]:
            tiers[int(client)] = tier
        start += size
    return tiers


def block_index(name: str) -> int | None:
    """The 0-based stage/exit index of ``stages.{k}.…`` and ``exits.{k}.…`` names; None for anything else."""
    for prefix in (STAGES_PREFIX, EXITS_PREFIX):
        if name.startswith(prefix) and len(name) > len(prefix):
            return int(name[len(prefix):].split(".", 1)[0])
    return None


def holds_entry(name: str, depth: int) -> bool:
    """Whether a sub-model of ``depth`` stages holds entry ``name`` (entries outside stages/exits: always)."""
    index = block_index(name)
    return index is None or index < depth


def truncate(model: EarlyExitNet, depth: int) -> EarlyExitNet:
    """Drop the stages and exits from ``depth`` on, in place: the model then holds only its first exits."""
    model.stages = nn.ModuleList(list(model.stages)[:depth])
    model.exits = nn.ModuleList(list(model.exits)[:depth])
    return model


def leading_region(shape: Sequence[int]) -> tuple[slice, ...]:
    """Index of the leading block of the given shape: ``[:shape[0], :shape[1], ...]``."""
    return tuple(slice(0, n) for n in shape)


def check_leading_slices(full: Shapes, sub: Shapes, what: str) -> None:
    """Raise unless every entry of ``sub`` has a shape no larger, dimension by dimension, than in ``full``."""
    for name, shape in sub.items():
        big = full.get(name)
        if big is None or len(big) != len(shape) or not covers(big, shape):
            raise ValueError(f"{what}: entry {name!r} of shape {tuple(shape)} is not a leading slice of the "
                             f"full model's {None if big is None else tuple(big)}; sub-model widths are "
                             "multipliers of the base architecture like model.width and must not exceed it")


def covers(outer: Sequence[int], inner: Sequence[int]) -> bool:
    """Whether a leading block of shape ``outer`` contains one of shape ``inner`` (same dimensions)."""
    return all(o >= i for o, i in zip(outer, inner, strict=True))


def aggregate_held(previous: Mapping[str, torch.Tensor], uploads: Sequence[Mapping[str, torch.Tensor]],
                   weights: Sequence[float]) -> TensorDict:
    """Every entry of ``previous`` averaged over exactly the uploads that hold it, weighted by ``weights``.

    An upload holds an entry if it has the key; its tensor is the leading slice of that shape. Element by
    element, the average runs over the uploads whose slice covers the element; elements (or whole entries)
    that no upload covers keep their ``previous`` value. Slices must be nested (each one's shape covers or is
    covered by every other's), as width-scaled sub-models are. Integer entries (BatchNorm's
    ``num_batches_tracked``) are not averaged: the first holder's value is kept. When every upload holds every
    entry whole, this is :func:`~bench.ground.tensor_ops.weighted_average` exactly (bitwise).
    """
    if len(uploads) != len(weights):
        raise ValueError(f"{len(uploads)} uploads but {len(weights)} weights")
    out: TensorDict = {}
    for key, prev in previous.items():
        holders = [(u[key], w) for u, w in zip(uploads, weights, strict=True) if key in u]
        if not holders:
            out[key] = prev.clone()
            continue
        if not prev.is_floating_point():
            out[key] = holders[0][0].clone()
            continue
        shapes = sorted({tuple(t.shape) for t, _ in holders}, key=math.prod, reverse=True)
        for outer, inner in zip(shapes, shapes[1:], strict=False):
            if not covers(outer, inner):
                raise ValueError(f"entry {key!r}: uploaded slices {outer} and {inner} are not nested")
        if not covers(prev.shape, shapes[0]):
            raise ValueError(f"entry {key!r}: uploaded shape {shapes[0]} exceeds the global "
                             f"{tuple(prev.shape)}")
        result = prev.clone()
        # largest region first: each smaller one is then overwritten by its average over more holders
        for shape in shapes:
            region = leading_region(shape)
            covering = [(t[region], w) for t, w in holders if covers(t.shape, shape)]
            result[region] = weighted_average([{key: t} for t, _ in covering], [w for _, w in covering])[key]
        out[key] = result
    return out


class CapacityPlan:
    """One experiment's capacity levels: which client holds what, its sub-model, held-entry aggregation."""

    def __init__(self, ctx: MethodContext, levels: Sequence[CapacityLevel], activation_scaler: bool = False):
        if not levels:
            raise ValueError("at least one capacity level is needed")
        for level in levels:
            if not 1 <= level.depth <= ctx.num_exits:
                raise ValueError(f"capacity level depth must be between 1 and the model's {ctx.num_exits} "
                                 f"exits, got {level.depth}")
            if level.width is not None and not level.width > 0:
                raise ValueError(f"capacity level width must be positive, got {level.width}")
        self.ctx = ctx
        self.levels = list(levels)
        self.activation_scaler = activation_scaler
        self.tier_of = assign_tiers(ctx.seed, ctx.num_clients, [level.fraction for level in levels])
        full = ctx.build_model()
        self.parameter_names = frozenset(name for name, _ in full.named_parameters())
        self._shapes: dict[float | None, Shapes] = {None: {k: v.shape for k, v in full.state_dict().items()}}
        for width in {level.width for level in levels} - {None}:
            self._shapes[width] = {k: v.shape for k, v in ctx.build_model(width).state_dict().items()}
            check_leading_slices(self._shapes[None], self._shapes[width], f"width {width:g}")
        self._models: dict[tuple[float | None, int], EarlyExitNet] = {}

    def shapes(self, width: float | None = None) -> Shapes:
        """The state shapes of the model at ``width`` (None: the full model)."""
        return dict(self._shapes[width])

    def level(self, client: int) -> CapacityLevel:
        return self.levels[self.tier_of[client]]

    def is_full(self, client: int) -> bool:
        level = self.level(client)
        return level.depth == self.ctx.num_exits and level.width is None

    def holds(self, client: int, name: str) -> bool:
        return holds_entry(name, self.level(client).depth)

    def held_part(self, client: int, tensors: Mapping[str, torch.Tensor]) -> TensorDict:
        """The entries of full-model ``tensors`` that ``client`` holds, sliced to its sub-model's shapes."""
        level = self.level(client)
        shapes = self._shapes[level.width]
        out: TensorDict = {}
        for name, value in tensors.items():
            if holds_entry(name, level.depth):
                shape = shapes[name]
                out[name] = value if value.shape == shape else value[leading_region(shape)].clone()
        return out

    def model_for(self, client: int, scratch: EarlyExitNet) -> EarlyExitNet:
        """The client's sub-model: ``scratch`` (the full model) if it holds all of it, else a cached one."""
        if self.is_full(client):
            return scratch
        level = self.level(client)
        key = (level.width, level.depth)
        if key not in self._models:
            sub = truncate(self.ctx.build_model(level.width), level.depth)
            if self.activation_scaler:
                add_activation_scaler(sub, self._shapes[None])
            self._models[key] = sub
        return self._models[key]

    def aggregate(self, previous: Mapping[str, torch.Tensor], uploads: Mapping[int, Message],
                  uniform: bool = False) -> TensorDict:
        """:func:`aggregate_held` of the round's uploads, weighted by train size (``uniform``: equally)."""
        clients = list(uploads)
        weights = [1.0 if uniform else self.ctx.client_train_sizes[c] for c in clients]
        return aggregate_held(previous, [uploads[c].tensors for c in clients], weights)


def depth_levels(tiers: Sequence[float] | None, num_exits: int) -> list[CapacityLevel]:
    """Levels from per-depth client fractions (``tiers[k]``: share of clients holding ``k + 1`` exits).

    ``None`` puts every client at full depth.
    """
    if tiers is None:
        return [CapacityLevel(1.0, num_exits)]
    if len(tiers) != num_exits:
        raise ValueError(f"tiers must give one client fraction per depth, i.e. {num_exits} values for this "
                         f"model's {num_exits} exits, got {len(tiers)}: {list(tiers)}")
    return [CapacityLevel(fraction, depth) for depth, fraction in enumerate(tiers, start=1)]


class TieredMethod(Method):
    """A global model on the server; each client trains and is evaluated on its own sub-model of it.

    Server state: ``{"model": full-model tensors}``. The payload is the client's held part (so only that is
    counted as communication), the upload its trained sub-model, and the aggregate the held-entry average.
    Subclasses give their capacity levels (:meth:`capacity_levels`) and their local objective.
    """

    family = "fee"

    def __init__(self, hparams: Hparams, ctx: MethodContext):
        super().__init__(hparams, ctx)
        self.plan = CapacityPlan(ctx, self.capacity_levels(), self.uses_activation_scaler())

    def capacity_levels(self) -> list[CapacityLevel]:
        raise NotImplementedError

    def uses_activation_scaler(self) -> bool:
        """Whether narrow sub-models scale their convolutions' outputs by their width rate (ScaleFL)."""
        return False

    def client_exits(self, client: int) -> int:
        return self.plan.level(client).depth

    def client_width(self, client: int) -> float | None:
        return self.plan.level(client).width

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        return Message(self.plan.held_part(client, server["model"]))

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        return {**server, "model": self.plan.aggregate(server["model"], uploads)}

    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return self.plan.held_part(client, server["model"])

    def eval_model(self, model: EarlyExitNet, client: int, server: dict[str, Any], state: dict[str, Any],
                   data: ClientData, gen: torch.Generator) -> Predictor:
        sub = self.plan.model_for(client, model)
        load_state(sub, self.eval_params(client, server, state))
        return sub

    def train_sub_model(self, scratch: EarlyExitNet, start: Mapping[str, torch.Tensor], data: ClientData,
                        gen: torch.Generator, loss_fn: LossFn) -> tuple[EarlyExitNet, float]:
        """Load ``start`` into the client's sub-model, train it with ``loss_fn``; return it, the mean loss."""
        sub = self.plan.model_for(data.client, scratch)
        load_state(sub, start)
        return sub, train_epochs(sub, data, gen, self.ctx.train, loss_fn)
