"""The HTML report opened in headless Chromium: every figure loads, the page logs no error, and a screenshot is
kept in ``tests/artifacts/`` for a person to look at.

The report is rendered from hand-made run frames (no training), with CAFEDistill ablation variants and a μ
grid, so every section — ablation table and μ figure included — is on the page. Chromium is driven with its
own command line (``--dump-dom`` with a probe script injected into a copy of the page, ``--screenshot``):
no extra Python package. Skipped only when Chromium is not installed (``setup.sh`` installs Debian's).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report.collect import RunData
from bench.report.context import make_context
from bench.report.render import write_report
from bench.report.sections import build_sections
from bench.track.artifacts import plot_partition_heatmap

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Records script errors, failed resource loads and console.error calls; after the load event (all images
# settled) writes them and every image's natural width into the DOM, where --dump-dom shows them.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || (e.target && e.target.src))), true);
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); __consoleError(...args); };
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "__probe";
  out.textContent = JSON.stringify({widths: [...document.images].map(i => i.naturalWidth),
                                    errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def synthetic_runs(tmp: Path) -> RunData:
    """Two baselines, one FEE baseline and CAFEDistill (defaults at three μ, two ablation variants) on one
    dataset at two alphas, two seeds each, with histories, dynamic curves, per-client accuracies and partition
    heatmaps."""
    rng = np.random.default_rng(0)
    rows, params, metrics, history, curves, clients = [], {}, {}, [], [], []
    variants = [("fedavg", "base", {}), ("fedper", "pfl", {}), ("depthfl", "fee", {})]
    variants += [("cafedistill", "ours", {"mu": mu, "cross_client": "True", "selection": "progressive"})
                 for mu in ("0.1", "1.0", "10.0")]
    variants += [("cafedistill", "ours", {"mu": "1.0", "cross_client": "False", "selection": "progressive"}),
                 ("cafedistill", "ours", {"mu": "1.0", "cross_client": "True", "selection": "all"})]
    for alpha in (0.1, 0.3):
        for v, (method, family, hparams) in enumerate(variants):
            for seed in (0, 1):
                run_id = f"r{len(rows)}"
                acc = 0.5 + 0.05 * v + 0.1 * alpha + 0.01 * rng.standard_normal()
                rows.append({"run_id": run_id, "method": method, "family": family, "dataset": "fmnist",
                             "model": "conv3", "alpha": alpha, "seed": seed, "start_time": len(rows)})
                params[run_id] = {"seed": str(seed), "data.alpha": str(alpha), "method.name": method,
                                  **{f"method.hparams.{k}": x for k, x in hparams.items()}}
                metrics[run_id] = {"test/acc/mean": acc, "val/acc/mean": acc + 0.01,
                                   **{f"test/acc/exit_{k}": acc - 0.1 * (2 - k) for k in (1, 2, 3)},
                                   "dyn/acc_at_0.6": acc + 0.05, "dyn/acc_drop_at_0.6": 0.02,
                                   "dyn/cost_reduction_at_0.6": 0.3 + 0.01 * v}
                for step in (1, 2, 3):
                    history += [(run_id, f"test/acc/exit_{k}", step, (acc - 0.1 * (3 - k)) * step / 3)
                                for k in (1, 2, 3)]
                    history += [(run_id, "test/acc/mean", step, acc * step / 3),
                                (run_id, "comm/bytes_up", step, 1e5 * (v + 1)),
                                (run_id, "comm/bytes_down", step, 2e5 * (v + 1))]
                clients += [(run_id, c, acc + 0.1 * rng.standard_normal()) for c in range(20)]
                for t in np.linspace(0, 1, 11):
                    curves.append({"run_id": run_id, "threshold": t, "accuracy": acc * (0.6 + 0.4 * t),
                                   "expected_macs": 1e6 * (1 + 2 * t)})
    runs = pd.DataFrame(rows).set_index("run_id")
    heatmaps = {("fmnist", a): plot_partition_heatmap(rng.integers(0, 50, (20, 10)), tmp / f"h{a}.png")
                for a in (0.1, 0.3)}
    return RunData("browser-test", runs, pd.DataFrame(params).T.reindex(runs.index),
                   pd.DataFrame(metrics).T.reindex(runs.index),
                   pd.DataFrame(history, columns=["run_id", "metric", "step", "value"]),
                   pd.DataFrame(curves), heatmaps,
                   clients=pd.DataFrame(clients, columns=["run_id", "client", "accuracy"]))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    sections = build_sections(make_context(synthetic_runs(tmp)), tmp / "out" / "figures")
    return write_report(tmp / "out", "cafebench report: browser-test", "Synthetic runs.", sections)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=90)


def test_every_figure_loads_without_console_errors(report_html, tmp_path):
    page = tmp_path / "probe.html"
    page.write_text(report_html.read_text().replace("<head>", "<head>" + PROBE, 1))
    done = chromium("--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
                    page.as_uri(), profile=tmp_path / "profile")
    found = re.search(r'<pre id="__probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not run; chromium said: {done.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    # accuracy-MACs, per-client spread, convergence (mean and per exit), μ sensitivity, accuracy against
    # communication and two partition heatmaps
    assert len(probe["widths"]) == 8 and all(w > 0 for w in probe["widths"]), probe
    assert probe["errors"] == []
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert 'id="ablation"' in done.stdout and "cross_client=False" in done.stdout


def test_screenshot_of_the_report(report_html, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_screenshot.png"
    shot.unlink(missing_ok=True)
    chromium("--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}", report_html.as_uri(),
             profile=tmp_path / "profile")
    print(f"report screenshot: {shot}")
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1280, 2400)
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
