"""The README's commands and its plugin example are the real thing."""

import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

import bench.data.sources.registry as dataset_registry
import bench.methods.registry as method_registry
from bench.cli import main
from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks(text: str = README) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def section(title: str) -> str:
    """The README's text under ``## title``, up to the next heading of that level."""
    (body,) = re.findall(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    return body


def section_commands(title: str) -> list[str]:
    """Every line of the section's ``bash`` blocks: the commands it says to run."""
    return [line for block in bash_blocks(section(title)) for line in block.splitlines() if line.strip()]


def python_block(name: str) -> str:
    (code,) = re.findall(rf"```python\n# {re.escape(name)}\n(.*?)```", README, re.S)
    return code


def run_command(line: str, capsys) -> str:
    """Run one README command line in-process, as the shell would split it; its stdout."""
    argv = shlex.split(line)
    assert argv[0] == "cafebench", line
    code = main(argv[1:])
    captured = capsys.readouterr()
    assert code == 0, f"{line}\n{captured.err}"
    return captured.out


@pytest.fixture
def fresh_process(monkeypatch, tmp_path, tracking_uri):
    """The registries and imported plugin files of a new process, in an empty working directory; restored after."""
    monkeypatch.setattr(method_registry, "_REGISTRY", {k: v for k, v in method_registry._REGISTRY.items()
                                                       if k != "last_exit_only"})
    monkeypatch.setattr(dataset_registry, "_REGISTRY", {k: v for k, v in dataset_registry.available_datasets().items()
                                                        if k != "scans"})
    for name in [m for m in sys.modules if m.startswith("cafebench_plugin_")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_ci_runs_the_readme_test_command():
    demo, tests = bash_blocks()[:2]
    assert demo.endswith("cafebench demo")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_the_add_a_baseline_example_runs(tmp_path, tiny_config_data):
    code = python_block("my_method.py")
    plugin = tmp_path / "readme_plugin.py"
    plugin.write_text(code)
    data = apply_overrides(tiny_config_data, ["method.name=last_exit_only", "train.rounds=1"])
    data["plugins"] = [str(plugin)]
    sim = Simulation(validate_config(data))
    sim.run()
    assert sim.last_eval.metrics["test/acc/exit_3"] > 0.1
    assert sim.history[0]["comm/bytes_up"] > 0


def test_the_add_a_dataset_example_runs(tmp_path, tiny_config_data):
    code = python_block("my_dataset.py")
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


def test_the_add_a_baseline_commands_run_as_written(fresh_process, capsys):
    (fresh_process / "my_method.py").write_text(python_block("my_method.py"))
    assert main(["tune", "last_exit_only", "demo", "--trials", "1"]) == 2  # the plugin is named where it is needed
    err = capsys.readouterr().err
    assert "unknown method 'last_exit_only'" in err and "plugins='[FILE.py]'" in err
    run, methods, tune = section_commands("Add a baseline")
    assert run.startswith("cafebench run demo method.name=last_exit_only plugins='[my_method.py]'")
    out = run_command(run, capsys)
    assert re.search(r"^run \w+ finished: ", out, re.M) and re.search(r"exit_3=0\.\d{4}", out)
    out = run_command(methods, capsys)
    assert re.search(r"^last_exit_only\s+\[pfl\]\s+FedAvg trained on the last exit only", out, re.M)
    assert "label_smoothing = 0.0  tune: {'low': 0.0, 'high': 0.2}" in out
    assert tune.startswith("cafebench tune last_exit_only demo --trials ")
    out = run_command(tune, capsys)
    assert re.search(r"study \S+: \d+ completed", out) and "best configuration written to tuned/" in out


def test_the_add_a_dataset_commands_run_as_written(fresh_process, capsys):
    (fresh_process / "my_dataset.py").write_text(python_block("my_dataset.py"))
    scans = fresh_process / "data" / "scans"  # where the README puts the two files
    scans.mkdir(parents=True)
    labels = np.arange(600) % 3
    noise = np.random.default_rng(0).integers(0, 60, (600, 32, 32))
    np.save(scans / "images.npy", (labels[:, None, None] * 90 + noise).astype(np.uint8))
    np.save(scans / "labels.npy", labels)
    listing, load, run = section_commands("Add a dataset")
    out = run_command(listing, capsys)
    assert re.search(r"^scans\s+1×32×32, 3 classes  \[.*my_dataset\.py\]$", out, re.M)
    out = run_command(load, capsys)
    assert out == ("scans: 600 samples, input 1×32×32, 3 classes: healthy, benign, malignant\n"
                   "  samples per class: 200 to 200\n")
    assert run.startswith("cafebench run demo data.dataset=scans")
    out = run_command(run, capsys)
    accuracy = float(re.search(r"exit_3=(0\.\d{4})", out).group(1))
    assert accuracy > 0.5  # brightness tells the classes apart


def test_the_readme_cites_only_docs_the_project_has():
    cited = set(re.findall(r"\(((?:\.\./)?[\w/.-]+\.md)\)", README)) | set(re.findall(r"`([\w/.-]+\.md)`", README))
    assert "docs/cafedistill.md" in cited and "docs/baselines.md" in cited
    assert not [c for c in cited if c.startswith("..") or "shared/" in c]
    assert [c for c in cited if not (ROOT / c).is_file()] == []
