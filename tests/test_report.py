"""Reports rendered from a small real sweep on ``digits``: the numbers in the tables are the MLflow metrics they
come from, averaged and spread over seeds by hand; missing runs show as missing; the report is logged."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from test_report_browser import synthetic_runs

from bench.cli import main
from bench.config import validate_config
from bench.data.partition import partition_title
from bench.record_names import CURVE_ARTIFACT, REPORT_TAG
from bench.report import render_report
from bench.report.collect import RunData, collect_runs
from bench.report.context import make_context
from bench.report.figures import accuracy_communication_figure, client_spread_figure, per_exit_convergence_figure
from bench.report.render import table_csv, table_markdown
from bench.report.sections import build_sections
from bench.report.selection import DEFAULT_LABEL, select_best, switch_labels
from bench.report.tables import Table, macs_to_reach
from bench.sweep import load_sweep
from bench.track.runner import run_experiment

EXPERIMENT = "report-test"
ALPHA, OTHER_ALPHA = 0.5, 0.1
# (method, alpha, seed): fedavg and local with two seeds, plus fedavg alone with one seed at the other alpha.
RUNS = [("fedavg", ALPHA, 0), ("fedavg", ALPHA, 1), ("local", ALPHA, 0), ("local", ALPHA, 1),
        ("fedavg", OTHER_ALPHA, 0)]


def digits_config(tmp, uri: str, method: str, alpha: float, seed: int):
    return validate_config({
        "seed": seed,
        "data": {"dataset": "digits", "clients": 4, "alpha": alpha, "min_samples": 20, "augment": False},
        "model": {"name": "conv3", "width": 0.25},
        "method": {"name": method},
        "train": {"rounds": 2, "batch_size": 32},
        "eval": {"batch_size": 512},
        "run": {"tracking_uri": uri, "experiment": EXPERIMENT, "checkpoint_every": 0, "threads": 1,
                "cache_dir": str(tmp / "cache"), "checkpoint_dir": str(tmp / "ckpt")},
    })


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Five finished runs, one failed run (which must not count), and the report rendered from them."""
    tmp = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=str(tmp / "artifacts"))
    run_ids = {key: run_experiment(digits_config(tmp, uri, *key)).run_id for key in RUNS}
    failed = client.create_run(exp_id, tags={"method": "local", "family": "base", "dataset": "digits",
                                             "alpha": str(OTHER_ALPHA), "seed": "0"})
    client.log_metric(failed.info.run_id, "test/acc/mean", 0.99)
    client.set_terminated(failed.info.run_id, "FAILED")
    html = render_report(EXPERIMENT, tmp / "out", tracking_uri=uri)
    return {"uri": uri, "client": client, "runs": run_ids, "out": tmp / "out", "html": html, "tmp": tmp}


def metric(report, key: tuple, name: str) -> float:
    return report["client"].get_run(report["runs"][key]).data.metrics[name]


def csv(report, name: str) -> pd.DataFrame:
    return pd.read_csv(report["out"] / "tables" / f"{name}.csv", index_col=0)


