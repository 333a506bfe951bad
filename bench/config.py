"""The experiment config: pydantic-validated YAML, ``key=value`` overrides, presets, a stable content hash."""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.resources
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.ground.plugins import PluginError, import_plugin
from bench.record_names import REPORT_THRESHOLD

PRESETS = importlib.resources.files("bench") / "presets"  # the shipped presets (sweeps in SWEEP_PRESETS)
SWEEP_PRESETS = "sweeps"  # the folder of PRESETS that holds the sweep presets
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# (section, key) of options added after configs were first hashed: they join the content hash only when set, so
# every config that leaves them unset keeps the hash (and the finished runs) it had before they existed.
HASHED_WHEN_SET = (("data", "max_samples"),)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key path and what to change."""


def did_you_mean(word: str, choices: Sequence[str], prefix: str = "") -> str:
    """``"; did you mean PREFIX+X?"`` for the closest of ``choices`` to a misspelt ``word`` (difflib), else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def yaml_error_text(origin: str, exc: yaml.YAMLError) -> str:
    """One line naming the file (or preset) and the line of a YAML syntax error: ``FILE, line 3, column 2: not
    valid YAML: expected <block end>, ... (while parsing a block mapping that starts at line 1)``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return f"{origin}: not valid YAML: {' '.join(str(exc).split())}"
    text = f"{origin}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and start.line != mark.line:
        text += f" ({context} that starts at line {start.line + 1})"
    elif context:
        text += f" ({context})"
    return text


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    dataset: str = "fmnist"
    root: str | None = Field(None, description="data root searched first (else $CAFEBENCH_DATA, ./datasets, ...)")
    options: dict[str, Any] = Field(default_factory=dict, description="dataset options, e.g. num_samples")
    max_samples: int | None = Field(
        None, ge=1, description="a class-balanced subset of at most this many samples of the whole dataset, drawn "
                                "before partitioning, for any source (None: all of it); hashed only when set")
    clients: int = Field(20, ge=1)
    alpha: float = Field(0.3, gt=0)
    min_samples: int = Field(10, ge=1)
    balance_cap: float | None = Field(None, gt=0)
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    augment: bool = True

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6 or v[0] <= 0 or v[2] <= 0:
            raise ValueError("train/val/test fractions must be non-negative, train and test positive, sum 1")
        return v


class ModelConfig(Section):
    name: str = "conv3"
    width: float = Field(1.0, gt=0, le=4)


class MethodConfig(Section):
    name: str = "fedavg"
    hparams: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(Section):
    rounds: int = Field(20, ge=1)
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    participation: float = Field(1.0, gt=0, le=1)
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, or mixed precision (autocast) in bf16 or fp16 (fp16 with a gradient scaler); "
                            "training and evaluation alike")


class EvalConfig(Section):
    every: int = Field(1, ge=1, description="evaluate every N rounds (and always after the last round)")
    batch_size: int = Field(512, ge=1)
    thresholds: list[float] = Field(default_factory=lambda: [round(0.05 * i, 2) for i in range(21)])
    report_threshold: float = Field(REPORT_THRESHOLD, description="threshold of the headline dyn/* summary metrics")
    point: Literal["aggregated", "local", "both"] = Field(
        "aggregated", description="which model of a client is tested each evaluated round: after aggregation "
                                  "(the new server state with the client's own part; test/..., val/...), right "
                                  "after its local training (local/test/..., local/val/...), or both")


class RunConfig(Section):
    """How the experiment is executed; it is not part of the hash. Beyond floating-point rounding (``threads``,
    ``compile``, ``channels_last``) none of it changes the results on one kind of device; ``device`` picks that kind
    (CPU and GPU runs of one config share a hash and differ in their ``device`` tag)."""

    executor: Literal["serial", "process", "ray"] = "serial"
    workers: int = Field(1, ge=1)
    threads: int = Field(2, ge=1, description="torch threads per worker")
    checkpoint_every: int = Field(5, ge=0, description="0 disables checkpoints")
    checkpoint_dir: str = ".cafebench/checkpoints"
    cache_dir: str = ".cafebench/cache"
    tracking_uri: str | None = None
    experiment: str = "cafebench"
    run_name: str | None = None
    ray_address: str | None = None
    device: str = Field("auto", description="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    state_device: Literal["device", "pinned"] = Field(
        "device", description="where clients' personal states live: on the device, or in pinned host memory for "
                              "federations whose states do not fit on it")
    deterministic: bool = Field(False, description="deterministic algorithms only (bitwise-repeatable on a GPU)")
    compile: bool = Field(False, description="torch.compile the model's forward (falls back to eager with a warning)")
    channels_last: bool | None = Field(
        None, description="convolutional models in channels_last memory format; default: on CPUs and CUDA GPUs "
                          "(1.48x faster training on a 2-core CPU, cafebench perf), off on MPS")
    system_metrics: bool | None = Field(
        None, description="MLflow system metrics (CPU, RAM, GPU); default: on when the device is a GPU")

    @field_validator("device")
    @classmethod
    def _device_spelling(cls, v: str) -> str:
        if not DEVICE_PATTERN.fullmatch(v):
            raise ValueError(f"{v!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
        return v


class ExperimentConfig(Section):
    seed: int = 0
    plugins: list[str] = Field(default_factory=list,
                               description="modules or .py files that register methods or datasets")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _local_point_needs_every_client(self) -> ExperimentConfig:
        if self.eval.point != "aggregated" and self.train.participation < 1:
            raise ValueError("eval.point: 'local' and 'both' test the model each client holds after training in "
                             "the round, so every client must train: set train.participation=1")
        return self

    def method_hparams(self):
        from bench.methods.registry import get_method

        return get_method(self.method.name).Hparams.model_validate(self.method.hparams)

    def content_hash(self) -> str:
        """Hash of everything that determines the results (all but the ``run`` section)."""
        payload = self.model_dump(mode="json", exclude={"run"})
        for section, key in HASHED_WHEN_SET:
            if payload[section][key] is None:
                del payload[section][key]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """The config as ``section.key`` → value (MLflow params)."""
        return flatten_dict(self.model_dump(mode="json"))


def flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_dict(value, path + "."))
        else:
            out[path] = value
    return out


def import_plugins(plugins: list[str]) -> None:
    """Import plugin modules (dotted names or paths to .py files) so their ``@register`` runs."""
    for spec in plugins:
        try:
            import_plugin(spec)
        except PluginError as exc:
            raise ConfigError(f"plugins: {exc}") from exc


# -- loading -----------------------------------------------------------------------------------------------------

def _yaml_names(root, skip: str | None = None) -> list[str]:
    """The ``.yaml`` files under a package folder as names without the suffix (``cpu/main``), sorted."""
    names: list[str] = []

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir() and child.name != skip:
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml"):
                names.append(prefix + child.name[: -len(".yaml")])

    walk(root, "")
    return sorted(names)


def preset_names() -> list[str]:
    """The shipped experiment presets (``demo``)."""
    return _yaml_names(PRESETS, skip=SWEEP_PRESETS)


def sweep_preset_names() -> list[str]:
    """The shipped sweep presets (``smoke``, ``quick/tables``, ...), for suggestions."""
    return _yaml_names(PRESETS / SWEEP_PRESETS)


def read_source(source: str | Path) -> dict[str, Any]:
    """Read a YAML config from a file path or a shipped preset name (``demo``, ``cpu/main``, ...)."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found")
        text = path.read_text()
        origin = str(path)
    else:
        resource = PRESETS / f"{source}.yaml"
        if not resource.is_file():
            presets = preset_names()
            hint = (f"; {source} is a sweep preset: cafebench sweep {source}" if str(source) in sweep_preset_names()
                    else did_you_mean(str(source), presets))
            raise ConfigError(f"{source!r} is neither a config file nor a preset{hint} (presets: {', '.join(presets)})")
        text = resource.read_text()
        origin = f"preset {source}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_text(origin, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections")
    return data


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``key.path=value`` strings to a mapping of dotted keys to values (parsed as YAML)."""
    parsed = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key.path=value")
        try:
            parsed[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_error_text(f"override {key!r}: value {raw!r}", exc)) from None
    return parsed


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections on the way."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"key {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, returning a new dict."""
    out = copy.deepcopy(data)
    for key, value in parse_overrides(overrides).items():
        set_dotted(out, key, value)
    return out


