"""Optuna studies over a method's declared hyperparameter ranges; every trial is a child MLflow run.

The objective is the final mean-over-exits *validation* accuracy (``val/acc/mean``), never test accuracy.
Trials on one seed report it after every evaluated round so the pruner (by default a MedianPruner that waits for 5
finished trials and a quarter of the rounds; a sweep's tune stage prunes nothing unless it names a
:class:`PrunerSpec`) can stop poor ones before the last round; a pruned trial's MLflow run ends KILLED with the
tag ``pruned=true``. A trial on several seeds runs them one after the other, to the end. Ranges come from the
method's ``Hparams`` (``search_space``); hyperparameters given as overrides (``method.hparams.X=...``) are held fixed.

The study lives in an Optuna storage (``sqlite:///optuna.db`` by default, or any RDB URL) and is opened with
``load_if_exists``, so several workers — on several machines, given a shared database — that run the same
command share one study and one parent MLflow run. ``trials`` is the study's total of finished (complete or
pruned) trials: running the command again continues an interrupted study. The best parameters are written as an
experiment preset.
The candidates each trial is offered, the multi-fidelity pruner and the cost of a study in full-run equivalents are
described in :mod:`bench.tune_candidates`.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.config import ConfigError, ExperimentConfig, load_config, set_dotted, validate_config
from bench.defaults import DEFAULT_STORAGE
from bench.fed.engine import Callback, Simulation
from bench.methods.api import search_space
from bench.methods.registry import get_method
from bench.record_names import (
    BEST_OBJECTIVE,
    BEST_PARAMS_TAG,
    BEST_TRIAL_TAG,
    CANDIDATE_TAG,
    ERROR_TAG,
    METHOD_TAG,
    MLFLOW_PARENT_TAG,
    NOTE_TAG,
    OBJECTIVE,
    PARENT_TAG,
    PRUNED_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    TUNE_COST,
)
from bench.track.mlflow_tracker import MlflowTracker, get_or_create_experiment, tracking_uri
from bench.track.owner import this_process
from bench.track.run_status import closed_on_exception
from bench.track.runner import run_experiment
from bench.track.store_lock import store_lock
from bench.tune_candidates import (
    CANDIDATE_ATTR,
    FINISHED_STATES,
    OWNER_ATTR,
    candidate_sampler_seed,
    live_trials,
    next_candidate,
    shared_candidate,
    study_cost,
    suggest,
)

log = logging.getLogger(__name__)
PARENT_RUN_ATTR = "mlflow_parent_run_id"
WAIT_FOR_OTHERS_S = 2.0  # how often a study's worker looks again while other workers' trials may fill its budget


@dataclass
class TuneResult:
    study_name: str
    best_value: float
    best_params: dict[str, Any]
    preset_path: Path
    parent_run_id: str
    completed: int
    pruned: int
    tuning_seed: int  # the seed the study scored trials on: test the preset on others

    @property
    def test_command(self) -> str:
        """The command that tests the best setting on a seed other than the tuning seed."""
        return f"cafebench run {self.preset_path} seed={self.tuning_seed + 1}"


class PruningCallback(Callback):
    """Reports the validation accuracy of every evaluated round to the trial; raises TrialPruned when told."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.run_id: str | None = None

    def on_start(self, sim: Simulation) -> None:
        self.run_id = next(cb.run_id for cb in sim.callbacks if isinstance(cb, MlflowTracker))

    def on_round_end(self, sim: Simulation, round: int, metrics: dict[str, float]) -> None:
        if OBJECTIVE in metrics:
            self.trial.report(metrics[OBJECTIVE], round)
            if round < sim.rounds and self.trial.should_prune():  # a trial that ran every round completes
                raise optuna.TrialPruned(f"{OBJECTIVE}={metrics[OBJECTIVE]:.4f} at round {round}")


def with_params(config: ExperimentConfig, params: dict[str, Any], run_name: str | None,
                seed: int | None = None) -> ExperimentConfig:
    """``config`` with trial parameters applied: dotted names (``train.lr``) are config keys, the others method
    hyperparameters; ``seed`` replaces the config's seed when given."""
    data = config.model_dump(mode="json")
    for name, value in params.items():
        if "." in name:
            set_dotted(data, name, value)
        else:
            data["method"]["hparams"][name] = value
    data["run"]["run_name"] = run_name
    if seed is not None:
        data["seed"] = seed
    return validate_config(data)


def is_integer(config: ExperimentConfig, name: str) -> bool:
    """Whether a searched parameter (method hyperparameter or dotted config key) takes integers."""
    if "." in name:
        section, key = name.split(".", 1)
        return type(getattr(getattr(config, section), key)) is int
    return get_method(config.method.name).Hparams.model_fields[name].annotation is int


def tunable_space(method: str, fixed: set[str] | list[str] = ()) -> dict[str, dict[str, Any]]:
    """The method's declared ranges, less the hyperparameters in ``fixed``."""
    return {k: v for k, v in search_space(get_method(method).Hparams).items() if k not in fixed}


