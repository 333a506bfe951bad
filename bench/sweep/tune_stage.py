"""A sweep's tune stage (the format: :mod:`bench.sweep`): one Optuna study per setting of the sweep, run as the
sweep's jobs, and the sweep whose configs then use their setting's best parameters; what the stage costs."""

from __future__ import annotations

import concurrent.futures as cf
import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import optuna
from mlflow.tracking import MlflowClient

from bench.config import ExperimentConfig, validate_config
from bench.defaults import DEFAULT_STORAGE
from bench.record_names import SWEEP_TAG, TUNE_COST, TUNED_TAG
from bench.sweep.launchers import InProcessLauncher, Launcher, on_slot_device, run_jobs, runtime_config
from bench.sweep.spec import Sweep
from bench.track.claim import run_key
from bench.track.disk_full import DiskFullError, reported_disk_full
from bench.track.locations import absolute_tracking_uri
from bench.track.mlflow_tracker import tracking_uri
from bench.tune import finish_study, prepare_storage, run_study, tunable_space, with_params
from bench.tune_candidates import CandidatePruner, PrunerSpec, study_cost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudySpec:
    """One study of the tune stage: a setting of the sweep (a config less its seed) and what to search."""

    name: str
    sweep: str
    config: dict[str, Any]  # runtime config data of the setting (its seed: the first tuning seed)
    space: dict[str, dict[str, Any]]  # the method's own ranges
    shared: dict[str, dict[str, Any]]  # the tune stage's shared ranges (the same candidates in every study)
    trials: int
    seeds: list[int]
    storage: str  # absolute where it is a SQLite file: the workers may run in other folders
    parent_run_id: str | None = None  # the sweep's parent run: the study's own parent run nests beneath it
    pruner: PrunerSpec | None = None  # multi-fidelity (see the module doc); None: every trial runs every round


def setting_digest(config: ExperimentConfig) -> str:
    """Equal for configs that differ in their seed only."""
    return config.model_copy(update={"seed": 0}).content_hash()


def study_specs(sweep: Sweep, uri: str, threads: int | None,
                parent_run_id: str | None = None) -> tuple[list[StudySpec], list[str | None]]:
    """The studies of the sweep's tune stage and, per config, the name of its study (None: nothing to search)."""
    stage = sweep.tune
    assert stage is not None
    specs: dict[str, StudySpec] = {}
    names: list[str | None] = []
    for config, fixed, extra in zip(sweep.configs, sweep.fixed, sweep.tags, strict=True):
        space = tunable_space(config.method.name, fixed)
        shared = {k: v for k, v in stage.ranges.items() if k not in fixed}
        if not space and not shared:
            names.append(None)
            continue
        name = f"{sweep.name}/{config.method.name}/{run_key(setting_digest(config)[:12], extra)}"
        if name not in specs:
            data = runtime_config(config, uri, threads)
            data["seed"] = stage.seeds[0]
            specs[name] = StudySpec(name, sweep.name, data, space, shared, stage.trials, stage.seeds,
                                    absolute_tracking_uri(stage.storage or DEFAULT_STORAGE), parent_run_id,
                                    stage.pruner)
        names.append(name)
    return list(specs.values()), names


def tune_summary(sweep: Sweep) -> str:
    """E.g. ``a tune stage of 36 studies x 4 trials (144 runs) on seeds [100]: 144 full-run equivalents``; with a
    pruner, the pruner and the ceiling of its cost."""
    stage = sweep.tune
    assert stage is not None
    specs, _ = study_specs(sweep, "", None)
    runs = len(specs) * stage.trials * len(stage.seeds)
    text = f"a tune stage of {len(specs)} studies x {stage.trials} trials ({runs} runs) on seeds {stage.seeds}"
    if stage.pruner is None:
        return f"{text}: {runs} full-run equivalents"
    return (f"{text}, pruned by {stage.pruner.describe()}: at most {runs} full-run equivalents (rounds run / "
            "train.rounds)")


