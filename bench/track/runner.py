"""Run one tracked experiment end to end, or resume one from its last checkpoint."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from bench.config import ConfigError, ExperimentConfig, validate_config
from bench.fed.device import device_name
from bench.fed.engine import Callback, Evaluation, Simulation
from bench.measure.summary import FinalMeasures
from bench.record_names import CHECKPOINT_TAG, CONFIG_ARTIFACT, DEVICE_NAME_TAG, DEVICE_TAG
from bench.track.checkpoint import CheckpointError, load_latest_checkpoint, save_checkpoint
from bench.track.mlflow_tracker import MlflowTracker, check_resumable, tracking_uri
from bench.track.system_metrics import start_system_metrics, wants_system_metrics

log = logging.getLogger(__name__)


class CheckpointCallback(Callback):
    """Saves the run state every ``every`` rounds and after the last round (after the round is logged)."""

    def __init__(self, directory: Path, every: int, config_hash: str):
        self.directory, self.every, self.config_hash = directory, every, config_hash

    def on_round_end(self, sim: Simulation, round: int, metrics: dict[str, float]) -> None:
        if self.every and (round % self.every == 0 or round == sim.rounds):
            try:
                save_checkpoint(self.directory, sim.state.to_checkpoint(), self.config_hash)
            except OSError as err:
                if err.filename is not None:
                    raise
                raise OSError(err.errno, err.strerror, str(self.directory)) from err  # torch names no file


@dataclass
class RunResult:
    run_id: str
    evaluation: Evaluation  # the last round's
    history: list[dict[str, float]]  # every round's metrics
    measures: FinalMeasures  # the end-of-run measures the run recorded


def run_experiment(config: ExperimentConfig, callbacks: list[Callback] | None = None, *,
                   resume_run_id: str | None = None, parent_run_id: str | None = None,
                   tags: dict[str, str] | None = None,
                   claim: Callable[[], AbstractContextManager[object]] | None = None) -> RunResult:
    """Run (or resume) one experiment as one MLflow run; a failure marks the run FAILED with the reason.

    Everything that can be checked without training comes first, before a run is created or reopened: the device
    exists, the data is found and read, the partition drawn, the model and the method's states built, and for a
    resume the run checked resumable and its checkpoint loaded. An error there leaves the store as it was. The run is
    tagged with its device (``device``, ``device_name``; a resumed run with the device it resumed on).
    ``claim()`` is held while the run is created or reopened (a sweep's claim on its grid point,
    :func:`bench.track.claim.claim_point`, which may refuse it).
    """
    sim = Simulation(config)
    if resume_run_id is not None:
        directory = _resumable_checkpoints(config.run.tracking_uri, resume_run_id)
        sim.restore(load_latest_checkpoint(directory, config.content_hash()))
    device_tags = {DEVICE_TAG: str(sim.device), DEVICE_NAME_TAG: device_name(sim.device)}
    with claim() if claim is not None else nullcontext():
        tracker = MlflowTracker(config, run_id=resume_run_id, extra_tags={**device_tags, **(tags or {})},
                                parent_run_id=parent_run_id)
    monitor = None
    try:
        if resume_run_id is not None:
            tracker.set_tags(device_tags)
        if wants_system_metrics(config.run.system_metrics, sim.device):
            monitor = start_system_metrics(tracker.run_id, tracker.client.tracking_uri, sim.device,
                                           resume=resume_run_id is not None)
        if resume_run_id is None:
            directory = Path(config.run.checkpoint_dir).resolve() / tracker.run_id
            tracker.set_tags({CHECKPOINT_TAG: str(directory)})
        else:
            log.info("resuming run %s at round %d", resume_run_id, sim.state.next_round + 1)
        sim.callbacks = [tracker, CheckpointCallback(directory, config.run.checkpoint_every, config.content_hash()),
                         *(callbacks or [])]
        evaluation = sim.run()
    except KeyboardInterrupt as exc:
        tracker.kill(str(exc) or "interrupted by the user")
        raise
    except BaseException as exc:
        tracker.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if monitor is not None:
            monitor.finish()
    tracker.finish()
    return RunResult(tracker.run_id, evaluation, sim.history, sim.measures)


def _resumable_checkpoints(uri: str | None, run_id: str) -> Path:
    """The checkpoint folder of the run ``run_id``, once the run is known to be resumable (read only)."""
    run = MlflowClient(tracking_uri=tracking_uri(uri)).get_run(run_id)
    check_resumable(run)
    if CHECKPOINT_TAG not in run.data.tags:
        raise CheckpointError(f"run {run_id} has no {CHECKPOINT_TAG} tag: it was not started by cafebench run")
    return Path(run.data.tags[CHECKPOINT_TAG])


def load_run_config(run_id: str, uri: str | None = None) -> ExperimentConfig:
    """The config an MLflow run was started with (its ``config.yaml`` artifact)."""
    client = MlflowClient(tracking_uri=tracking_uri(uri))
    try:
        client.get_run(run_id)
    except Exception as exc:
        raise ConfigError(f"no MLflow run {run_id!r} in {tracking_uri(uri)}: {exc}") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        data = yaml.safe_load(Path(path).read_text())
    if uri:
        data.setdefault("run", {})["tracking_uri"] = uri
    return validate_config(data)


def resume_experiment(run_id: str, uri: str | None = None, callbacks: list[Callback] | None = None) -> RunResult:
    return run_experiment(load_run_config(run_id, uri), callbacks, resume_run_id=run_id)