def markdown_row(report, table_title: str, row: str) -> list[str]:
    """The cells of ``row`` in the Markdown table that follows ``table_title``."""
    text = (report["out"] / "report.md").read_text()
    block = text[text.index(table_title):]
    line = next(ln for ln in block.splitlines() if ln.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def report_run_ids(report) -> list[str]:
    client = report["client"]
    exp = client.get_experiment_by_name(f"{EXPERIMENT}-reports")
    return [r.info.run_id for r in client.search_runs([exp.experiment_id], f"tags.`{REPORT_TAG}` = 'true'")]


def test_report_files_are_written(report):
    out = report["out"]
    assert report["html"] == out / "report.html"
    for name in ("main_accuracy", "per_exit_accuracy", "dynamic_at_0.6", "macs_to_best_baseline",
                 "communication", "late_gain", "seeds", "claims"):
        assert (out / "tables" / f"{name}.csv").is_file() and (out / "tables" / f"{name}.tex").is_file()
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["accuracy_communication.png", "accuracy_macs.png", "client_spread.png", "convergence.png",
                       "partition_digits_alpha0.1.png", "partition_digits_alpha0.5.png", "per_exit_convergence.png"]
    assert not (out / "tables" / "paired_comparison.csv").exists()  # no cafedistill runs to compare
    assert not (out / "tables" / "ablation.csv").exists()  # no cafedistill runs


def test_main_table_is_mean_and_student_t_interval_over_seeds(report):
    table = csv(report, "main_accuracy")
    for method in ("fedavg", "local"):
        a, b = (metric(report, (method, ALPHA, s), "test/acc/mean") for s in (0, 1))
        mean = (a + b) / 2
        std = math.sqrt(((a - mean) ** 2 + (b - mean) ** 2) / (2 - 1))
        assert table.loc[method, "digits/0.5/mean_acc_pct"] == pytest.approx(100 * mean, rel=1e-12)
        assert table.loc[method, "digits/0.5/std_acc_pct"] == pytest.approx(100 * std, rel=1e-12)
        half = 12.706204736174698 * std / math.sqrt(2)  # t(0.975, 1 degree of freedom)
        assert table.loc[method, "digits/0.5/ci95_acc_pct"] == pytest.approx(100 * half, rel=1e-9)
        assert std > 0
        cells = markdown_row(report, "Mean-over-exits test accuracy", method)
        assert cells[1].strip("*") == f"{100 * mean:.2f} ± {100 * half:.2f}"
    # FedAvg and local training (family base) are the reference points, not PFL-EE baselines
    assert table.loc["fedavg", "group"] == table.loc["local", "group"] == "References"


def test_one_seed_shows_the_mean_alone_and_a_missing_run_shows_as_missing(report):
    table = csv(report, "main_accuracy")
    single = metric(report, ("fedavg", OTHER_ALPHA, 0), "test/acc/mean")
    assert table.loc["fedavg", "digits/0.1/mean_acc_pct"] == pytest.approx(100 * single, rel=1e-12)
    assert math.isnan(table.loc["fedavg", "digits/0.1/std_acc_pct"])
    # local at alpha 0.1 only has a FAILED run, which does not count
    assert math.isnan(table.loc["local", "digits/0.1/mean_acc_pct"])
    assert markdown_row(report, "Mean-over-exits test accuracy", "fedavg")[0].strip("*") == f"{100 * single:.2f}"
    assert markdown_row(report, "Mean-over-exits test accuracy", "local")[0] == "—"
    assert "---" in (report["out"] / "tables" / "main_accuracy.tex").read_text()
    seeds = csv(report, "seeds")
    assert seeds.loc["fedavg", "digits/0.5/mean_runs"] == 2 and seeds.loc["fedavg", "digits/0.1/mean_runs"] == 1
    assert math.isnan(seeds.loc["local", "digits/0.1/mean_runs"])


def test_best_mean_per_column_is_bold_in_every_format(report):
    table = csv(report, "main_accuracy")
    best = table["digits/0.5/mean_acc_pct"].idxmax()
    other = "local" if best == "fedavg" else "fedavg"
    assert markdown_row(report, "Mean-over-exits test accuracy", best)[1].startswith("**")
    assert not markdown_row(report, "Mean-over-exits test accuracy", other)[1].startswith("**")
    tex = (report["out"] / "tables" / "main_accuracy.tex").read_text()
    best_line = next(ln for ln in tex.splitlines() if ln.startswith(f"{best} &"))
    # fedavg is also the only (hence best) method at the other alpha
    assert best_line.count(r"\textbf") == (2 if best == "fedavg" else 1)
    html = report["html"].read_text()
    assert f"<b>{table.loc[best, 'digits/0.5/mean_acc_pct']:.2f} ± " in html


def test_per_exit_dynamic_and_communication_tables_match_mlflow(report):
    per_exit = csv(report, "per_exit_accuracy")
    dynamic = csv(report, "dynamic_at_0.6")
    comm = csv(report, "communication")
    assert [c for c in per_exit.columns if c.startswith("digits/0.5/") and c.endswith("/mean_acc_pct")] == [
        "digits/0.5/exit 1/mean_acc_pct", "digits/0.5/exit 2/mean_acc_pct", "digits/0.5/exit 3/mean_acc_pct"]
    for k in (1, 2, 3):
        expected = sum(metric(report, ("local", ALPHA, s), f"test/acc/exit_{k}") for s in (0, 1)) / 2
        assert per_exit.loc["local", f"digits/0.5/exit {k}/mean_acc_pct"] == pytest.approx(100 * expected, rel=1e-12)
    expected = sum(metric(report, ("fedavg", ALPHA, s), "dyn/cost_reduction_at_0.6") for s in (0, 1)) / 2
    assert dynamic.loc["fedavg", "digits/0.5/cost reduction/mean_pct"] == pytest.approx(100 * expected, rel=1e-12)
    expected = sum(metric(report, ("fedavg", ALPHA, s), "dyn/acc_drop_at_0.6") for s in (0, 1)) / 2
    assert dynamic.loc["fedavg", "digits/0.5/acc. drop/mean_points"] == pytest.approx(100 * expected, rel=1e-12)
    history = report["client"].get_metric_history(report["runs"][("fedavg", ALPHA, 0)], "comm/bytes_up")
    assert len(history) == 2 and history[0].value > 0
    expected = sum(m.value for m in history) / len(history) / 1e6  # MB a round, one seed's runs equal the other's
    assert comm.loc["fedavg", "digits/0.5/up/mean_mb"] == pytest.approx(expected, rel=1e-9)
    assert comm.loc["local", "digits/0.5/up/mean_mb"] == 0  # local training never communicates: a real zero


def test_late_gain_is_the_last_round_minus_the_round_a_quarter_earlier_averaged_over_seeds(report):
    gains = []
    for seed in (0, 1):
        history = report["client"].get_metric_history(report["runs"][("local", ALPHA, seed)], "test/acc/mean")
        by_round = {m.step: m.value for m in history}
        assert sorted(by_round) == [1, 2]  # two rounds: a quarter of them, at least one round back, is round 1
        gains.append(by_round[2] - by_round[1])
    table = csv(report, "late_gain")
    assert table.loc["local", "digits/0.5/mean_points"] == pytest.approx(100 * sum(gains) / 2, rel=1e-12)
    assert table.loc["fedavg", "digits/0.1/mean_points"] == pytest.approx(100 * (
        metric(report, ("fedavg", OTHER_ALPHA, 0), "test/acc/mean")
        - report["client"].get_metric_history(report["runs"][("fedavg", OTHER_ALPHA, 0)], "test/acc/mean")[0].value))


def test_late_gain_reaches_back_a_quarter_of_the_rounds_and_skips_runs_without_that_round():
    from bench.report.aggregate import late_gain

    rows = [("a", step, 0.1 * step) for step in range(1, 13)]  # 12 rounds: round 12 against round 9
    rows += [("b", 4, 0.5), ("b", 8, 0.7)]  # evaluated every 4 rounds: round 8 against round 4 (<= 6)
    rows += [("c", 1, 0.3)]  # one evaluation: nothing to compare with
    history = pd.DataFrame([(r, "test/acc/mean", s, v) for r, s, v in rows], columns=["run_id", "metric", "step",
                                                                                     "value"])
    gains = late_gain(history, "test/acc/mean")
    assert gains.to_dict() == pytest.approx({"a": 0.3, "b": 0.2})


def test_macs_to_reach_the_best_baseline(report):
    table = csv(report, "macs_to_best_baseline")
    # with only baselines, the best of them reaches its own best accuracy: at most the full model's MACs
    full = metric(report, ("fedavg", ALPHA, 0), "macs/exit_3") / 1e6
    reached = table["digits/0.5/mean_mmacs"].dropna()
    assert len(reached) >= 1 and (reached <= full + 1e-9).all() and (reached > 0).all()


def test_report_run_is_logged_and_left_out_of_later_reports(report, tmp_path):
    client = report["client"]
    report_runs = report_run_ids(report)
    assert report_runs and client.get_run(report_runs[0]).info.status == "FINISHED"
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id  # the training runs' list holds no report run
    assert not client.search_runs([exp_id], f"tags.`{REPORT_TAG}` = 'true'")
    logged = {a.path for a in client.list_artifacts(report_runs[0])}
    assert {"report.md", "report.html", "tables", "figures"} <= logged
    data = collect_runs(EXPERIMENT, tmp_path, report["uri"])
    assert sorted(data.runs.index) == sorted(report["runs"].values())  # neither the report nor the failed run


def curve_value(report, key: tuple, threshold: float, column: str) -> float:
    """A run's curve table, read back as MLflow stored it."""
    client, run_id = report["client"], report["runs"][key]
    path = client.download_artifacts(run_id, CURVE_ARTIFACT, str(report["tmp"] / "curves" / run_id))
    curve = pd.read_json(path, orient="split", precise_float=True)
    return float(curve.loc[(curve["threshold"] - threshold).abs() < 1e-9, column].iloc[0])


def test_report_command_renders_the_dynamic_table_from_the_curve_tables(report, tmp_path, capsys):
    before = len(report_run_ids(report))
    run = report["client"].get_run(report["runs"][("fedavg", ALPHA, 0)])
    assert len([k for k in run.data.metrics if k.startswith("dyn/")]) == 4 * 5  # 0.5 .. 0.9; 0.55 only in the table
    assert main(["report", EXPERIMENT, "--out", str(tmp_path / "cli"), "--tracking-uri", report["uri"],
                 "--threshold", "0.55"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cli" / "report.html") in out
    exp_id = report["client"].get_experiment_by_name(EXPERIMENT).experiment_id
    assert f"its runs: http://127.0.0.1:5000/#/experiments/{exp_id}/runs" in out
    assert (tmp_path / "cli" / "tables" / "main_accuracy.csv").is_file()
    dynamic = pd.read_csv(tmp_path / "cli" / "tables" / "dynamic_at_0.55.csv", index_col=0)
    expected = sum(curve_value(report, ("local", ALPHA, s), 0.55, "cost_reduction") for s in (0, 1)) / 2
    assert dynamic.loc["local", "digits/0.5/cost reduction/mean_pct"] == pytest.approx(100 * expected, rel=1e-9)
    expected = sum(curve_value(report, ("fedavg", ALPHA, s), 0.55, "accuracy") for s in (0, 1)) / 2
    assert dynamic.loc["fedavg", "digits/0.5/accuracy/mean_acc_pct"] == pytest.approx(100 * expected, rel=1e-9)
    assert len(report_run_ids(report)) == before + 1


@pytest.mark.parametrize(("scale", "runs", "studies", "trials"), [("quick", 85, 17, 2), ("reference", 120, 24, 4),
                                                                   ("cpu", 185, 37, 4), ("paper", 680, 136, 12)])
def test_reproduce_presets_hold_the_documented_runs(scale, runs, studies, trials, capsys):
    assert main(["reproduce", scale, "--dry-run"]) == 0
    assert (f"sweep {scale}/tables: {runs} runs into MLflow experiment 'reproduce-{scale}', after a tune stage of "
            f"{studies} studies x {trials} trials ({studies * trials} runs) on seeds [100]") in capsys.readouterr().out


def test_cpu_preset_follows_the_paper_protocol_on_fmnist():
    sweep = load_sweep("cpu/tables")
    assert {(c.data.dataset, c.model.name, c.data.clients, c.train.participation) for c in sweep.configs} == {
        ("fmnist", "conv3", 20, 1.0)}
    assert {c.data.alpha for c in sweep.configs} == {0.1, 0.3} and {c.seed for c in sweep.configs} == {0, 1, 2, 3, 4}
    assert len({c.method.name for c in sweep.configs}) == 15
    ablations = {(c.method.hparams["cross_client"], c.method.hparams["selection"], c.method.hparams["mu"])
                 for c in sweep.configs if c.method.name == "cafedistill"}
    assert ablations == {(True, "progressive", 1.0), (False, "progressive", 1.0), (True, "all", 1.0),
                         (True, "progressive", 0.1), (True, "progressive", 10.0)}


def test_html_is_self_contained(report):
    html = report["html"].read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 7 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in html and "https://" not in html and "<script" not in html and "<link" not in html


def test_unknown_experiment_is_a_clear_error(report, tmp_path):
    with pytest.raises(ValueError, match="no MLflow experiment named 'nope'.*report-test"):
        render_report("nope", tmp_path, tracking_uri=report["uri"])


# -- selection and curve logic on hand-made frames ---------------------------------------------------------------

def test_switch_labels_name_what_differs_from_the_defaults():
    params = pd.DataFrame({"method.hparams.mu": ["1.0", "0.1", "1.0"],
                           "method.hparams.cross_client": ["True", "True", "False"],
                           "method.hparams.selection": ["progressive", "progressive", "all"]},
                          index=["a", "b", "c"])
    defaults = {"method.hparams.mu": "1.0", "method.hparams.cross_client": "True",
                "method.hparams.selection": "progressive"}
    labels = switch_labels(params, defaults)
    assert labels.tolist() == [DEFAULT_LABEL, DEFAULT_LABEL, "cross_client=False, selection=all"]
    assert switch_labels(params, None)["a"] == "cross_client=True, selection=progressive"


def test_select_best_takes_the_setting_with_the_best_mean_validation_accuracy():
    runs = pd.DataFrame({"method": "m", "dataset": "d", "alpha": 0.1, "setting": ["x", "x", "y", "y"],
                         "seed": [0, 1, 0, 1], "val": [0.5, 0.7, 0.65, 0.6], "start_time": [1, 2, 3, 4]},
                        index=pd.Index(["r1", "r2", "r3", "r4"], name="run_id"))
    assert sorted(select_best(runs, ["method", "dataset", "alpha"]).index) == ["r3", "r4"]  # 0.625 > 0.6


def test_macs_to_reach_uses_the_best_baseline_curve_and_is_missing_when_never_reached():
    curves = pd.DataFrame({
        "method": ["base"] * 3 + ["ours"] * 3 + ["weak"] * 2, "dataset": "d", "alpha": 0.1,
        "threshold": [0.2, 0.6, 1.0, 0.2, 0.6, 1.0, 0.2, 1.0],
        "accuracy": [0.5, 0.7, 0.8, 0.6, 0.82, 0.85, 0.4, 0.6],
        "expected_macs": [10, 20, 30, 11, 21, 31, 10, 30]})
    reach, targets = macs_to_reach(curves, {"base": "pfl", "ours": "ours", "weak": "fee"})
    assert targets.iloc[0][["target", "by"]].tolist() == [0.8, "base"]
    got = reach.set_index("method")["mean"]
    assert got["ours"] == 21 and got["base"] == 30 and math.isnan(got["weak"])


def test_claims_section_names_the_runs_it_lacks(report):
    """No cafedistill run at all: every claim is missing its runs and says which."""
    claims = csv(report, "claims")
    assert set(claims["verdict/text"]) == {"missing runs"}
    assert all(c.endswith("/text") for c in claims.columns)  # a table of text: no empty number columns
    assert claims.loc["(d) digits α=0.5", "runs it lacks/text"] == (
        "cafedistill (default) at digits α=0.5; cafedistill cross_client=False at digits α=0.5")
    text = (report["out"] / "report.md").read_text()
    assert "Runs the claims lack — (a) digits α=0.1: cafedistill (default) at digits α=0.1" in text
    assert r"cafedistill cross\_client=False at digits" in (report["out"] / "tables" / "claims.tex").read_text()
    assert '<td class="text">missing runs</td>' in report["html"].read_text()


# -- the figures of a round's history, read back from the lines they draw --------------------------------------------

@pytest.fixture(scope="module")
def context(report, tmp_path_factory):
    return make_context(collect_runs(EXPERIMENT, tmp_path_factory.mktemp("collected"), report["uri"]))


def history(report, key: tuple, name: str) -> dict[int, float]:
    return {m.step: m.value for m in report["client"].get_metric_history(report["runs"][key], name)}


def line(fig, title: str, label: str) -> tuple[list, list]:
    """The x and y data of the line labelled ``label`` in the panel titled ``title``."""
    (ax,) = [ax for ax in fig.axes if ax.get_title() == title]
    (drawn,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return list(drawn.get_xdata()), list(drawn.get_ydata())


def test_per_exit_convergence_draws_each_exit_per_round_averaged_over_seeds(report, context):
    fig = per_exit_convergence_figure(context)
    assert sorted({ax.get_title() for ax in fig.axes if ax.get_visible()}) == [
        f"exit {k}: digits, α={a}" for k in (1, 2, 3) for a in ("0.1", "0.5")]
    for k in (1, 3):
        seeds = [history(report, ("local", ALPHA, s), f"test/acc/exit_{k}") for s in (0, 1)]
        assert sorted(seeds[0]) == [1, 2]
        rounds, accuracy = line(fig, f"exit {k}: digits, α=0.5", "local")
        assert rounds == [1, 2]
        assert accuracy == pytest.approx([100 * (seeds[0][r] + seeds[1][r]) / 2 for r in (1, 2)], rel=1e-12)
    assert seeds[0][2] == metric(report, ("local", ALPHA, 0), "test/acc/exit_3")  # the history ends at the final value


def test_accuracy_against_communication_sums_up_and_down_bytes_round_by_round(report, context):
    fig = accuracy_communication_figure(context)
    key = ("fedavg", ALPHA, 0)
    up, down, accuracy = (history(report, key, name) for name in ("comm/bytes_up", "comm/bytes_down",
                                                                    "test/acc/mean"))
    sent = [(up[1] + down[1]) / 1e6, (up[1] + down[1] + up[2] + down[2]) / 1e6]
    assert sent[1] == pytest.approx(2 * sent[0]) and sent[0] > 0  # FedAvg sends the whole model every round
    other = history(report, ("fedavg", ALPHA, 1), "test/acc/mean")
    megabytes, percent = line(fig, "digits, α=0.5", "fedavg")
    assert megabytes == pytest.approx(sent, rel=1e-12)  # both seeds send the same bytes
    assert percent == pytest.approx([100 * (accuracy[r] + other[r]) / 2 for r in (1, 2)], rel=1e-12)
    megabytes, _ = line(fig, "digits, α=0.5", "local")
    assert megabytes == [0.0, 0.0]  # local training never communicates


def test_client_spread_names_methods_horizontally(context):
    fig = client_spread_figure(context)
    (ax,) = [ax for ax in fig.axes if ax.get_title() == "digits, α=0.5"]
    labels = ax.get_yticklabels()
    assert [t.get_text() for t in labels] == ["fedavg", "local"] and all(t.get_rotation() == 0 for t in labels)


# -- what a report leaves out when its runs cannot fill it -----------------------------------------------------------

def only_default_cafedistill(tmp) -> RunData:
    """The browser test's hand-made runs without CAFEDistill's variants and μ grid: its default setting alone."""
    data = synthetic_runs(tmp)
    params = data.params
    keep = ~((data.runs["method"] == "cafedistill") & ((params["method.hparams.mu"] != "1.0")
                                                       | (params["method.hparams.cross_client"] != "True")
                                                       | (params["method.hparams.selection"] != "progressive")))
    kept = data.runs.index[keep]
    return RunData(data.experiment, data.runs.loc[kept], params.loc[kept], data.metrics.loc[kept],
                   data.history[data.history["run_id"].isin(kept)], data.curves[data.curves["run_id"].isin(kept)],
                   data.heatmaps, clients=data.clients[data.clients["run_id"].isin(kept)])


def test_an_ablation_of_the_default_alone_and_a_single_mu_are_left_out_saying_why(tmp_path):
    sections = build_sections(make_context(only_default_cafedistill(tmp_path)), tmp_path / "figures")
    (section,) = [s for s in sections if s.title == "cafedistill ablation and sensitivity"]
    assert section.tables == [] and section.figures == []
    assert section.text == ("Left out: the ablation table (the cafedistill runs hold only its default switches; runs "
                            "of a variant, e.g. method.hparams.cross_client=false, fill it); the μ sensitivity table "
                            "and figure (values of μ among the runs: 1; they need runs at two or more fixed values "
                            "of μ in one (dataset, α)).")
    assert not (tmp_path / "figures" / "mu_sensitivity.png").exists()
    full = build_sections(make_context(synthetic_runs(tmp_path / "all")), tmp_path / "all" / "figures")
    (section,) = [s for s in full if s.title == "cafedistill ablation and sensitivity"]
    assert [t.name for t in section.tables] == ["ablation", "mu_sensitivity"] and section.text == ""


def test_one_precision_per_column_of_mmacs():
    index = pd.MultiIndex.from_tuples([("d", "0.1"), ("d", "0.3")], names=["dataset", "alpha"])
    mean = pd.DataFrame([[0.5086e6, 12.5e6], [1.2344e6, 0.46e6]], index=pd.Index(["a", "b"], name="method"),
                        columns=index)
    table = Table("macs", "MMACs", mean, mean * math.nan, pd.Series("min", index=index), scale=1e-6, significant=4,
                  unit="mmacs")
    text = table_markdown(table)
    assert "| a | **0.509** | 12.50 |" in text and "| b | 1.234 | **0.46** |" in text  # best: the fewest MMACs
    csv_table = table_csv(table)
    assert list(csv_table.columns) == ["d/0.1/mean_mmacs", "d/0.1/std_mmacs", "d/0.3/mean_mmacs", "d/0.3/std_mmacs"]
    assert csv_table["d/0.1/mean_mmacs"].tolist() == pytest.approx([0.5086, 1.2344], rel=1e-12)


def test_the_partition_title_names_the_dataset():
    assert partition_title("fmnist", 0.1) == "fmnist, Dirichlet α=0.1"
