"""Sweeps: many experiments expanded from one preset, run on local processes or a Ray cluster, resumable.

A sweep preset is a YAML file (shipped ones live in ``bench/presets/sweeps/``)::

    base: demo                 # an experiment preset name or config file, or an inline mapping of sections
    experiment: smoke          # MLflow experiment all runs go to (default: the sweep's name)
    set: {train.rounds: 3, data.dataset: digits}   # overrides applied to the base (dotted keys)
    grid:                      # the cartesian product of these axes (dotted config keys -> lists)
      method.name: [fedavg, local]
      seed: [0, 1]
    runs:                      # optional extra rows, each expanded against the grid axes it does not set
      - {method.name: cafedistill, method.hparams.cross_client: false}
    tune:                      # optional: equal tuning of every setting before the runs (see below)
      trials: 12               # Optuna trials per study, the same for every method
      seeds: [100]             # tuning seeds; none of them may be a run's seed
      ranges:                  # shared ranges searched for every method (dotted config keys)
        train.lr: {low: 0.005, high: 0.2, log: true}
        train.local_epochs: {choices: [1, 2]}
      storage: sqlite:///optuna.db   # Optuna storage (default), any RDB URL
      pruner: {kind: successive_halving, min_rounds: 2, reduction: 3}   # optional (default: none), see below

Every grid point is one run. Each ``runs`` row adds the product of the grid axes the row leaves alone, with the
row's values on top, so one preset can hold a main table and its ablations; without ``grid`` only the rows run.
Values are applied in this order: ``base``, ``set``, command-line overrides, grid point, row. Method
hyperparameters that only one method knows belong in a row (or in a grid over rows), since every config is
validated against its own method. Points that give the same config (same content hash) run once.

Every config is validated when the sweep is loaded, so a bad key fails before any run starts. A run whose
config hash already has a FINISHED run in the sweep's experiment is skipped: running an interrupted sweep
again finishes it. A run interrupted by Ctrl-C or SIGTERM (status KILLED) continues from its last checkpoint as
the same MLflow run. So does a run killed outright (SIGKILL, out of memory) on this machine: it was left RUNNING, and
as its owner process is gone the sweep first marks it KILLED. A run left RUNNING by a process on another machine, or
stopped before its first checkpoint, starts again as a new run. A failed run is reported with its reason and the
others go on. The sweep's runs are nested beneath a parent run named ``sweep NAME`` (tag
``cafebench.parent=sweep:NAME``), which a re-run reopens; its description counts the runs.

Two sweeps of one grid on one SQLite store (two terminals, two Ray drivers on this machine) run each grid point once:
a worker claims its point under a lock beside the store (:mod:`bench.track.claim`) and leaves a point that another
process has finished or is running. SIGINT or SIGTERM to the sweep stops its workers (SIGTERM, then SIGKILL after
``STOP_GRACE_S``); their runs end KILLED and their trials FAILED, so running the sweep again resumes them. A full
disk stops the sweep with one :class:`~bench.track.disk_full.DiskFullError`.

Runs log to the first config's tracking URI (a relative ``sqlite:///`` path is made absolute). On a Ray
cluster of several machines, use a tracking server or database URL that every node reaches.

The tune stage (``tune:``) makes the comparison fair: every distinct setting of the sweep (a config less its seed:
a method at a dataset and α, an ablation variant) gets its own Optuna study with the same number of trials, over
its method's declared ranges plus the shared ``ranges``, less what the grid point or row sets explicitly (a row
``method.hparams.mu: 0.1`` holds μ fixed). A trial runs the setting on every tuning seed and scores the mean final
validation accuracy (``val/acc/mean``); without a ``pruner`` nothing is pruned, so every study gets the same complete
trials. Then each run of the sweep uses its setting's best parameters (tag ``tuned``: their JSON) on its own (test)
seed. Each study is a parent MLflow run (tag ``optuna_study``, best parameters in tag ``best_params``) with its
trial runs as children; reports leave these tuning runs out. Studies live in the Optuna storage under names made
from the sweep and the setting, so running the sweep again continues unfinished studies, then skips the finished
runs. Studies run ``workers`` at a time in local processes (also with the Ray backend).

Multi-fidelity: ``pruner`` (keys ``kind``: ``successive_halving`` or ``hyperband``; ``min_rounds``: the first rung,
a positive integer; ``reduction``: an integer of at least 2, default 3) stops trials early by Optuna's successive
halving over rounds, alone or in Hyperband's brackets (:class:`bench.tune.CandidatePruner`): rungs at
``min_rounds * reduction**i`` rounds, each trial judged at the first evaluated round (``eval.every``) at or past a rung
and continued while it is in the top ``1/reduction`` there. It needs one tuning seed, and an evaluated round from
``min_rounds`` on before every run's last round. ``trials`` still counts candidates (completed or pruned), so every
study is offered the same candidates; a pruned trial counts as finished, a failed or killed one is offered again.
Cost is counted in full-run equivalents (rounds run / ``train.rounds``, summed over trials and seeds): at most
``trials`` x seeds a study, logged on each study's parent run (metric ``tune/full_run_equivalents``), summed on the
sweep's parent run and in its description; ``--dry-run`` shows the ceiling. The same for every method are the
candidates, the rule and the ceiling; what a study spends below it depends on its trials' values. No preset prunes
yet: ``docs/tuning.md`` says what the measurement (``nox -s tune_fidelity``) will decide.

GPUs: on the local backend each concurrent run whose ``run.device`` is ``auto`` or ``cuda`` gets its own GPU
(round-robin when there are more workers than GPUs); on Ray each run asks for ``--gpus-per-run`` GPUs. A run that
runs out of GPU memory fails with a message naming the settings to lower, and the sweep goes on.

Determinism: a run gives bitwise-identical metrics for the same config and the same ``run.threads``; the
sweep sets ``run.threads`` (outside the config hash) to the machine's cores divided by the concurrent runs. A
resumed run keeps the threads it started with, whatever ``--workers`` the re-run sweep has.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import importlib.resources
import itertools
import json
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import optuna
import yaml
from mlflow.tracking import MlflowClient

from bench.config import (
    ConfigError,
    ExperimentConfig,
    TrainConfig,
    parse_overrides,
    read_source,
    set_dotted,
    validate_config,
)
from bench.fed.device import worker_devices
from bench.fed.engine import Callback
from bench.methods.api import search_space
from bench.methods.registry import get_method
from bench.track.checkpoint import list_checkpoints
from bench.track.claim import ClaimedElsewhere, claim_point, run_key
from bench.track.description import NOTE_TAG
from bench.track.disk_full import DiskFullError, reported_disk_full
from bench.track.interrupt import raise_on_sigterm
from bench.track.mlflow_tracker import (
    RunInUseError,
    artifact_location,
    get_or_create_experiment,
    open_parent_run,
    search_all_runs,
    tracking_uri,
)
from bench.track.owner import OWNER_TAG, owner_alive, why_left_running
from bench.track.run_status import closed_on_exception
from bench.track.runner import CHECKPOINT_TAG, run_experiment
from bench.track.store import quiet_database_errors
from bench.track.store_lock import store_lock
from bench.record_names import ABLATION, MAIN, ROLE_TAG, SENSITIVITY, SENSITIVITY_TAG, TUNED_TAG
from bench.tune import (
    COST_METRIC,
    DEFAULT_STORAGE,
    PRUNER_KINDS,
    CandidatePruner,
    PrunerSpec,
    check_validation_split,
    finish_study,
    prepare_storage,
    run_study,
    study_cost,
    tunable_space,
    with_params,
)

log = logging.getLogger(__name__)
SWEEP_KEYS = ("base", "experiment", "set", "grid", "runs", "tune")
TUNE_KEYS = ("trials", "seeds", "ranges", "storage", "pruner")
PRUNER_KEYS = ("kind", "min_rounds", "reduction")
SWEEP_TAG = "sweep"
STOP_GRACE_S = 10.0  # how long stopped workers get to mark their runs KILLED before they are killed outright


@dataclass(frozen=True)
class TuneStage:
    """The ``tune:`` stage of a sweep preset (see the module doc)."""

    trials: int
    seeds: list[int]
    ranges: dict[str, dict[str, Any]]
    storage: str | None = None
    pruner: PrunerSpec | None = None  # None: every trial runs every round


@dataclass
class Sweep:
    name: str
    experiment: str
    configs: list[ExperimentConfig]
    labels: list[str]  # per config: the grid point and row that made it, e.g. "method.name=local seed=1"
    # per config: the keys its grid point, row and ``set`` fix (method hyperparameters without their prefix); a tune
    # stage does not search them
    fixed: list[set[str]] = field(default_factory=list)
    tune: TuneStage | None = None
    tags: list[dict[str, str]] = field(default_factory=list)  # per config: extra MLflow tags of its run
    tune_cost: float | None = None  # full-run equivalents its tune stage spent (set by run_tune_stage)


@dataclass(frozen=True)
class SweepProgress:
    total: int
    done: int
    running: int
    failed: int
    skipped: int
    elapsed_s: float
    # config index -> the outcome of each run finished or skipped so far (not compared: equality is the counts')
    outcomes: Mapping[int, RunOutcome] = field(default_factory=dict, compare=False)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate runs completed so far; None before the first completes."""
        completed = self.done + self.failed
        if not completed:
            return None
        return self.elapsed_s / completed * (self.total - self.skipped - completed)