def run_study_spec(spec: StudySpec) -> dict[str, Any]:
    """Run one study of the tune stage to its trial budget (in a worker process or here); its best parameters."""
    config = validate_config(spec.config)
    pruner = CandidatePruner(spec.pruner, config.train.rounds) if spec.pruner else None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep reports its studies (a failed one with its reason)
    with reported_disk_full([tracking_uri(config.run.tracking_uri), spec.storage]):
        study = run_study(config, spec.space, spec.trials, storage=spec.storage, study_name=spec.name,
                          seeds=spec.seeds, pruner=pruner, tags={SWEEP_TAG: spec.sweep}, nest_under=spec.parent_run_id,
                          shared=spec.shared, candidate_seed=spec.seeds[0])
        finish_study(study)
    return dict(study.study.best_params)


def study_spec_cost(spec: StudySpec) -> float | None:
    """What the study has spent so far, in full-run equivalents; None when the storage holds no such study."""
    try:
        study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    except KeyError:
        return None
    return study_cost(study, int(spec.config["train"]["rounds"]), len(spec.seeds))


def tune_cost_note(sweep: Sweep) -> str:
    """The sweep description's words on what its tune stage spent (empty when unknown)."""
    return "" if sweep.tune_cost is None else f" Its tune stage spent {sweep.tune_cost:.2f} full-run equivalents."


def run_tune_stage(sweep: Sweep, parent_run_id: str | None = None,
                   launcher: Callable[[int], Launcher] = lambda jobs: InProcessLauncher(), workers: int = 1,
                   threads: int | None = None, slot_devices: list[str] | None = None) -> Sweep:
    """Tune every setting of the sweep, ``workers`` studies at a time where ``launcher(studies)`` runs them (as
    the sweep's runs: local processes, each on its worker slot's GPU from ``slot_devices``, or Ray tasks), then
    return the sweep whose configs use their setting's best parameters, each run tagged ``tuned`` with them.
    Each study's parent run nests beneath ``parent_run_id`` (the sweep's) when given. A study that fails leaves
    the others to finish (all are saved in the study storage), then raises a RuntimeError that names it. A sweep
    without a tune stage is returned as it is."""
    if sweep.tune is None:
        return sweep
    uri = absolute_tracking_uri(tracking_uri(sweep.configs[0].run.tracking_uri))
    specs, names = study_specs(sweep, uri, threads, parent_run_id)
    log.info("sweep %s: tune stage of %d studies, %d trials each on seeds %s", sweep.name, len(specs),
             sweep.tune.trials, sweep.tune.seeds)
    if specs:
        prepare_storage(specs[0].storage)  # its tables, before studies in several processes race to create them
    best: dict[str, dict[str, Any]] = {}
    failures: list[str] = []

    def start(i: int, slot: int) -> tuple[Callable[..., Any], tuple, int]:
        spec = replace(specs[i], config=on_slot_device(copy.deepcopy(specs[i].config), slot, slot_devices))
        return run_study_spec, (spec,), spec.config["run"]["threads"]

    def finished(i: int, future: cf.Future) -> None:
        try:
            best[specs[i].name] = future.result()
        except DiskFullError:
            raise  # every other study would fail alike
        except (Exception, KeyboardInterrupt) as exc:  # an interrupt here: its worker alone was sent SIGTERM
            log.warning("sweep %s: study %s failed: %s: %s", sweep.name, specs[i].name, type(exc).__name__, exc)
            failures.append(f"{specs[i].name} ({type(exc).__name__}: {exc})")

    pool = launcher(len(specs))
    try:
        run_jobs(pool, range(len(specs)), workers, start, finished)
    finally:
        pool.close()
    if failures:
        raise RuntimeError(f"the tune stage of sweep {sweep.name}: {len(failures)} of {len(specs)} studies failed: "
                           f"{'; '.join(failures)}. The finished trials are kept in the study storage; run the same "
                           "command again to go on")
    configs, tags = [], []
    for config, name, extra in zip(sweep.configs, names, sweep.tags, strict=True):
        params = best.get(name, {}) if name else {}
        configs.append(with_params(config, params, config.run.run_name) if params else config)
        tags.append({**extra, TUNED_TAG: json.dumps(params, sort_keys=True)} if name else extra)
    costs = [study_spec_cost(spec) for spec in specs]
    total = None if None in costs else sum(c for c in costs if c is not None)
    if total is not None:
        log.info("sweep %s: the tune stage spent %.2f full-run equivalents", sweep.name, total)
        if parent_run_id is not None:
            MlflowClient(tracking_uri=uri).log_metric(parent_run_id, TUNE_COST, total)
    return replace(sweep, configs=configs, tags=tags, tune_cost=total)
