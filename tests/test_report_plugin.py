"""A user's own method stands where CAFEDistill stands: ``cafebench report`` of an experiment that compares a plugin
method (family ``ours``) with two baselines, and no CAFEDistill run, gives the plugin the paired comparison against
every baseline and the claim rows it has the hyperparameters for. Also: the report's method order comes from the
registry (each class's own ``order``; a plugin without one after the ranked methods of its group, by name).

The runs are logged to a SQLite MLflow store by hand (tags, params and final metrics as the tracker writes them; no
training), so the expected figures are the logged numbers, differenced and tested by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats as sps

from baselines.fedavg import FedAvg
from bench.cli import main
from bench.methods import registry
from bench.methods.registry import declared_order, register
from bench.record_names import (
    ALPHA_TAG,
    CONFIG_HASH_TAG,
    DATASET_TAG,
    EXIT_ACCURACY_PATTERN,
    FAMILY_TAG,
    METHOD_TAG,
    SEED_TAG,
    TEST_ACCURACY,
    VAL_ACCURACY,
    dynamic,
    exit_accuracy,
)
from bench.report.claims import HOLDS, claim_rows
from bench.report.collect import collect_runs
from bench.report.compare import paired_comparisons
from bench.report.context import make_context, method_order, method_under_test
from bench.report.figures import method_styles
from bench.report.sections import build_sections
from bench.report.tables import per_exit_table

EXPERIMENT = "plugin-report"
PLUGIN = "mymethod"
# test accuracy per seed 0, 1, 2; the plugin is clearly above both baselines
ACCURACY = {PLUGIN: [0.80, 0.83, 0.81], "fedavg": [0.70, 0.72, 0.69], "fedper": [0.76, 0.78, 0.77]}
FAMILY = {PLUGIN: "ours", "fedavg": "base", "fedper": "pfl"}
COST_CUT = [0.40, 0.42, 0.41]  # the plugin's dyn/cost_reduction_at_0.6 per seed
BUILTIN_ORDER = ("fedavg", "local", "fedprox", "fedper", "fedrep", "fedbabu", "fedamp", "pfedgraph", "fedrod",
                 "ditto", "fedpac", "depthfl", "scalefl", "inclusivefl", "cafedistill")


class MyMethod(FedAvg):
    """A user's own method: FedAvg under another name, of family ours, declaring no order."""

    name = PLUGIN
    family = "ours"


@pytest.fixture
def plugin_registered():
    """``MyMethod`` registered with the real decorator, for the test only."""
    registry.available_methods()  # the built-in methods found first
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        register(MyMethod)
        yield MyMethod


