"""The house plan of issue 24, checked on the source tree: small modules, a record name spelled once, measurement
that does not reach into the engine, and a report that names no method."""

import ast
import re
from pathlib import Path

from bench.methods.registry import available_methods

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "baselines")
MAX_LINES = 450
RECORD_NAMES = ROOT / "bench" / "record_names.py"
# A whole string (or an f-string's leading text) that names a metric or an artifact path of a run.
RECORD_NAME = re.compile(r"^(local/)?(test|val|train|comm|macs|params|dyn|time|clients|acc)/\S*$|"
                         r"^(dynamic|partition|results|costs)/[\w.]+\.(json|csv|png)$")


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (or bare string statements): prose, not names."""
    return {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def record_name_literals(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text())
    prose = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            prose.add(id(node.values[0]))  # judged as the f-string's leading text below
            text = node.values[0].value
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            text = node.value
        else:
            continue
        if RECORD_NAME.match(text):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {text!r}")
    return found


def test_no_module_is_over_the_line_limit():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in modules(*PACKAGES)
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_metric_names_and_artifact_paths_are_spelled_only_in_the_record_names_module():
    spelled = [hit for p in modules(*PACKAGES) if p != RECORD_NAMES for hit in record_name_literals(p)]
    assert not spelled, "spell these through bench.record_names:\n" + "\n".join(spelled)


def test_the_check_finds_a_spelled_metric_name(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""test/acc/mean in prose is fine."""\nA = "test/acc/mean"\nB = f"macs/exit_{1}"\n'
                      'C = "dynamic/curve.json"\nD = "a/b"\nE = "train/val/test fractions"\n')
    assert record_name_literals(module, tmp_path) == [
        "m.py:2: 'test/acc/mean'", "m.py:3: 'macs/exit_'", "m.py:4: 'dynamic/curve.json'"]


def test_measurement_imports_nothing_from_the_engine():
    reaching = [f"{p.relative_to(ROOT)}: {name}" for p in modules("bench/measure")
                for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.ImportFrom | ast.Import)
                for name in ([node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names])
                if name.startswith(("bench.fed", "bench.track"))]
    assert not reaching, reaching


def test_the_report_package_names_no_method():
    methods = set(available_methods())
    named = [f"{p.relative_to(ROOT)}:{node.lineno}: {node.value!r}" for p in modules("bench/report")
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in methods]
    assert not named, named