def fixed_by_overrides(overrides: list[str]) -> set[str]:
    """The hyperparameters that ``method.hparams.X=`` overrides hold fixed."""
    return {item.split("=", 1)[0].strip().removeprefix("method.hparams.") for item in overrides
            if item.startswith("method.hparams.")}


def default_study_name(config: ExperimentConfig, source: str | Path) -> str:
    """The same for the same command, so workers started alike share a study."""
    return f"{config.method.name}-{Path(str(source)).stem}-{config.content_hash()[:8]}"


def check_validation_split(split: Sequence[float]) -> None:
    """Refuse a data split without a validation fraction: tuning maximizes validation accuracy."""
    if split[1] <= 0:
        raise ConfigError("tuning maximizes validation accuracy, but data.split holds no validation fraction: "
                          "set e.g. data.split=[0.7,0.1,0.2]")


def tune(method: str, source: str | Path, trials: int, overrides: list[str] | tuple[str, ...] = (),
         storage: str | None = None, study_name: str | None = None, output: Path | None = None,
         pruner: optuna.pruners.BasePruner | None = None) -> TuneResult:
    """Run the study to ``trials`` finished trials and write the best configuration as a preset.

    ``output`` defaults to ``tuned/<study name>.yaml``.
    """
    overrides = list(overrides)
    base = load_config(source, [*overrides, f"method.name={method}"])
    space = tunable_space(base.method.name, fixed_by_overrides(overrides))
    if not space:
        raise ConfigError(f"method {base.method.name!r} has no hyperparameter ranges left to tune "
                          "(see `cafebench methods` for the declared ranges)")
    name = study_name or default_study_name(base, source)
    study = run_study(base, space, trials, storage=storage, study_name=name,
                      pruner=pruner or optuna.pruners.MedianPruner(5, base.train.rounds // 4))
    return best_result(study.study, base, output or Path("tuned") / f"{name}.yaml", study.parent_run_id)


@dataclass
class Study:
    study: optuna.Study
    parent_run_id: str
    client: MlflowClient


def prepare_storage(storage: str) -> None:
    """Create the study storage's tables now, so that studies started next in several processes do not race to
    create them (SQLite refuses the loser's copy of Optuna's schema version); under the storage's lock, so that two
    sweeps started together do not either."""
    with store_lock(storage):
        optuna.storages.get_storage(storage)


def run_study(base: ExperimentConfig, space: dict[str, dict[str, Any]], trials: int, *, storage: str | None,
              study_name: str, seeds: list[int] | None = None, pruner: optuna.pruners.BasePruner | None = None,
              tags: dict[str, str] | None = None, nest_under: str | None = None,
              shared: dict[str, dict[str, Any]] | None = None, candidate_seed: int | None = None) -> Study:
    """Run an Optuna study over ``space`` (the method's own ranges) and ``shared`` (ranges every study of a sweep
    shares) until it holds ``trials`` finished trials; every run of a trial is a child of the study's parent MLflow
    run, which is left RUNNING for the caller to close (:func:`finish_study`) and is itself nested beneath the run
    ``nest_under`` when given (a sweep's parent run).

    Trial ``k`` is candidate ``k`` (see the module doc), drawn from ``candidate_seed`` (default: the config's seed).
    A trial's value is the final ``val/acc/mean`` averaged over ``seeds`` (default: the config's seed). With one
    seed the trial reports each evaluated round to ``pruner``; with several, trials run to the end. A trial that
    fails or is stopped by a signal does not count; its candidate is offered again. While the trials that other
    workers of this machine run on the same study could fill the budget, this one waits for them instead of
    starting more, so the study ends with exactly ``trials``.
    """
    if trials < 1:
        raise ValueError("trials must be at least 1")
    check_validation_split(base.data.split)
    seeds = [base.seed] if seeds is None else list(seeds)
    shared = dict(shared or {})
    candidate_seed = base.seed if candidate_seed is None else candidate_seed
    integer = {name: is_integer(base, name) for name in {**space, **shared}}
    study = optuna.create_study(study_name=study_name, storage=storage or DEFAULT_STORAGE, direction="maximize",
                                pruner=pruner or optuna.pruners.NopPruner(), load_if_exists=True)
    client = MlflowClient(tracking_uri=tracking_uri(base.run.tracking_uri))
    parent_run_id = parent_run(client, study, base, nest_under)

    def objective(trial: optuna.Trial, index: int) -> float:
        trial.set_user_attr(CANDIDATE_ATTR, index)
        trial.set_user_attr(OWNER_ATTR, this_process())
        params = {k: suggest(trial, k, spec, integer[k]) for k, spec in {**shared, **space}.items()}
        values = []
        for seed in seeds:
            config = with_params(base, params, f"{study_name}/trial-{trial.number}"
                                 + (f"/seed-{seed}" if len(seeds) > 1 else ""), seed)
            pruning = [PruningCallback(trial)] if len(seeds) == 1 else []
            try:
                result = run_experiment(config, pruning, parent_run_id=parent_run_id,
                                        tags={**(tags or {}), STUDY_TAG: study_name,
                                              TRIAL_TAG: str(trial.number), CANDIDATE_TAG: str(index)})
            except optuna.TrialPruned:
                mark_pruned(client, pruning[0].run_id)
                raise
            trial.set_user_attr(f"mlflow_run_id/{seed}", result.run_id)
            values.append(result.evaluation.metrics[OBJECTIVE])
        return sum(values) / len(values)

    with closed_on_exception(client, parent_run_id):
        while True:
            index = next_candidate(study)
            finished = len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
            if finished >= trials:
                break
            if finished + live_trials(study) >= trials:  # other workers' trials may fill the budget: wait for them
                time.sleep(WAIT_FOR_OTHERS_S)
                continue
            with warnings.catch_warnings():  # PartialFixedSampler is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.sampler = optuna.samplers.PartialFixedSampler(
                    shared_candidate(shared, integer, index, candidate_seed),
                    optuna.samplers.TPESampler(seed=candidate_sampler_seed(candidate_seed, index)))
            study.optimize(lambda trial, index=index: objective(trial, index), n_trials=1)
        completed, pruned = trial_counts(study)
        if not completed:
            raise RuntimeError(f"no trial of study {study_name!r} completed ({pruned} pruned); "
                               "run more trials or relax the pruner")
    completed, pruned = trial_counts(study)
    finished = completed + pruned
    cost = study_cost(study, base.train.rounds, len(seeds))
    client.log_metric(parent_run_id, BEST_OBJECTIVE, study.best_value, step=finished)
    client.log_metric(parent_run_id, TUNE_COST, cost, step=finished)
    client.set_tag(parent_run_id, BEST_TRIAL_TAG, str(study.best_trial.number))
    client.set_tag(parent_run_id, BEST_PARAMS_TAG, json.dumps(study.best_params, sort_keys=True))
    client.set_tag(parent_run_id, NOTE_TAG, f"Optuna study **{study_name}** of {base.method.name}: {completed} "
                                            f"completed, {pruned} pruned trials (nested beneath this run), costing "
                                            f"{cost:.2f} full-run equivalents ({base.train.rounds}-round runs on "
                                            f"{len(seeds)} seed(s)); best "
                                            f"{OBJECTIVE} {study.best_value:.4f} (trial {study.best_trial.number}) "
                                            "with " + ", ".join(f"{k}={v!r}" for k, v in study.best_params.items()))
    return Study(study, parent_run_id, client)


def trial_counts(study: optuna.Study) -> tuple[int, int]:
    """The numbers of completed and of pruned trials."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED)


def finish_study(study: Study, artifact: Path | None = None) -> None:
    """Close the study's parent MLflow run (FINISHED), with ``artifact`` logged to it."""
    if artifact is not None:
        study.client.log_artifact(study.parent_run_id, str(artifact))
    study.client.set_terminated(study.parent_run_id, "FINISHED")


def parent_run(client: MlflowClient, study: optuna.Study, config: ExperimentConfig,
               nest_under: str | None = None) -> str:
    """The study's parent MLflow run (created by its first worker, reopened by the others), created nested
    beneath the run ``nest_under`` when given."""
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id is not None:
        try:
            client.update_run(run_id, status="RUNNING")
            return run_id
        except Exception:  # the study was started against another tracking store
            log.warning("parent run %s of study %s is not in this tracking store; starting a new one",
                        run_id, study.study_name)
    run = client.create_run(get_or_create_experiment(client, config.run.experiment),
                            run_name=f"tune {study.study_name}",
                            tags={STUDY_TAG: study.study_name, METHOD_TAG: config.method.name,
                                  PARENT_TAG: f"study:{study.study_name}",
                                  **({MLFLOW_PARENT_TAG: nest_under} if nest_under else {}),
                                  NOTE_TAG: f"Optuna study **{study.study_name}** of {config.method.name}: every "
                                            f"trial is a run nested beneath this one."})
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run.info.run_id


def mark_pruned(client: MlflowClient, run_id: str | None) -> None:
    """A pruned trial's run (marked FAILED by the runner) becomes KILLED with ``pruned=true``."""
    if run_id is None:
        return
    client.set_tag(run_id, PRUNED_TAG, "true")
    client.delete_tag(run_id, ERROR_TAG)
    client.set_terminated(run_id, "KILLED")


def best_result(study: optuna.Study, base: ExperimentConfig, path: Path, parent_run_id: str) -> TuneResult:
    """Write the best trial's configuration as an experiment preset, close the parent run, summarise the study."""
    completed, pruned = trial_counts(study)
    best = study.best_trial
    result = TuneResult(study.study_name, float(best.value), dict(best.params), path, parent_run_id, completed,
                        pruned, base.seed)
    config = with_params(base, best.params, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Best of Optuna study {study.study_name!r}: trial {best.number}, {OBJECTIVE}={best.value:.4f}\n"
              f"# ({completed} completed, {pruned} pruned trials), chosen on seed {base.seed}'s validation splits;\n"
              f"# its seed is that tuning seed. Test it on another seed: {result.test_command}\n")
    path.write_text(header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    client = MlflowClient(tracking_uri=tracking_uri(base.run.tracking_uri))
    finish_study(Study(study, parent_run_id, client), path)
    return result
