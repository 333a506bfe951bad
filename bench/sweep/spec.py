"""Reading a sweep preset (the format: :mod:`bench.sweep`): its grid points and rows expanded into validated
configs, each run's role tags, and its tune stage with the stage's pruner."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.config import (
    PRESETS,
    SWEEP_PRESETS,
    ConfigError,
    ExperimentConfig,
    TrainConfig,
    parse_overrides,
    read_source,
    set_dotted,
    validate_config,
)
from bench.methods.api import search_space
from bench.methods.registry import get_method
from bench.record_names import ABLATION, MAIN, ROLE_TAG, SENSITIVITY, SENSITIVITY_TAG
from bench.track.claim import run_key
from bench.tune import check_validation_split
from bench.tune_candidates import PRUNER_KINDS, PrunerSpec

log = logging.getLogger(__name__)
SWEEP_KEYS = ("base", "experiment", "set", "grid", "runs", "tune")
TUNE_KEYS = ("trials", "seeds", "ranges", "storage", "pruner")
PRUNER_KEYS = ("kind", "min_rounds", "reduction")


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


def read_sweep_file(source: str | Path) -> tuple[str, dict[str, Any], Path | None]:
    """(name, mapping, folder to resolve a relative ``base`` file in) of a sweep file or a shipped preset (under
    ``presets/sweeps/``, else ``presets/``)."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"sweep file {str(path)!r} not found")
        name, found, folder = path.stem, str(path), path.parent
    else:
        name, folder = str(source), None
        found = next((preset for preset in (f"{SWEEP_PRESETS}/{source}", name)
                      if (PRESETS / f"{preset}.yaml").is_file()), None)
        if found is None:
            raise ConfigError(f"{source!r} is neither a sweep file nor a preset under bench/presets/{SWEEP_PRESETS}/ "
                              "or bench/presets/")
    data = read_source(found)
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"sweep {name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SWEEP_KEYS)}")
    return name, data, folder


def base_config(base: Any, folder: Path | None, name: str) -> dict[str, Any]:
    """The config mapping a sweep's ``base`` names: itself when a mapping, else a config file (looked for first in
    ``folder``, the sweep file's) or an experiment preset."""
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
    name, spec, folder = read_sweep_file(source)
    experiment = str(spec.get("experiment") or name)
    base = base_config(spec.get("base"), folder, name)
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
    """The run's ``role`` tag (:mod:`bench.record_names`) from what its grid point and row set: ``sensitivity`` when
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
        check_validation_split(config.data.split)
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