def log_runs(tmp) -> str:
    """The plugin and two baselines at digits α=0.5, three seeds each, as finished MLflow runs; the store's URI."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=str(tmp / "artifacts"))
    for method, accuracies in ACCURACY.items():
        for seed, accuracy in enumerate(accuracies):
            run = client.create_run(exp_id, tags={METHOD_TAG: method, FAMILY_TAG: FAMILY[method],
                                                  DATASET_TAG: "digits", ALPHA_TAG: "0.5", SEED_TAG: str(seed),
                                                  CONFIG_HASH_TAG: f"{method}-{seed}"})
            run_id = run.info.run_id
            params = {"seed": str(seed), "method.name": method, "data.dataset": "digits", "data.alpha": "0.5"}
            if method != "fedper":
                params["method.hparams.finetune_epochs"] = "0"
            for key, value in params.items():
                client.log_param(run_id, key, value)
            cut = COST_CUT[seed] if method == PLUGIN else 0.2
            for key, value in ((TEST_ACCURACY, accuracy), (VAL_ACCURACY, accuracy), (dynamic("acc", 0.6), accuracy),
                               (dynamic("acc_drop", 0.6), 0.01), (dynamic("cost_reduction", 0.6), cut),
                               *((exit_accuracy(k), accuracy - 0.05 * (2 - k)) for k in (1, 2, 3))):
                client.log_metric(run_id, key, value, step=2)
            client.set_terminated(run_id, "FINISHED")
    return uri


def paired_p(a: list[float], b: list[float]) -> float:
    return float(sps.ttest_rel(a, b).pvalue)


def test_cafebench_report_gives_a_plugin_method_the_paired_comparison_and_its_claims(plugin_registered, tmp_path,
                                                                                     capsys):
    uri = log_runs(tmp_path)
    out = tmp_path / "out"
    assert main(["report", EXPERIMENT, "--out", str(out), "--tracking-uri", uri]) == 0
    capsys.readouterr()
    main_table = pd.read_csv(out / "tables" / "main_accuracy.csv", index_col=0)
    assert list(main_table.index) == ["fedavg", "fedper", PLUGIN]  # references, PFL-EE baselines, ours
    assert main_table.loc[PLUGIN, "group"] == "Ours"

    paired = pd.read_csv(out / "tables" / "paired_comparison.csv", index_col=0)
    assert list(paired.index) == ["fedavg", "fedper"]  # every baseline
    p = {b: paired_p(ACCURACY[PLUGIN], ACCURACY[b]) for b in ("fedavg", "fedper")}
    low, high = sorted(p, key=p.get)
    holm = {low: 2 * p[low], high: max(2 * p[low], p[high])}  # Holm over the two baselines, by hand
    for baseline in ("fedavg", "fedper"):
        delta = sum(a - b for a, b in zip(ACCURACY[PLUGIN], ACCURACY[baseline], strict=True)) / 3
        assert paired.loc[baseline, "digits/0.5/Δ [95% CI]/mean_points"] == pytest.approx(100 * delta, rel=1e-9)
        assert paired.loc[baseline, "digits/0.5/p (Holm)/mean"] == pytest.approx(holm[baseline], rel=1e-6)
        assert holm[baseline] < 0.05 and paired.loc[baseline, "digits/0.5/result/text"] == "win"
    text = (out / "report.md").read_text()
    assert f"**{PLUGIN} against each baseline, paired over seeds" in text
    assert "Against the baselines: 2 wins, 0 ties, 0 losses" in text

    claims = pd.read_csv(out / "tables" / "claims.csv", index_col=0)
    # FedAvg's hyperparameters have no cross_client, selection or μ: claims (d), (e) and (f) are not its to check
    assert list(claims.index) == ["(a) digits α=0.5", "(b) digits α=0.5, low end", "(b) digits α=0.5, high end",
                                  "(c) digits α=0.5, acc drop", "(c) digits α=0.5, cost reduction"]
    accuracy = claims.loc["(a) digits α=0.5"]
    assert accuracy["claim/text"] == f"{PLUGIN}'s accuracy is above every baseline's"
    assert accuracy["verdict/text"] == HOLDS  # every one-sided p < 0.05
    closest = sum(a - b for a, b in zip(ACCURACY[PLUGIN], ACCURACY["fedper"], strict=True)) / 3
    assert accuracy["measured/text"].startswith(f"closest: fedper {100 * closest:+.2f} [")
    assert "one-sided p < 0.05 against 2 of 2 baselines" in accuracy["measured/text"]
    cut = claims.loc["(c) digits α=0.5, cost reduction"]
    assert cut["measured/text"].startswith(f"{100 * sum(COST_CUT) / 3:.2f} [") and cut["verdict/text"] == HOLDS
    assert "cafedistill" not in text  # the report names the methods of its runs only
    assert f"## {PLUGIN} ablation and sensitivity" in text
    assert f"Left out: the ablation table (the {PLUGIN} runs hold only its default switches; runs of a variant " \
           "fill it)." in text


def test_an_unregistered_plugin_is_the_method_under_test_by_its_runs_family_tag(tmp_path):
    """``cafebench report`` run without the plugin's module: the runs' tags and params stand in for the registry."""
    assert PLUGIN not in registry.available_methods()
    ctx = make_context(collect_runs(EXPERIMENT, tmp_path / "artifacts-read", log_runs(tmp_path)))
    assert ctx.methods == ["fedavg", "fedper", PLUGIN] and ctx.under_test == PLUGIN
    comparisons = paired_comparisons(ctx)
    assert sorted(comparisons["baseline"]) == ["fedavg", "fedper"]
    assert set(comparisons["result"]) == {"win"}
    rows = {r.key: r for r in claim_rows(ctx, comparisons)}
    assert rows["(a) digits α=0.5"].verdict == HOLDS
    assert not any(k.startswith(("(d)", "(e)", "(f)")) for k in rows)  # its params record no such hyperparameter


def test_runs_that_logged_no_exit_accuracy_get_no_per_exit_table(tmp_path):
    data = collect_runs(EXPERIMENT, tmp_path / "artifacts-read", log_runs(tmp_path))
    assert per_exit_table(make_context(data)).name == "per_exit_accuracy"
    data.metrics = data.metrics.drop(columns=[c for c in data.metrics if EXIT_ACCURACY_PATTERN.match(c)])
    ctx = make_context(data)
    assert per_exit_table(ctx) is None
    (accuracy,) = [s for s in build_sections(ctx, tmp_path / "figures") if s.title == "Accuracy"]
    assert [t.name for t in accuracy.tables] == ["main_accuracy"]


def test_the_report_order_is_each_class_s_own_order_and_a_plugin_without_one_comes_after(plugin_registered):
    builtins = {m: cls.family for m, cls in registry.available_methods().items()  # not plugins other tests loaded
                if cls.__module__.startswith(("baselines.", "bench."))}
    assert tuple(method_order(builtins)) == BUILTIN_ORDER  # the order the report had before the registry gave it
    assert FedAvg.order == 10 and MyMethod.order == 10 and declared_order(MyMethod) is None  # not inherited
    mixed = {PLUGIN: "ours", "cafedistill": "ours", "fedavg": "base", "local": "base", "zeta": "base",
             "alpha_method": "base", "odd": "nonesuch"}  # zeta, alpha_method and odd: unregistered, family by tag
    assert method_order(mixed) == ["fedavg", "local", "alpha_method", "zeta", "cafedistill", PLUGIN, "odd"]
    assert method_under_test(method_order(mixed), mixed) == "cafedistill"  # the first of family ours
    assert method_under_test(["fedavg"], {"fedavg": "base"}) == "cafedistill"  # no ours run: the registry's first

    class Ranked(FedAvg):
        name = "ranked"
        family = "ours"
        order = 5

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        register(Ranked)
        both = {"ranked": "ours", "cafedistill": "ours", PLUGIN: "ours"}
        assert method_order(both) == ["ranked", "cafedistill", PLUGIN]
        assert method_under_test(method_order(both), both) == "ranked"


def test_a_second_method_of_family_ours_is_listed_but_not_compared(plugin_registered, tmp_path):
    uri = log_runs(tmp_path)
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    for seed in range(3):  # cafedistill, registered with order 150, comes first among ours: the method under test
        run = client.create_run(exp_id, tags={METHOD_TAG: "cafedistill", FAMILY_TAG: "ours", DATASET_TAG: "digits",
                                              ALPHA_TAG: "0.5", SEED_TAG: str(seed), CONFIG_HASH_TAG: f"c-{seed}"})
        client.log_param(run.info.run_id, "seed", str(seed))
        client.log_metric(run.info.run_id, TEST_ACCURACY, 0.75 + 0.01 * seed, step=2)
        client.log_metric(run.info.run_id, exit_accuracy(1), 0.7, step=2)
        client.log_metric(run.info.run_id, dynamic("acc", 0.6), 0.75, step=2)
        client.set_terminated(run.info.run_id, "FINISHED")
    ctx = make_context(collect_runs(EXPERIMENT, tmp_path / "read", uri))
    assert ctx.methods == ["fedavg", "fedper", "cafedistill", PLUGIN] and ctx.under_test == "cafedistill"
    assert sorted(paired_comparisons(ctx)["baseline"]) == ["fedavg", "fedper"]  # the plugin is not a baseline
    sections = build_sections(ctx, tmp_path / "figures")
    (comparison,) = [s for s in sections if s.title == "Paired comparison"]
    assert comparison.text.endswith(f"The method under test is cafedistill, the first of family ours in the report's "
                                    f"order; {PLUGIN}, also of family ours, is listed in the method tables but not "
                                    "compared.")
    assert not math.isnan(comparison.tables[0].mean.loc["fedavg", ("digits", "0.5", "Δ [95% CI]")])
    styles = method_styles(ctx)  # the method under test black; the other ours method thick in a colour of its own
    assert styles["cafedistill"]["color"] == "black" and styles[PLUGIN]["color"] != "black"
    assert styles[PLUGIN]["linewidth"] == styles["cafedistill"]["linewidth"] > styles["fedavg"]["linewidth"]


@pytest.mark.parametrize("order", ["first", 1.5, True])
def test_an_order_that_is_not_an_integer_is_refused(order):
    cls = type("Misordered", (FedAvg,), {"name": "misordered", "family": "ours", "order": order})
    with pytest.raises(ValueError, match=r"^Misordered.order must be an integer \(its place in the report's lists, "
                                         rf"lower first\) or left out, got {order!r}$"):
        register(cls)
    assert "misordered" not in registry.available_methods()
