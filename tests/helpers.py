"""Helpers shared by the sweep, Ray and tuning tests: a seconds-long base config and sweep files."""

import yaml


def tiny_base(tmp_path) -> dict:
    """A run of a few seconds on the bundled digits."""
    return {
        "data": {"dataset": "digits", "clients": 3, "alpha": 0.5, "augment": False},
        "model": {"name": "conv3", "width": 0.25},
        "train": {"rounds": 2, "batch_size": 32},
        "eval": {"thresholds": [0.5, 0.9], "report_threshold": 0.9},
        "run": {"checkpoint_every": 0, "cache_dir": str(tmp_path / "cache"), "threads": 1},
    }


def write_sweep(tmp_path, name: str, base: dict | None = None, **spec) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": base or tiny_base(tmp_path), **spec}, sort_keys=False))
    return str(path)
