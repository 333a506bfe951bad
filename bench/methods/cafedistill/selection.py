"""Which student exits are active in a round: progressive, depth-prioritized selection (spec section 5).

Exits are 0-based here: with ``m`` exits, the students are exits ``0..m-2`` and exit ``m-1`` is the teacher
side (always trained). The schedule's ``t`` is 1-based (the engine's ``round + 1``), so the last round has
``R = 1`` and every student is active from ``t = T/2`` on. Counts use exact fractions, so no student is lost
to floating-point error in ``⌊2t/T·(m−1)·n⌋``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch

from bench.ground.tensor_ops import weighted_average

DepthOrder = Literal["shallow_first", "deep_first"]
StudentSets = list[list[int]]


@dataclass(frozen=True)
class StudentBudget:
    """``active`` = K students in all; ``full_depths`` = d depths active on every client; ``extra_clients`` =
    r clients that also get the next depth (``K = n·d + r``, ``0 ≤ r < n``)."""

    active: int
    full_depths: int
    extra_clients: int


def active_fraction(t: int, total_rounds: int) -> Fraction:
    """``R(t) = min(2t/T, 1)`` as an exact fraction; ``t`` is 1-based (1..T)."""
    if total_rounds < 1:
        raise ValueError(f"total_rounds must be >= 1, got {total_rounds}")
    if t < 0:
        raise ValueError(f"t must be >= 0, got {t}")
    return min(Fraction(2 * t, total_rounds), Fraction(1))


def student_budget(t: int, total_rounds: int, num_exits: int, num_clients: int) -> StudentBudget:
    """``K = ⌊R(t)·(m−1)·n⌋``, ``d = ⌊(m−1)·R(t)⌋``, ``r = K − n·d`` in exact arithmetic."""
    ratio = active_fraction(t, total_rounds)
    students_per_client = max(num_exits - 1, 0)
    active = math.floor(ratio * students_per_client * num_clients)
    full_depths = math.floor(ratio * students_per_client)
    return StudentBudget(active, full_depths, active - num_clients * full_depths)


def student_depth_order(num_exits: int, depth_order: DepthOrder) -> list[int]:
    """Student exits in the order they are switched on: shallowest first, or deepest first ([A-7])."""
    depths = list(range(num_exits - 1))
    if depth_order == "shallow_first":
        return depths
    if depth_order == "deep_first":
        return depths[::-1]
    raise ValueError(f"depth_order must be 'shallow_first' or 'deep_first', got {depth_order!r}")


def progressive_students(budget: StudentBudget, order: Sequence[int], ranking: Sequence[int],
                         num_clients: int) -> StudentSets:
    """Tier 1: the first ``d`` depths of ``order`` on every client; tier 2: the first ``r`` clients of
    ``ranking`` (best first) also get ``order[d]``. Returns each client's sorted active student exits."""
    tier1 = list(order[: budget.full_depths])
    students = [list(tier1) for _ in range(num_clients)]
    if budget.extra_clients:
        if len(ranking) < budget.extra_clients:
            raise ValueError(f"tier 2 needs {budget.extra_clients} ranked clients, got {len(ranking)}")
        for client in ranking[: budget.extra_clients]:
            students[client].append(order[budget.full_depths])
    return [sorted(s) for s in students]


def random_students(active: int, num_exits: int, num_clients: int, gen: torch.Generator) -> StudentSets:
    """``active`` (client, student exit) pairs drawn uniformly without replacement (``selection=random``)."""
    per_client = num_exits - 1
    students: StudentSets = [[] for _ in range(num_clients)]
    if per_client <= 0:
        return students
    for pair in torch.randperm(per_client * num_clients, generator=gen)[:active].tolist():
        students[pair // per_client].append(pair % per_client)
    return [sorted(s) for s in students]


def rank_clients(scores: Sequence[float], sizes: Sequence[int]) -> list[int]:
    """Clients best first: highest score, then largest train split, then lowest index; NaN ranks last."""
    def key(client: int) -> tuple[float, int, int]:
        score = scores[client]
        return (-score if not math.isnan(score) else math.inf, -sizes[client], client)

    return sorted(range(len(sizes)), key=key)


def update_alignment(updates: Sequence[Mapping[str, torch.Tensor]],
                     key_groups: Sequence[Sequence[str]]) -> torch.Tensor:
    """The [A-6] tier-2 score of every update for every prefix of ``key_groups``.

    Entry ``[j, e]`` is the cosine similarity between update ``j`` and the plain mean of all ``updates``, both
    restricted to the keys of groups ``0..e`` (group ``e`` = the backbone parameters of stage ``e``). Computed
    key by key, so no flattened copy of the backbone is ever held per client. A zero vector scores 0.
    """
    count, groups = len(updates), len(key_groups)
    all_keys = [key for group in key_groups for key in group]
    mean = weighted_average(updates, [1.0] * count, keys=all_keys)
    device = mean[all_keys[0]].device
    dots = torch.zeros(count, groups, dtype=torch.float64, device=device)
    own_sq = torch.zeros(count, groups, dtype=torch.float64, device=device)
    mean_sq = torch.zeros(groups, dtype=torch.float64, device=device)
    for g, group in enumerate(key_groups):
        for key in group:
            centre = mean[key].double()
            mean_sq[g] += centre.square().sum()
            for j, update in enumerate(updates):
                vector = update[key].double()
                dots[j, g] += (vector * centre).sum()
                own_sq[j, g] += vector.square().sum()
    dots, own_sq, mean_sq = dots.cumsum(1), own_sq.cumsum(1), mean_sq.cumsum(0)
    return dots / (own_sq.sqrt() * mean_sq.sqrt()).clamp_min(1e-12)
