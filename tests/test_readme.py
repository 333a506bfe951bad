"""The README's commands and its plugin example are the real thing."""

import re
from pathlib import Path

import numpy as np

from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", README, re.S)]


def test_ci_runs_the_readme_test_command():
    demo, tests = bash_blocks()[:2]
    assert demo.endswith("cafebench demo")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_the_add_a_baseline_example_runs(tmp_path, tiny_config_data):
    (code,) = re.findall(r"```python\n# my_method.py\n(.*?)```", README, re.S)
    plugin = tmp_path / "readme_plugin.py"
    plugin.write_text(code)
    data = apply_overrides(tiny_config_data, ["method.name=last_exit_only", "train.rounds=1"])
    data["plugins"] = [str(plugin)]
    sim = Simulation(validate_config(data))
    sim.run()
    assert sim.last_eval.metrics["test/acc/exit_3"] > 0.1
    assert sim.history[0]["comm/bytes_up"] > 0


def test_the_add_a_dataset_example_runs(tmp_path, tiny_config_data):
    (code,) = re.findall(r"```python\n# my_dataset.py\n(.*?)```", README, re.S)
    assert len(code.strip().splitlines()) < 30
    plugin = tmp_path / "readme_dataset.py"
    plugin.write_text(code)
    scans = tmp_path / "data" / "scans"
    scans.mkdir(parents=True)
    labels = np.arange(300) % 3
    noise = np.random.default_rng(0).integers(0, 60, (300, 32, 32))
    np.save(scans / "images.npy", (labels[:, None, None] * 90 + noise).astype(np.uint8))
    np.save(scans / "labels.npy", labels)
    data = apply_overrides(tiny_config_data, ["data.dataset=scans", "data.options={}", "train.rounds=1",
                                              f"data.root={tmp_path / 'data'}"])
    data["plugins"] = [str(plugin)]
    sim = Simulation(validate_config(data))
    sim.run()
    assert sim.fed.dataset.class_names == ["healthy", "benign", "malignant"]
    assert sim.fed.dataset.input_shape == (1, 32, 32)
    assert sim.last_eval.metrics["test/acc/exit_3"] > 0.5  # brightness tells the classes apart
