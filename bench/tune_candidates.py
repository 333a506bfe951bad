"""The candidates and the pruner of an Optuna study (:mod:`bench.tune`), and what a study costs.

Candidates: trial ``k`` of a study is *candidate* ``k`` (user attribute ``candidate``, MLflow tag
``optuna_candidate``). Its *shared* parameters (a sweep's ``tune.ranges``, e.g. ``train.lr``) are point ``k`` of one
scrambled Sobol sequence seeded by the candidate seed alone, so every study of a sweep is offered the same shared
values in the same order whatever the method; its method's own parameters come from a TPE sampler seeded by the
candidate seed and ``k`` (random search for the first ten trials, as TPE starts). A candidate whose trial was
killed or failed is offered again, with the same values, by the next run of the command.

Cost: a study's cost is counted in *full-run equivalents* — the sum over its finished trials of rounds run divided
by the rounds of a full run (``train.rounds``), over every tuning seed — and logged on its parent run as metric
``tune/full_run_equivalents``. Without pruning it equals trials x seeds; a pruned trial costs the fraction of the
rounds it ran. ``trials`` counts candidates (completed or pruned), so every study is offered the same candidates
whatever its pruner stops; what a study spends is at most ``trials`` x seeds.

Multi-fidelity (:class:`CandidatePruner`): Optuna's successive halving over rounds, alone or in Hyperband's
brackets, judging each trial at the first evaluated round at or past each rung (``min_rounds * reduction**i``
rounds) and never at the last round (a trial that ran every round completes). Failed trials' rung values do not
compete and Hyperband's bracket follows the candidate, not the trial number, so a resumed study decides as an
uninterrupted one would.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import qmc

from bench.track.owner import owner_alive

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
CANDIDATE_ATTR = "candidate"
OWNER_ATTR = "owner"
PRUNER_KINDS = ("successive_halving", "hyperband")


@dataclass(frozen=True)
class PrunerSpec:
    """Multi-fidelity over rounds: ``successive_halving`` (rungs at ``min_rounds * reduction**i`` rounds; a trial goes
    on past a rung while its value there is in the top ``1/reduction`` of the values trials reached there) or
    ``hyperband`` (brackets of successive halving whose first rung is ``min_rounds * reduction**b``)."""

    kind: str
    min_rounds: int
    reduction: int = 3

    def describe(self) -> str:
        return f"{self.kind.replace('_', ' ')} (from round {self.min_rounds}, reduction {self.reduction})"


class _TrialsView:
    """What Optuna's SuccessiveHalvingPruner reads of a study — its trials, direction and storage — limited to the
    trials ``keep`` accepts."""

    def __init__(self, study: optuna.Study, keep: Callable[[FrozenTrial], bool]):
        self._study, self._keep = study, keep
        self._storage = study._storage
        self.direction = study.direction

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if self._keep(t)]


class CandidatePruner(optuna.pruners.BasePruner):
    """Optuna's SuccessiveHalvingPruner, in one bracket or in Hyperband's brackets (as Optuna's HyperbandPruner
    builds them, with its share of candidates per bracket), keyed to candidates: a failed or killed trial's rung values
    do not compete (its candidate is offered again), and candidate ``k`` falls in the same Hyperband bracket in every
    study and after a restart (HyperbandPruner hashes the study name and trial number instead)."""

    def __init__(self, spec: PrunerSpec, rounds: int):
        if spec.kind not in PRUNER_KINDS:
            raise ValueError(f"unknown pruner kind {spec.kind!r}; use one of {', '.join(PRUNER_KINDS)}")
        brackets = 1
        while spec.kind == "hyperband" and spec.min_rounds * spec.reduction ** brackets <= rounds:
            brackets += 1
        self.halvings = [optuna.pruners.SuccessiveHalvingPruner(spec.min_rounds, spec.reduction, b)
                         for b in range(brackets)]
        self.shares = [math.ceil(brackets * spec.reduction ** (brackets - 1 - b) / (brackets - b))
                       for b in range(brackets)]

    def bracket(self, trial: FrozenTrial) -> int:
        """The Hyperband bracket of the trial's candidate (0 with successive halving)."""
        n = binascii.crc32(f"candidate_{trial.user_attrs.get(CANDIDATE_ATTR, trial.number)}".encode())
        n %= sum(self.shares)
        for bracket, share in enumerate(self.shares):
            n -= share
            if n < 0:
                return bracket
        raise AssertionError("unreachable")

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        bracket = self.bracket(trial)
        view = _TrialsView(study, lambda t: t.state != TrialState.FAIL and self.bracket(t) == bracket)
        return self.halvings[bracket].prune(view, trial)  # type: ignore[arg-type]