@dataclass(frozen=True)
class RunOutcome:
    label: str
    config_hash: str
    status: Literal["done", "skipped", "elsewhere", "failed"]  # elsewhere: running in another process (sweep)
    run_id: str | None = None
    reason: str | None = None


@dataclass
class SweepResult:
    outcomes: list[RunOutcome]  # in the sweep's config order

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def elsewhere(self) -> int:
        """Runs left to the other process (another sweep of the same grid) that is running them."""
        return self.count("elsewhere")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def run_ids(self) -> list[str]:
        """The FINISHED runs of the sweep: those run now and those skipped as already finished."""
        return [o.run_id for o in self.outcomes if o.run_id is not None]

    @property
    def failures(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


# -- loading -----------------------------------------------------------------------------------------------------

def _read_sweep_file(source: str | Path) -> tuple[str, dict[str, Any], Path | None]:
    """(name, mapping, folder to resolve a relative ``base`` file in) of a sweep file or shipped preset."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"sweep file {str(path)!r} not found")
        name, text, folder = path.stem, path.read_text(), path.parent
    else:
        presets = importlib.resources.files("bench") / "presets"
        found = [r for r in (presets / "sweeps" / f"{source}.yaml", presets / f"{source}.yaml") if r.is_file()]
        if not found:
            raise ConfigError(f"{source!r} is neither a sweep file nor a preset under bench/presets/sweeps/ "
                              "or bench/presets/")
        name, text, folder = str(source), found[0].read_text(), None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep {name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"sweep {name}: the top level must be a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"sweep {name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SWEEP_KEYS)}")
    return name, data, folder


def _base_config(base: Any, folder: Path | None, name: str) -> dict[str, Any]:
    if base is None:
        return {}
    if isinstance(base, dict):
        return base
    if not isinstance(base, str):
        raise ConfigError(f"sweep {name}: base must be a preset name, a config file or a mapping, not {base!r}")
    if folder is not None and (folder / base).is_file():
        return read_source(folder / base)
    return read_source(base)


def _dotted_mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{what} must be a mapping of dotted config keys to values, not {value!r}")
    return dict(value)


def _axes(grid: dict[str, Any]) -> dict[str, list[Any]]:
    axes = {}
    for key, values in grid.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"grid axis {key!r} has no values")
        axes[key] = values
    return axes


def _product(axes: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def expand_points(grid: Mapping[str, list[Any]], rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The grid's points, then each row over the grid axes it does not set (the grid alone if no rows)."""
    points = _product(grid) if grid or not rows else []
    for row in rows:
        free = {k: v for k, v in grid.items() if k not in row}
        points += [{**point, **row} for point in _product(free)]
    return points


def load_sweep(source: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Load a sweep preset (name under presets/sweeps/ or presets/, or a file) and validate every config.

    ``overrides`` (``key=value``) apply to the base, except keys naming a grid axis, which replace that axis
    (a scalar value becomes a one-element list).
    """
    name, spec, folder = _read_sweep_file(source)
    experiment = str(spec.get("experiment") or name)
    base = _base_config(spec.get("base"), folder, name)
    settings = _dotted_mapping(spec.get("set"), f"sweep {name}: set")
    grid = _axes(_dotted_mapping(spec.get("grid"), f"sweep {name}: grid"))
    rows = spec.get("runs") or []
    if not isinstance(rows, list):
        raise ConfigError(f"sweep {name}: runs must be a list of override mappings")
    rows = [_dotted_mapping(row, f"sweep {name}: runs[{i}]") for i, row in enumerate(rows)]
    for key, value in parse_overrides(overrides).items():
        if key in grid:
            grid[key] = value if isinstance(value, list) else [value]
        else:
            settings[key] = value
    for key, value in settings.items():
        set_dotted(base, key, value)
    tune_spec = spec.get("tune")
    shared = set(_dotted_mapping(tune_spec.get("ranges"), f"sweep {name}: tune.ranges")) \
        if isinstance(tune_spec, dict) else set()
    configs, labels, fixed, tags, seen = [], [], [], [], {}
    for point in expand_points(grid, rows):
        label = " ".join(f"{k}={v}" for k, v in point.items()) or name
        data = yaml.safe_load(yaml.safe_dump(base))  # a deep copy
        for key, value in point.items():
            set_dotted(data, key, value)
        set_dotted(data, "run.experiment", experiment)
        try:
            config = validate_config(data)
        except ConfigError as exc:
            raise ConfigError(f"sweep {name}, run {label!r}: {exc}") from None
        role = role_tags(config, point, shared)
        key = run_key(config.content_hash(), role)
        if key in seen:
            log.info("sweep %s: %r is the same config as %r; it runs once", name, label, seen[key])
            continue
        seen[key] = label
        configs.append(config)
        labels.append(label)
        fixed.append({k.removeprefix("method.hparams.") for k in (*point, *settings)})
        tags.append(role)
    stage = tune_stage(tune_spec, configs, name)
    return Sweep(name, experiment, configs, labels, fixed, stage, tags)


def role_tags(config: ExperimentConfig, point: Mapping[str, Any], shared: set[str]) -> dict[str, str]:
    """The run's ``role`` tag (:mod:`bench.track.tags`) from what its grid point and row set: ``sensitivity`` when
    they fix a hyperparameter the method declares a range for or one of the tune stage's ``shared`` ranges,
    ``ablation`` when they set another of the method's hyperparameters to a value other than its default, else
    ``main``."""
    method = get_method(config.method.name)
    own = search_space(method.Hparams)
    defaults = method.Hparams().model_dump(mode="json")
    hparams = {k.removeprefix("method.hparams."): v for k, v in point.items() if k.startswith("method.hparams.")}
    searched = sorted([k for k in point if k in shared] + [k for k in hparams if k in own])
    if searched:
        return {ROLE_TAG: SENSITIVITY, SENSITIVITY_TAG: ",".join(searched)}
    switched = [k for k, v in hparams.items() if defaults.get(k) != config.method.hparams.get(k, v)]
    return {ROLE_TAG: ABLATION if switched else MAIN}


def tune_stage(spec: Any, configs: list[ExperimentConfig], name: str) -> TuneStage | None:
    """The validated ``tune:`` mapping (None without one)."""
    if spec is None:
        return None
    what = f"sweep {name}: tune"
    _check_keys(spec, TUNE_KEYS, what)
    trials, seeds = spec.get("trials"), spec.get("seeds")
    if not _is_int_from(trials, 1):
        raise ConfigError(f"{what}.trials must be a positive integer, not {trials!r}")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) for x in seeds):
        raise ConfigError(f"{what}.seeds must be a non-empty list of integer seeds, not {seeds!r}")
    shared = sorted(set(seeds) & {c.seed for c in configs})
    if shared:
        raise ConfigError(f"{what}.seeds {shared} are also seeds of the sweep's runs: tuning seeds must differ "
                          "from the test seeds")
    ranges = _dotted_mapping(spec.get("ranges"), f"{what}.ranges")
    for key, bounds in ranges.items():
        section, _, field_name = key.partition(".")
        if section != "train" or field_name not in TrainConfig.model_fields:
            raise ConfigError(f"{what}.ranges: {key!r} is not a train.* config key")
        if not isinstance(bounds, dict) or not ("choices" in bounds or {"low", "high"} <= set(bounds)):
            raise ConfigError(f"{what}.ranges.{key} must be {{choices: [...]}} or {{low: .., high: .., log: ..}}")
    for config in configs:
        check_validation_split(config)
    storage = spec.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise ConfigError(f"{what}.storage must be an Optuna storage URL, not {storage!r}")
    return TuneStage(trials, list(seeds), ranges, storage, pruner_spec(spec.get("pruner"), configs, seeds, what))


def _check_keys(spec: Any, keys: Sequence[str], what: str) -> None:
    """``spec`` is a mapping whose keys are all among ``keys``, else a ConfigError naming ``what``."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{what} must be a mapping with keys {', '.join(keys)}, not {spec!r}")
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(keys)}")


