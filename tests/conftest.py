"""Shared fixtures: an isolated MLflow store per test and tiny experiment configs on synthetic data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CAFEBENCH_NO_DOWNLOAD", "1")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables created once (creating them costs seconds per database)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch, empty_mlflow_db) -> str:
    """An isolated MLflow store for one test, also set as $MLFLOW_TRACKING_URI."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(empty_mlflow_db, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def tiny_config(tmp_path) -> dict:
    """A config dict for a few-second run on the CPU: 4 clients on 16×16 synthetic images, conv3, 3 rounds."""
    return {
        "seed": 0,
        "data": {"dataset": "synthetic", "options": {"num_samples": 800, "image_size": 16}, "clients": 4,
                 "alpha": 0.5, "min_samples": 20, "augment": False},
        "model": {"name": "conv3", "width": 0.5},
        "method": {"name": "fedavg"},
        "train": {"rounds": 3, "local_epochs": 2, "batch_size": 32, "lr": 0.05},
        "eval": {"every": 1, "batch_size": 256},
        "run": {"checkpoint_every": 1, "checkpoint_dir": str(tmp_path / "ckpt"),
                "cache_dir": str(tmp_path / "cache"), "experiment": "test", "threads": 1,
                "device": "cpu"},  # bitwise expectations hold on the CPU; tests/test_gpu.py covers GPUs
    }


@pytest.fixture
def tiny_config_data(tmp_path) -> dict:
    return tiny_config(tmp_path)


@pytest.fixture(scope="session")
def make_tiny_config():
    """The tiny config as a function of a folder, for module-scoped fixtures."""
    return tiny_config
