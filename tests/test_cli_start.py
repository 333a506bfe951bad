"""The command line starts without its heavy libraries: building the parser, ``--help`` of every command and a config
error leave PyTorch, MLflow, Optuna, Ray and matplotlib unimported (each takes seconds to import). Each case runs in
a fresh interpreter, which reports the modules it loaded; a top-level ``import torch`` in a command's module fails
these tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import COMMANDS

HEAVY = ("torch", "mlflow", "optuna", "ray", "matplotlib")
ROOT = Path(__file__).resolve().parents[1]
# Runs each argv of sys.argv[1] (JSON) through main and reports, per argv, its exit status and the heavy modules
# loaded so far; stdout and stderr stay the command's own.
PROBE = f"""
import json, sys
from bench.cli import build_parser, main
build_parser()
report = [{{"argv": [], "code": None, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}]
for argv in json.loads(sys.argv[1]):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    report.append({{"argv": argv, "code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}})
with open(sys.argv[2], "w") as out:
    json.dump(report, out)
"""


def probe(tmp_path: Path, *argvs: list[str]) -> tuple[list[dict], subprocess.CompletedProcess]:
    """Run ``argvs`` one after the other in a fresh interpreter (in ``tmp_path``, so no store or data is found)."""
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs), str(report)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert report.exists(), done.stderr[-3000:]
    return json.loads(report.read_text()), done


def test_building_the_parser_and_every_help_import_no_heavy_library(tmp_path):
    report, done = probe(tmp_path, ["--help"], *([name, "--help"] for name in COMMANDS))
    assert [step["code"] for step in report[1:]] == [0] * (1 + len(COMMANDS))
    assert done.stdout.count("usage: cafebench") == 1 + len(COMMANDS)
    for name in COMMANDS:
        assert f"usage: cafebench {name}" in done.stdout
    assert "--ui-port UI_PORT" in done.stdout and "(default sqlite:///optuna.db)" in done.stdout
    for step in report:
        assert step["heavy"] == [], f"{step['argv'] or 'building the parser'} imported {step['heavy']}"


@pytest.mark.parametrize("argv, message", [
    (["run", "demo", "data.clientz=5"], "data.clientz: unknown key (not allowed here); did you mean data.clients?"),
    (["run", "missing.yaml"], "config file 'missing.yaml' not found"),
    (["run", "demo", "--resume", "abc"], "--resume takes the config from the run"),
    (["partition", "demo", "train.lrr=0.1"], "train.lrr: unknown key (not allowed here); did you mean train.lr?"),
    (["tune", "fedavg", "demo", "--trials", "2", "seeed=1"], "seeed: unknown key (not allowed here); did you mean "
                                                            "seed?"),
    (["sweep", "smok"], "'smok' is neither a sweep file nor a sweep preset; did you mean smoke?"),
])
def test_a_config_error_answers_without_a_heavy_library(tmp_path, argv, message):
    report, done = probe(tmp_path, argv)
    assert report[-1]["code"] == 2
    assert done.stderr.startswith(f"cafebench {argv[0]}: error: ") and message in done.stderr
    assert report[-1]["heavy"] == []


def test_a_wrong_method_name_and_the_methods_list_need_pytorch_only(tmp_path):
    """Methods are PyTorch code, so the registry that lists them loads PyTorch; nothing else heavy."""
    report, done = probe(tmp_path, ["run", "demo", "method.name=fedavgg"], ["methods"])
    assert [step["code"] for step in report[1:]] == [2, 0]
    assert "method.name: unknown method 'fedavgg' (did you mean fedavg?)" in done.stderr
    assert "fedavg  [base]" in done.stdout and "cafedistill  [ours]" in done.stdout
    for step in report[1:]:
        assert step["heavy"] == ["torch"]