def _is_int_from(value: Any, least: int) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def pruner_spec(spec: Any, configs: list[ExperimentConfig], seeds: list[int], what: str) -> PrunerSpec | None:
    """The validated ``tune.pruner`` mapping (None without one): refused where it could prune nothing."""
    if spec is None:
        return None
    what = f"{what}.pruner"
    _check_keys(spec, PRUNER_KEYS, what)
    kind, min_rounds, reduction = spec.get("kind"), spec.get("min_rounds"), spec.get("reduction", 3)
    if kind not in PRUNER_KINDS:
        raise ConfigError(f"{what}.kind must be one of {', '.join(PRUNER_KINDS)}, not {kind!r}")
    if not _is_int_from(min_rounds, 1):
        raise ConfigError(f"{what}.min_rounds must be a positive integer (the first rung, in rounds), "
                          f"not {min_rounds!r}")
    if not _is_int_from(reduction, 2):
        raise ConfigError(f"{what}.reduction must be an integer of at least 2, not {reduction!r}")
    if len(seeds) > 1:
        raise ConfigError(f"{what} needs one tuning seed, but tune.seeds has {len(seeds)}: a trial runs its seeds one "
                          "after the other, so there is no mean to judge it by before its end")
    for config in configs:
        every, rounds = config.eval.every, config.train.rounds
        if -(-min_rounds // every) * every >= rounds:  # the first evaluated round from min_rounds on
            raise ConfigError(f"{what}.min_rounds {min_rounds}: with eval.every={every} no round from {min_rounds} "
                              f"on is evaluated before the last ({rounds}), so nothing could be pruned; lower "
                              "min_rounds or eval.every")
    return PrunerSpec(kind, min_rounds, reduction)


# -- running -----------------------------------------------------------------------------------------------------

def absolute_tracking_uri(uri: str) -> str:
    """A relative ``sqlite:///file.db`` made absolute, so runs in other processes or folders share it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


@dataclass
class Resumable:
    """An interrupted run (Ctrl-C, SIGTERM, or its process died) with a checkpoint to resume from."""

    run_id: str
    threads: int | None  # the run's torch threads (param run.threads): resuming with them is bitwise-identical


@dataclass
class PriorRuns:
    """Run key (:func:`run_key`) -> an experiment's earlier runs that a sweep does not start again."""

    finished: dict[str, str]  # run ids, skipped
    killed: dict[str, Resumable]  # resumed
    running: dict[str, ClaimedElsewhere] = field(default_factory=dict)  # RUNNING in a live process: left to it


def close_orphaned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED, with the reason as the ``error`` tag, the experiment's RUNNING runs whose owner process has
    ended; returns their ids. They then resume (or start over) like runs stopped with Ctrl-C."""
    closed = []
    for run in search_all_runs(client, experiment_id, "attributes.status = 'RUNNING'"):
        owner = run.data.tags.get(OWNER_TAG)
        if owner_alive(owner) is False:
            client.set_tag(run.info.run_id, "error", why_left_running(owner))
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    return closed


def prior_runs(uri: str, experiment: str) -> PriorRuns:
    """The FINISHED runs, the resumable KILLED runs (newest first) and the runs RUNNING in live processes (another
    sweep's) of an experiment, creating it if missing. RUNNING runs whose process has died on this machine are
    marked KILLED first."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = get_or_create_experiment(client, experiment)
    for run_id in close_orphaned_runs(client, experiment_id):
        log.warning("run %s was left RUNNING by a process that no longer exists; marked KILLED", run_id)
    prior = PriorRuns({}, {})
    for run in search_all_runs(client, experiment_id, "attributes.status = 'RUNNING'"):
        owner = run.data.tags.get(OWNER_TAG)
        if owner_alive(owner):
            prior.running.setdefault(run_key(run.data.tags.get("config_hash", ""), run.data.tags),
                                     ClaimedElsewhere(run.info.run_id, "RUNNING", owner))
    for run in search_all_runs(client, experiment_id, "attributes.status != 'RUNNING'"):
        digest, status = run_key(run.data.tags.get("config_hash", ""), run.data.tags), run.info.status
        checkpoints = run.data.tags.get(CHECKPOINT_TAG)
        if status == "FINISHED":
            prior.finished.setdefault(digest, run.info.run_id)
        elif status == "KILLED" and checkpoints and list_checkpoints(Path(checkpoints)):
            threads = run.data.params.get("run.threads")
            prior.killed.setdefault(digest, Resumable(run.info.run_id, int(threads) if threads else None))
    return prior


def run_config(config_data: dict[str, Any], tags: dict[str, str], resume_run_id: str | None = None,
               callbacks: Sequence[Callback] = ()) -> tuple[str | None, str | None]:
    """Run one experiment (or resume the run ``resume_run_id`` of the same config) in this process, once its grid
    point is claimed (:mod:`bench.track.claim`): ``(run_id, None)``, or ``(None, reason)`` if it failed. Raises
    :class:`ClaimedElsewhere` when another process has run the point or is running it, and
    :class:`DiskFullError` when a disk is full (every run after it would fail alike)."""
    uri = tracking_uri(config_data["run"]["tracking_uri"])

    def claim() -> Any:
        experiment_id = get_or_create_experiment(MlflowClient(tracking_uri=uri), config.run.experiment)
        return claim_point(uri, experiment_id, run_key(config.content_hash(), tags))

    run = config_data["run"]
    try:
        with reported_disk_full([uri, run["checkpoint_dir"], run["cache_dir"], *artifact_locations(uri, run)]):
            config = validate_config(config_data)
            return run_experiment(config, list(callbacks), tags=tags, resume_run_id=resume_run_id,
                                  claim=claim).run_id, None
    except (ClaimedElsewhere, DiskFullError):
        raise
    except RunInUseError:  # another sweep reopened the interrupted run first
        raise ClaimedElsewhere(str(resume_run_id), "RUNNING", None) from None
    except Exception as exc:
        log.debug("run failed", exc_info=True)
        return None, f"{type(exc).__name__}: {exc}"


def artifact_locations(uri: str, run: Mapping[str, Any]) -> list[str]:
    """Where the run's experiment keeps its artifacts, if it exists yet (a place a full disk may be named by)."""
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(run["experiment"])
    location = experiment.artifact_location if experiment else artifact_location(uri, run["experiment"])
    return [location] if location else []


class Launcher(Protocol):
    """Where a sweep's jobs (runs, and the studies of its tune stage) execute: ``submit(fn, args, threads)``
    calls ``fn(*args)`` with ``threads`` CPUs and returns its future; ``stop()`` ends the jobs still running (the
    sweep was interrupted), their runs marked KILLED."""

    def submit(self, fn: Callable[..., Any], args: tuple, threads: int) -> cf.Future: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class InProcessLauncher:
    """One job at a time in this process (``workers=1``): the simplest to debug."""

    def submit(self, fn: Callable[..., Any], args: tuple, threads: int) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def stop(self) -> None:
        pass  # the interrupt has reached the job already: it ran in this process

    def close(self) -> None:
        pass


def _worker_setup() -> None:
    """A worker process leaves SIGINT to the sweep (Ctrl-C reaches the whole process group; the sweep then stops its
    workers itself), while idle ends quietly on SIGTERM (see :func:`_stoppable`), and leaves the reporting of database
    errors to the sweep."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    quiet_database_errors()


def _stoppable(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker process, where SIGTERM (from the sweep stopping it, or a batch scheduler ending the
    job) raises :class:`~bench.track.interrupt.Terminated` in it: its run is marked KILLED, its trial FAILED."""
    raise_on_sigterm()
    try:
        return fn(*args)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class ProcessPoolLauncher:
    """Jobs in fresh (spawned) processes on this machine."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = self._new_pool()
        self.futures: list[cf.Future] = []  # the submitted jobs, for stop()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_setup)

    def submit(self, fn: Callable[..., Any], args: tuple, threads: int) -> cf.Future:
        try:
            future = self.pool.submit(_stoppable, fn, *args)
        except BrokenProcessPool:  # a worker died (out of memory, killed): its jobs failed, the rest go on
            log.warning("a sweep worker process died; starting new ones")
            self.pool = self._new_pool()
            future = self.pool.submit(_stoppable, fn, *args)
        self.futures.append(future)
        return future

    def stop(self) -> None:
        """SIGTERM to every worker process: a running job ends (its run KILLED) and sends its result, then a second
        SIGTERM ends the idle process; SIGKILL to any still alive :data:`STOP_GRACE_S` after the first."""
        processes = list((self.pool._processes or {}).values())  # the executor has no public list of its processes
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            if process.is_alive():
                process.terminate()
        cf.wait([f for f in self.futures if not f.done()], timeout=STOP_GRACE_S)
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()  # idle now: SIGTERM ends it at once
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("sweep worker %d did not stop within %.0f s of SIGTERM; killed", process.pid,
                            STOP_GRACE_S)
                process.kill()
                process.join(1)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayLauncher:
    """Each job a Ray task declaring ``threads`` CPUs and ``gpus_per_run`` GPUs (default: one where the cluster
    has GPUs; 0.25 packs four runs on one GPU). Ray shows the task only the GPUs it was given, so a run with
    ``run.device`` ``auto`` or ``cuda`` computes on its own share."""

    def __init__(self, address: str | None, gpus_per_run: float | None = None):
        from bench.fed.ray_executor import connect_ray

        self.ray, self.started = connect_ray(address)
        self.tasks: dict[Callable[..., Any], Any] = {}
        self.refs: list[Any] = []  # the submitted tasks, for stop()
        if gpus_per_run is None:
            gpus_per_run = 1.0 if self.ray.cluster_resources().get("GPU", 0) else 0.0
        self.gpus = gpus_per_run

    def submit(self, fn: Callable[..., Any], args: tuple, threads: int) -> cf.Future:
        if fn not in self.tasks:  # no retries: a retry would start a second MLflow run
            self.tasks[fn] = self.ray.remote(max_retries=0)(fn)
        ref = self.tasks[fn].options(num_cpus=threads, num_gpus=self.gpus).remote(*args)
        self.refs.append(ref)
        return ref.future()

    def stop(self) -> None:
        """Cancel the tasks: Ray raises KeyboardInterrupt in those running, so their runs are marked KILLED."""
        for ref in self.refs:
            self.ray.cancel(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def run_jobs(launcher: Launcher, jobs: Sequence[int], workers: int,
             start: Callable[[int, int], tuple[Callable[..., Any], tuple, int]],
             finished: Callable[[int, cf.Future], None], running: Callable[[int], None] = lambda n: None) -> None:
    """Run ``jobs`` (indices) through ``launcher``, at most ``workers`` at a time. ``start(job, slot)`` gives
    the call ``(fn, args, threads)`` for a job about to start on a free worker slot (0 ≤ slot < workers; on a
    machine whose GPUs are shared out, the slot's GPU); ``finished(job, future)`` is told of each job done;
    ``running(n)`` of the number running after each start and each end. On an exception (SIGINT or SIGTERM to
    this process, a full disk) the jobs still running are stopped (``launcher.stop()``) before it is raised."""
    pending = list(jobs)
    in_flight: dict[cf.Future, tuple[int, int]] = {}  # future -> (job, slot)
    try:
        while pending or in_flight:
            while pending and len(in_flight) < workers:
                job = pending.pop(0)
                slot = min(set(range(workers)) - {slot for _, slot in in_flight.values()})
                running(len(in_flight) + 1)
                fn, args, threads = start(job, slot)
                in_flight[launcher.submit(fn, args, threads)] = (job, slot)
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for future in done:
                job, _ = in_flight.pop(future)
                finished(job, future)
            running(len(in_flight))
    except BaseException:
        ignore_stop_signals()
        if in_flight:
            log.info("stopping %d running jobs", len(in_flight))
            launcher.stop()
        raise


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stop_signal_blocks = 0  # how deep the main thread is in stop_signals_restored blocks


@contextmanager
def stop_signals_restored() -> Iterator[None]:
    """A block within which :func:`ignore_stop_signals` may turn SIGINT and SIGTERM off; their handlers of before are
    back when the outermost such block ends (in the main thread; elsewhere signals cannot be handled anyway)."""
    global _stop_signal_blocks
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    _stop_signal_blocks += 1
    try:
        yield
    finally:
        _stop_signal_blocks -= 1
        if not _stop_signal_blocks:
            for number, handler in previous.items():
                signal.signal(number, handler)


def ignore_stop_signals() -> None:
    """Once the sweep is stopping, a second SIGINT or SIGTERM (``timeout -s INT`` followed by a supervisor's SIGTERM)
    must not cut short the stopping of its workers and the closing of its runs: ignore them until the outermost
    :func:`stop_signals_restored` block ends."""
    if _stop_signal_blocks and threading.current_thread() is threading.main_thread():
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)


def on_slot_device(data: dict[str, Any], slot: int, slot_devices: list[str] | None) -> dict[str, Any]:
    """Config data whose ``run.device`` ``auto`` or ``cuda`` becomes the worker slot's GPU, where this machine's
    GPUs are shared out (``slot_devices``); other devices are kept."""
    if slot_devices and data["run"]["device"] in ("auto", "cuda"):
        data["run"]["device"] = slot_devices[slot]
    return data


def local_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_launcher(backend: str, workers: int, address: str | None, gpus_per_run: float | None = None) -> Launcher:
    """Where the runs go; no Ray cluster or process pool is started when nothing is left to run."""
    if backend == "ray" and workers:
        return RayLauncher(address, gpus_per_run)
    if workers > 1:
        return ProcessPoolLauncher(workers)
    return InProcessLauncher()


def run_sweep(sweep: Sweep, backend: Literal["local", "ray"] = "local", workers: int = 1,
              address: str | None = None, progress: Callable[[SweepProgress], None] | None = None,
              threads: int | None = None, gpus_per_run: float | None = None,
              gpus: int | None = None, run_callbacks: Callable[[int], list[Callback]] | None = None) -> SweepResult:
    """Run the sweep's tune stage, if it has one, then its unfinished configs, ``workers`` at a time; failures
    of runs are collected, not raised (a study that fails raises).

    ``threads`` (torch threads per run) defaults to the local cores // ``workers`` on the local backend and to
    each config's ``run.threads`` on Ray. ``address`` is the Ray cluster's (default: start a local one).
    On the local backend, the ``workers`` concurrent runs whose ``run.device`` is ``auto`` or ``cuda`` each get a
    GPU of this machine's ``gpus`` (default: all it has), round-robin: worker slot i runs on ``cuda:{i mod gpus}``.
    On Ray each run asks for ``gpus_per_run`` GPUs (see :class:`RayLauncher`). ``run_callbacks(i)`` gives the
    engine callbacks of config ``i``'s run (e.g. a progress bar; they travel to the worker, so with several workers
    or on Ray they must pickle).
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown sweep backend {backend!r}; use 'local' or 'ray'")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if address is not None and backend != "ray":
        raise ValueError("an address is only for the ray backend (add --backend ray)")
    if gpus_per_run is not None and (backend != "ray" or gpus_per_run < 0):
        raise ValueError(f"--gpus-per-run is for the ray backend and must be >= 0, got {gpus_per_run}")
    gpu_count = local_gpus() if gpus is None and backend == "local" else gpus or 0
    slot_devices = worker_devices("cuda", workers, gpu_count) if gpu_count else None
    if backend == "local" and threads is None:
        threads = max(1, local_cores() // workers)
    uri = absolute_tracking_uri(tracking_uri(sweep.configs[0].run.tracking_uri))
    stores = [uri, absolute_tracking_uri(sweep.tune.storage or DEFAULT_STORAGE)] if sweep.tune else [uri]
    with stop_signals_restored(), reported_disk_full(stores):
        with store_lock(uri):  # a new store gets its tables once, and two sweeps started together one parent run
            client = MlflowClient(tracking_uri=uri)
            parent_run_id = open_parent_run(client, get_or_create_experiment(client, sweep.experiment),
                                            f"sweep:{sweep.name}", f"sweep {sweep.name}",
                                            f"Sweep **{sweep.name}**: {len(sweep.configs)} runs"
                                            + (", tuning first." if sweep.tune else "."))
        with closed_on_exception(client, parent_run_id, record_reason=False):
            sweep = run_tune_stage(sweep, parent_run_id, lambda jobs: make_launcher(backend, min(workers, jobs),
                                                                                   address, gpus_per_run),
                                   workers, threads, slot_devices)
            result = _run_configs(sweep, client, parent_run_id, uri, threads, slot_devices, progress,
                                  lambda jobs: make_launcher(backend, min(workers, jobs), address, gpus_per_run),
                                  workers, run_callbacks)
        client.set_tag(parent_run_id, NOTE_TAG, f"Sweep **{sweep.name}**: {len(sweep.configs)} runs; {summary(result)}."
                                                + tune_cost_note(sweep))
        client.set_terminated(parent_run_id, "FAILED" if result.failed else "FINISHED")
    return result


def summary(result: SweepResult) -> str:
    """E.g. ``3 ran, 1 skipped (already finished), 0 failed`` (and how many another sweep is running, if any)."""
    elsewhere = f", {result.elsewhere} left to another sweep running them" if result.elsewhere else ""
    return (f"{result.done} ran, {result.skipped} skipped (already finished){elsewhere}, "
            f"{result.failed} failed")


def _run_configs(sweep: Sweep, client: MlflowClient, parent_run_id: str, uri: str, threads: int | None,
                 slot_devices: list[str] | None, progress: Callable[[SweepProgress], None] | None,
                 launcher: Callable[[int], Launcher], workers: int,
                 run_callbacks: Callable[[int], list[Callback]] | None = None) -> SweepResult:
    """Run the sweep's configs that no earlier or concurrent run has taken, ``workers`` at a time."""
    prior = prior_runs(uri, sweep.experiment)
    digests = [run_key(config.content_hash(), extra)
               for config, extra in zip(sweep.configs, sweep.tags, strict=True)]
    outcomes: dict[int, RunOutcome] = {}
    pending = []
    for i, (digest, label) in enumerate(zip(digests, sweep.labels, strict=True)):
        if digest in prior.finished:
            outcomes[i] = RunOutcome(label, digest, "skipped", prior.finished[digest])
        elif digest in prior.running:
            outcomes[i] = _taken(label, digest, prior.running[digest])
        else:
            pending.append(i)
    log.info("sweep %s: %d runs, %d already finished or running elsewhere", sweep.name, len(sweep.configs),
             len(outcomes))
    client.set_tag(parent_run_id, NOTE_TAG,
                   f"Sweep **{sweep.name}**: {len(sweep.configs)} runs, {len(pending)} to run." + tune_cost_note(sweep))
    tags = {SWEEP_TAG: sweep.name, "mlflow.parentRunId": parent_run_id}
    started = time.perf_counter()

    def report(running: int) -> None:
        if progress is not None:
            counts = [o.status for o in outcomes.values()]
            progress(SweepProgress(len(sweep.configs), counts.count("done"), running, counts.count("failed"),
                                   counts.count("skipped") + counts.count("elsewhere"), time.perf_counter() - started,
                                   dict(outcomes)))

    def start(i: int, slot: int) -> tuple[Callable[..., Any], tuple, int]:
        resume = prior.killed.get(digests[i])
        data = on_slot_device(_runtime_config(sweep.configs[i], uri, (resume and resume.threads) or threads),
                              slot, slot_devices)
        if resume:
            log.info("sweep %s: resuming the interrupted run %s of %r", sweep.name, resume.run_id, sweep.labels[i])
        run_tags = {**(sweep.tags[i] if sweep.tags else {}), **tags}
        callbacks = run_callbacks(i) if run_callbacks is not None else []
        return run_config, (data, run_tags, resume and resume.run_id, callbacks), data["run"]["threads"]

    def finished(i: int, future: cf.Future) -> None:
        outcomes[i] = _outcome(future, sweep.labels[i], digests[i])
        if outcomes[i].status in ("failed", "elsewhere"):
            log.warning("sweep %s: run %r %s: %s", sweep.name, sweep.labels[i], outcomes[i].status,
                        outcomes[i].reason)

    pool = launcher(len(pending))
    try:
        report(0)
        run_jobs(pool, pending, workers, start, finished, report)
    finally:
        pool.close()
    return SweepResult([outcomes[i] for i in range(len(sweep.configs))])


# -- the tune stage --------------------------------------------------------------------------------------------

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
        space = tunable_space(config, fixed)
        shared = {k: v for k, v in stage.ranges.items() if k not in fixed}
        if not space and not shared:
            names.append(None)
            continue
        name = f"{sweep.name}/{config.method.name}/{run_key(setting_digest(config)[:12], extra)}"
        if name not in specs:
            data = _runtime_config(config, uri, threads)
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
            MlflowClient(tracking_uri=uri).log_metric(parent_run_id, COST_METRIC, total)
    return replace(sweep, configs=configs, tags=tags, tune_cost=total)


def _runtime_config(config: ExperimentConfig, uri: str, threads: int | None) -> dict[str, Any]:
    """The config as a plain dict with run-section paths made absolute (workers may run elsewhere)."""
    data = config.model_dump(mode="json")
    run = data["run"]
    run.update(tracking_uri=uri, checkpoint_dir=str(Path(run["checkpoint_dir"]).resolve()),
               cache_dir=str(Path(run["cache_dir"]).resolve()))
    if threads is not None:
        run["threads"] = threads
    return data


def _outcome(future: cf.Future, label: str, digest: str) -> RunOutcome:
    """What became of a run job: done, failed, or taken by another process; a full disk is raised."""
    try:
        run_id, reason = future.result()
    except ClaimedElsewhere as taken:
        return _taken(label, digest, taken)
    except DiskFullError:
        raise
    except KeyboardInterrupt as exc:  # its worker alone was sent SIGTERM: the run is KILLED, resumable
        run_id, reason = None, f"stopped by a signal ({exc}); running the sweep again resumes it"
    except Exception as exc:  # the worker itself died (killed process, lost Ray node)
        run_id, reason = None, f"{type(exc).__name__}: {exc}"
    if run_id is None:
        return RunOutcome(label, digest, "failed", reason=reason)
    return RunOutcome(label, digest, "done", run_id)


def _taken(label: str, digest: str, taken: ClaimedElsewhere) -> RunOutcome:
    """A grid point another process has run (skipped, as finished) or is running (left to it)."""
    if taken.status == "FINISHED":
        return RunOutcome(label, digest, "skipped", taken.run_id)
    return RunOutcome(label, digest, "elsewhere", reason=str(taken))
