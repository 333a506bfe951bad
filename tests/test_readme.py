"""The commands of the README and the docs pages are the real thing, and their links lead somewhere.

A ``bash`` block in README.md or docs/*.md is a promise that its lines run as written: each one is run by a test
here (``RUN_BLOCKS`` says which sections hold them). Commands that are shown but not run here stand in a plain
(unlabelled) block.
"""

import ast
import builtins
import importlib
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
README = ROOT / "README.md"
PLUGINS = ROOT / "docs" / "plugins.md"
DOC_PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "reports" / "README.md"]

# The sections whose bash blocks a test below runs, and how many blocks each holds.
RUN_BLOCKS = {
    ("README.md", "Set up and run"): 2,  # the main job and the CI command (test_ci_runs_the_readme_test_command)
    ("README.md", "First thing to try"): 1,
    ("docs/plugins.md", "Add a baseline"): 1,
    ("docs/plugins.md", "Add a dataset"): 1,
}


def bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)]


def sections_of(text: str) -> dict[str, str]:
    """The text under each ``## title``, up to the next heading of that level."""
    return dict(re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", text, re.S | re.M))


def sections(page: Path) -> dict[str, str]:
    return sections_of(page.read_text())


def section_commands(page: Path, title: str) -> list[str]:
    """Every line of the section's ``bash`` blocks: the commands it says to run."""
    return [line for block in bash_blocks(sections(page)[title]) for line in block.splitlines() if line.strip()]


def python_block(name: str, page: Path = PLUGINS) -> str:
    (code,) = re.findall(rf"```python\n# {re.escape(name)}\n(.*?)```", page.read_text(), re.S)
    return code


def run_command(line: str, capsys) -> str:
    """Run one documented command line in-process, as the shell would split it; its stdout."""
    argv = shlex.split(line)
    assert argv[0] == "cafebench", line
    code = main(argv[1:])
    captured = capsys.readouterr()
    assert code == 0, f"{line}\n{captured.err}"
    return captured.out


@pytest.fixture
def fresh_process(monkeypatch, tmp_path, tracking_uri):
    """The registries and imported plugin files of a new process, in an empty working directory; restored after."""
    monkeypatch.setattr(method_registry, "_REGISTRY", {k: v for k, v in method_registry.available_methods().items()
                                                       if k != "last_exit_only"})
    monkeypatch.setattr(dataset_registry, "_REGISTRY", {k: v for k, v in dataset_registry.available_datasets().items()
                                                        if k != "scans"})
    for name in [m for m in sys.modules if m.startswith("cafebench_plugin_")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_ci_runs_the_readme_test_command():
    demo, tests = bash_blocks(sections(README)["Set up and run"])
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
    run, methods, tune = section_commands(PLUGINS, "Add a baseline")
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
    scans = fresh_process / "data" / "scans"  # where docs/plugins.md puts the two files
    scans.mkdir(parents=True)
    labels = np.arange(600) % 3
    noise = np.random.default_rng(0).integers(0, 60, (600, 32, 32))
    np.save(scans / "images.npy", (labels[:, None, None] * 90 + noise).astype(np.uint8))
    np.save(scans / "labels.npy", labels)
    listing, load, run = section_commands(PLUGINS, "Add a dataset")
    out = run_command(listing, capsys)
    assert re.search(r"^scans\s+1×32×32, 3 classes  \[.*my_dataset\.py\]$", out, re.M)
    out = run_command(load, capsys)
    assert out == ("scans: 600 samples, input 1×32×32, 3 classes: healthy, benign, malignant\n"
                   "  samples per class: 200 to 200\n")
    assert run.startswith("cafebench run demo data.dataset=scans")
    out = run_command(run, capsys)
    accuracy = float(re.search(r"exit_3=(0\.\d{4})", out).group(1))
    assert accuracy > 0.5  # brightness tells the classes apart


def test_the_first_thing_to_try_runs_as_written(fresh_process, capsys):
    sweep, report = section_commands(README, "First thing to try")
    out = run_command(sweep, capsys)
    assert re.search(r"^sweep smoke: 4 ran, 0 skipped \(already finished\), 0 failed; ", out, re.M)
    out = run_command(report, capsys)
    assert out.startswith("report of experiment 'smoke': ")
    report_md = (fresh_process / "reports" / "smoke" / "report.md").read_text()  # where the README says it lands
    accuracy = sections_of(report_md)["Accuracy"]
    for method in ("fedavg", "local"):  # a mean ± interval over the two seeds at digits, alpha 0.5
        assert re.search(rf"^\| {method} \| (\*\*)?\d+\.\d\d ± \d+\.\d\d(\*\*)? \|$", accuracy, re.M), accuracy
    out = run_command(sweep, capsys)  # run again: the finished runs are skipped, as the README says
    assert re.search(r"^sweep smoke: 0 ran, 4 skipped ", out, re.M)


def test_every_bash_block_is_one_a_test_runs():
    found = {}
    for page in DOC_PAGES[:-1]:  # README.md and docs/*.md
        for title, body in sections(page).items():
            if n := len(bash_blocks(body)):
                found[(str(page.relative_to(ROOT)), title)] = n
    assert found == RUN_BLOCKS, ("a bash block that no test runs (or a run one that moved): run it in "
                                 "tests/test_readme.py, or show it in a plain ``` block")
    before = re.split(r"^## ", README.read_text(), flags=re.M)[0]
    assert "```bash" not in before and all("```bash" not in re.split(r"^## ", p.read_text(), flags=re.M)[0]
                                           for p in DOC_PAGES[1:-1])


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_anchor_spelling():
    assert anchor("When a personalized model is tested (`eval.point`)") == \
        "when-a-personalized-model-is-tested-evalpoint"
    assert anchor("Contracts between the parts") == "contracts-between-the-parts"


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_of_the_project(page):
    links = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    relative = [link for link in links if not re.match(r"[a-z]+:", link)]
    broken = []
    for link in relative:
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if ROOT not in target.parents or "shared" in target.relative_to(ROOT).parts[:1] or not target.is_file():
            broken.append(link)
        elif fragment and target.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            if fragment not in {anchor(h) for h in headings}:
                broken.append(link)
    assert broken == []
    cited = re.findall(r"`([\w.-]+/[\w/.-]+\.md)`", page.read_text())  # paths in code spans
    assert [c for c in cited if not (ROOT / c).is_file() and not (page.parent / c).is_file()] == []


def test_the_readme_links_every_docs_page():
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", README.read_text()))
    assert linked == {p.name for p in (ROOT / "docs").glob("*.md")}
    assert len(README.read_text().splitlines()) <= 150  # a newcomer's first hour; the rest lives in docs/
    for page in DOC_PAGES[1:-1]:
        title, blank, purpose = page.read_text().splitlines()[:3]
        assert title.startswith("# ") and blank == "" and purpose and not purpose.startswith("#"), page.name


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def free_names(tree: ast.AST) -> set[str]:
    """The names a code sample reads that it neither binds nor gets from builtins."""
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
              for a in [*n.posonlyargs, *n.args, *n.kwonlyargs, *filter(None, [n.vararg, n.kwarg])]}
    bound |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
              for a in n.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return used - bound - set(dir(builtins))


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_name_a_code_sample_takes_from_the_project_exists(page):
    """A sample's ``from bench... import name`` resolves; a sample headed ``# bench/x/y.py`` (code that goes into
    that module) uses only names that module has."""
    missing = []
    for code in python_blocks(page):
        tree = ast.parse(code)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("bench", "baselines"):
                module = importlib.import_module(node.module)
                missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
        home = re.match(r"# ((?:bench|baselines)/[\w/]+)\.py\n", code)
        if home:
            module = importlib.import_module(home.group(1).replace("/", "."))
            missing += [f"{module.__name__}.{name}" for name in sorted(free_names(tree)) if not hasattr(module, name)]
    assert not missing, missing


def test_the_sample_check_finds_a_name_its_module_lacks():
    tree = ast.parse("def t(ctx):\n    return cell_table(ctx, no_such_helper)\n")
    assert free_names(tree) == {"cell_table", "no_such_helper"}


def test_the_layout_page_names_every_part_of_the_harness():
    (tree,) = re.findall(r"^## Layout\n.*?```\n(.*?)```", (ROOT / "docs" / "layout.md").read_text(), re.S | re.M)
    parts = [p.name for p in (ROOT / "bench").iterdir()
             if p.name != "__init__.py" and not p.name.startswith((".", "_")) and (p.suffix == ".py" or p.is_dir())]
    assert [p for p in parts if not re.search(rf"\b{re.escape(p.removesuffix('.py'))}\b", tree)] == []