def trial_cost(trial: FrozenTrial, rounds: int, seeds: int = 1) -> float:
    """A finished trial's cost in full-run equivalents: one per tuning seed when it completed; when pruned (which
    needs one seed) the rounds it ran (its last reported round) over ``rounds``; nothing when it failed."""
    if trial.state == TrialState.COMPLETE:
        return float(seeds)
    if trial.state == TrialState.PRUNED:
        return (trial.last_step or 0) / rounds
    return 0.0


def study_cost(study: optuna.Study, rounds: int, seeds: int = 1) -> float:
    """The study's cost in full-run equivalents: the sum of its finished trials' (:func:`trial_cost`)."""
    return sum(trial_cost(t, rounds, seeds) for t in study.get_trials(deepcopy=False, states=FINISHED_STATES))


def suggest(trial: optuna.Trial, name: str, spec: dict[str, Any], integer: bool) -> Any:
    """One value from a declared range: ``{"choices": [...]}`` or ``{"low", "high", "log"}``."""
    if "choices" in spec:
        return trial.suggest_categorical(name, list(spec["choices"]))
    if integer:
        return trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
    return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))


def unit_to_value(u: float, spec: dict[str, Any], integer: bool) -> Any:
    """The value at quantile ``u`` in [0, 1) of a declared range (uniform, or uniform in log space)."""
    if "choices" in spec:
        choices = list(spec["choices"])
        return choices[min(int(u * len(choices)), len(choices) - 1)]
    low, high, log_scale = float(spec["low"]), float(spec["high"]), bool(spec.get("log", False))
    if integer and not log_scale:
        return int(min(low + math.floor(u * (high - low + 1)), high))
    value = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if log_scale else low + u * (high - low)
    return int(min(max(round(value), low), high)) if integer else float(value)


def shared_candidate(space: dict[str, dict[str, Any]], integer: dict[str, bool], index: int,
                     seed: int) -> dict[str, Any]:
    """Point ``index`` of the scrambled Sobol sequence over ``space`` (one dimension per parameter, in name order)
    seeded by ``seed``: the same for every study given the same shared ranges and seed."""
    if not space:
        return {}
    names = sorted(space)
    sobol = qmc.Sobol(len(names), scramble=True, seed=np.random.default_rng(seed))
    point = sobol.random_base2(max(0, math.ceil(math.log2(index + 1))))[index]  # a prefix of the sequence
    return {name: unit_to_value(float(u), space[name], integer[name]) for name, u in zip(names, point, strict=True)}


def candidate_sampler_seed(seed: int, index: int) -> int:
    """The seed of the TPE sampler that draws candidate ``index``'s own parameters."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def next_candidate(study: optuna.Study) -> int:
    """The lowest candidate index that no finished trial holds and no live trial is running. A RUNNING trial whose
    process has certainly ended (killed outright) is marked FAILED, so its candidate is offered again."""
    taken = set()
    for trial in study.get_trials(deepcopy=False):
        index = trial.user_attrs.get(CANDIDATE_ATTR)
        if index is None:
            continue
        if trial.state == TrialState.RUNNING and owner_alive(trial.user_attrs.get(OWNER_ATTR)) is False:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            continue
        if trial.state in (*FINISHED_STATES, TrialState.RUNNING):
            taken.add(int(index))
    return next(k for k in range(len(taken) + 1) if k not in taken)


def live_trials(study: optuna.Study) -> int:
    """The study's trials RUNNING in live processes of this machine (other workers' on the same study)."""
    return sum(owner_alive(t.user_attrs.get(OWNER_ATTR)) is True
               for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