def _keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys allowed in the section of ``model`` at ``loc`` (empty where ``loc`` leaves the typed sections)."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _format_errors(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per error, ``  key.path: what is wrong``; an unknown key also names the closest allowed one."""
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        path = prefix + (".".join(str(p) for p in loc) or "(top level)")
        if err["type"] == "extra_forbidden":
            section = prefix + "".join(f"{p}." for p in loc[:-1])
            msg = "unknown key (not allowed here)" + did_you_mean(str(loc[-1]), _keys_at(model, loc[:-1]), section)
        else:
            msg = err["msg"]
        lines.append(f"  {path}: {msg}")
    return "invalid config:\n" + "\n".join(lines)


def validate_config(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a config dict, including the method's hyperparameters; errors name the key path. The sections are
    checked before the method and dataset registries are imported (they load PyTorch), so a mistyped key is refused
    at once."""
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, ExperimentConfig)) from None
    from bench.data.sources import get_dataset
    from bench.methods.registry import get_method

    import_plugins(config.plugins)
    try:
        method = get_method(config.method.name)
    except ValueError as exc:
        raise ConfigError(f"invalid config:\n  method.name: {exc}") from None
    try:
        get_dataset(config.data.dataset)
    except ValueError as exc:
        raise ConfigError(f"invalid config:\n  data.dataset: {exc}") from None
    try:
        hparams = method.Hparams.model_validate(config.method.hparams)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, method.Hparams, "method.hparams.")) from None
    config.method.hparams = hparams.model_dump(mode="json")
    return config


def load_config(source: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    return validate_config(apply_overrides(read_source(source), overrides or []))
