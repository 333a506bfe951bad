"""Checkpoints of a run's state: atomic writes, safe loads, fall back to the previous good one.

A checkpoint holds the :class:`bench.fed.engine.RunState` (server state, every client's personal state, the
communication ledger, the next round). Randomness needs no saved positions: every generator is derived from
(seed, purpose, round, client), so continuing from round ``t`` draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_NAME = re.compile(r"^round_(\d{6})\.pt$")


class CheckpointError(RuntimeError):
    """No usable checkpoint (missing, truncated, or from another config)."""


def checkpoint_path(directory: Path, next_round: int) -> Path:
    return directory / f"round_{next_round:06d}.pt"


def save_checkpoint(directory: Path, state: dict[str, Any], config_hash: str, keep: int = 2) -> Path:
    """Write ``state`` atomically (temporary file, fsync, rename) and keep the newest ``keep`` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(directory, int(state["next_round"]))
    payload = {"format": FORMAT_VERSION, "config_hash": config_hash, "state": state}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load_checkpoint_file(path: Path, config_hash: str) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupt): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION or "state" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a cafebench checkpoint of format {FORMAT_VERSION}")
    if payload["config_hash"] != config_hash:
        raise CheckpointError(f"checkpoint {path} belongs to config {payload['config_hash']}, not {config_hash}")
    return payload["state"]


def load_latest_checkpoint(directory: Path, config_hash: str) -> dict[str, Any]:
    """The newest readable checkpoint; a damaged newer one is skipped with a warning."""
    candidates = list_checkpoints(directory)
    if not candidates:
        raise CheckpointError(f"no checkpoint in {directory}: the run cannot be resumed "
                              "(was run.checkpoint_every 0, or did it stop before the first checkpoint?)")
    errors = []
    for path in reversed(candidates):
        try:
            return load_checkpoint_file(path, config_hash)
        except CheckpointError as exc:
            log.warning("%s; trying an older checkpoint", exc)
            errors.append(str(exc))
    raise CheckpointError("no usable checkpoint:\n  " + "\n  ".join(errors))
