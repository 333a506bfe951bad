"""DepthFL, ScaleFL and InclusiveFL on real numbers: capacity tiers, held-entry aggregation, their local terms,
and tiered runs that report only the exits (and MACs) each client can run."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from baselines.depthfl import consistency_weight, mutual_distillation
from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.fed.federation import build_federation
from bench.ground.tensor_ops import weighted_average
from bench.measure.summary import client_cost_tables, final_measures
from bench.methods.api import Message, exit_ce_losses, load_state
from bench.methods.heterogeneous import aggregate_held, assign_tiers, leading_region, tier_sizes

TIERS = "method.hparams.tiers=[0.25,0.25,0.5]"
LEVELS = "method.hparams.levels=[[0.25,1,0.25],[0.25,2,0.375],[0.5,3,0.5]]"


def simulate(data: dict, *overrides: str) -> Simulation:
    sim = Simulation(validate_config(apply_overrides(data, list(overrides))))
    sim.run()
    return sim


def federation(data: dict, *overrides: str):
    return build_federation(validate_config(apply_overrides(data, list(overrides))))


def kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """``τ²·KL(softmax(t/τ) ‖ softmax(s/τ))`` averaged over the batch, written out."""
    p, q = F.softmax(teacher_logits / tau, dim=-1), F.softmax(student_logits / tau, dim=-1)
    return tau * tau * (p * (p.log() - q.log())).sum(dim=-1).mean()


# -- tiers ----------------------------------------------------------------------------------------------------

def test_tier_sizes_round_by_largest_remainder():
    assert tier_sizes(10, [0.25, 0.25, 0.5]) == [3, 2, 5]
    assert tier_sizes(20, [0.3334, 0.3333, 0.3333]) == [7, 7, 6]
    assert tier_sizes(4, [0.0, 0.0, 1.0]) == [0, 0, 4]
    with pytest.raises(ValueError, match="sum to 1"):
        tier_sizes(4, [0.5, 0.4])


def test_tiers_are_assigned_by_a_seeded_permutation():
    tiers = assign_tiers(0, 20, [0.25, 0.25, 0.5])
    assert tiers == assign_tiers(0, 20, [0.25, 0.25, 0.5])
    assert [tiers.count(t) for t in range(3)] == [5, 5, 10]
    assert tiers != assign_tiers(1, 20, [0.25, 0.25, 0.5])
    assert tiers[:10] != sorted(tiers[:10])  # shuffled, not cut in client order


# -- aggregation over heterogeneous holders ---------------------------------------------------------------------

def test_each_entry_is_averaged_over_exactly_the_clients_that_hold_it():
    previous = {"w": torch.full((2, 3), 9.0), "b": torch.zeros(4), "deep": torch.full((2,), 7.0),
                "unheld": torch.full((2,), -1.0), "count": torch.tensor(5)}
    narrow_shallow = {"w": torch.full((1, 2), 1.0), "b": torch.full((4,), 1.0), "count": torch.tensor(11)}
    wide_deep = {"w": torch.full((2, 2), 3.0), "b": torch.full((4,), 5.0), "deep": torch.tensor([1.0, 3.0]),
                 "count": torch.tensor(12)}
    out = aggregate_held(previous, [narrow_shallow, wide_deep], [1, 3])
    # w[0, :2] is held by both: (1·1 + 3·3)/4; w[1, :2] by the wide client only; column 2 by nobody
    assert torch.equal(out["w"], torch.tensor([[2.5, 2.5, 9.0], [3.0, 3.0, 9.0]]))
    assert torch.equal(out["b"], torch.full((4,), 4.0))
    assert torch.equal(out["deep"], torch.tensor([1.0, 3.0]))
    assert torch.equal(out["unheld"], previous["unheld"])
    assert int(out["count"]) == 11
    assert torch.equal(previous["w"], torch.full((2, 3), 9.0))  # the previous state is left as it was


def test_whole_uploads_average_exactly_like_fedavg():
    gen = torch.Generator().manual_seed(0)
    uploads = [{"a": torch.randn(3, 4, generator=gen), "b": torch.randn(5, generator=gen)} for _ in range(3)]
    expected = weighted_average(uploads, [17, 5, 40])
    out = aggregate_held({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, uploads, [17, 5, 40])
    assert all(torch.equal(out[k], expected[k]) for k in expected)


def test_slices_that_are_not_nested_are_refused():
    with pytest.raises(ValueError, match="not nested"):
        aggregate_held({"w": torch.zeros(3, 3)}, [{"w": torch.ones(1, 3)}, {"w": torch.ones(3, 1)}], [1, 1])


# -- width-scaled sub-models ------------------------------------------------------------------------------------

def test_narrow_clients_get_leading_slices_of_the_held_stages(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=scalefl", "method.hparams.levels=[[0.5,2,0.25],[0.5,3,0.5]]")
    method = fed.method
    narrow = next(c for c in range(4) if method.client_width(c) == 0.25)
    full = method.init_server(fed.new_model())["model"]
    held = method.payload(0, narrow, {"model": full}).tensors
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in held} == {"stages.0", "stages.1", "exits.0", "exits.1"}
    assert held["stages.1.0.weight"].shape == (16, 8, 3, 3) and full["stages.1.0.weight"].shape == (32, 16, 3, 3)
    assert all(torch.equal(v, full[k][leading_region(v.shape)]) for k, v in held.items())
    load_state(method.plan.model_for(narrow, fed.new_model()), held)  # covers the sub-model exactly
    assert method.client_exits(narrow) == 2
    with pytest.raises(ValueError, match="must not exceed"):
        federation(tiny_config_data, "method.name=scalefl", "method.hparams.levels=[[1.0,3,1.0]]")


# -- DepthFL ----------------------------------------------------------------------------------------------------

def test_depthfl_consistency_weight_follows_the_sigmoid_rampup():
    assert consistency_weight(0, 10, 1.0) == pytest.approx(0.006737947)  # exp(-5)
    assert consistency_weight(5, 10, 1.0) == pytest.approx(0.286504797)  # exp(-5/4)
    assert consistency_weight(8, 10, 2.0) == pytest.approx(1.637461506)  # 2·exp(-0.2)
    assert consistency_weight(10, 10, 1.0) == 1.0 and consistency_weight(25, 10, 1.0) == 1.0
    assert consistency_weight(3, 0, 0.7) == 0.7


def test_mutual_distillation_by_hand():
    even, skewed = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])  # p = (1/2, 1/2), (3/4, 1/4)
    by_hand = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) + (0.5 * math.log(2 / 3) + 0.5 * math.log(2.0))
    assert float(mutual_distillation([even, skewed], 1.0)) == pytest.approx(by_hand)  # 0.27465
    three = [even, skewed, torch.tensor([[0.0, 1.0]])]
    expected = sum(kl(t, s, 2.0) for s in three for t in three if t is not s) / 2
    assert float(mutual_distillation(three, 2.0)) == pytest.approx(float(expected))


def test_depthfl_with_one_tier_and_no_distillation_is_fedavg_bitwise(tiny_config_data):
    short = ("train.rounds=2", "train.local_epochs=1")
    fedavg = simulate(tiny_config_data, *short)
    depthfl = simulate(tiny_config_data, *short, "method.name=depthfl", "method.hparams.kd_weight=0")
    for a, b in zip(fedavg.history, depthfl.history, strict=True):
        assert {k: v for k, v in a.items() if not k.startswith("time/")} == \
               {k: v for k, v in b.items() if not k.startswith("time/") and k != "train/consistency_weight"}
    model_a, model_b = fedavg.state.server["model"], depthfl.state.server["model"]
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)


def test_depthfl_feddyn_keeps_corrections_of_the_held_parameters(tiny_config_data):
    sim = simulate(tiny_config_data, "train.rounds=1", "train.local_epochs=1", "method.name=depthfl", TIERS,
                   "method.hparams.feddyn_alpha=0.1")
    method = sim.fed.method
    shallow = next(c for c in range(4) if method.client_exits(c) == 1)
    correction = sim.state.clients[shallow]["feddyn_grad"]
    assert {k.split(".")[1] for k in correction} == {"0"} and "stages.0.1.running_mean" not in correction
    assert all(float(g.abs().sum()) > 0 for g in correction.values())  # g = −α(θ_k − θ_server) after one round
    assert sim.history[0]["train/consistency_weight"] == pytest.approx(math.exp(-5))  # round 0 of the ramp
    assert set(sim.state.server["feddyn_h"]) == {n for n, _ in sim.fed.new_model().named_parameters()}


# -- ScaleFL ----------------------------------------------------------------------------------------------------

def test_scalefl_distillation_is_off_before_a_quarter_of_the_rounds_and_on_after(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=scalefl", "train.rounds=8", "method.hparams.kd_weight=0.5")
    method = fed.method
    assert [method.kd_active(r) for r in range(8)] == [False, False] + [True] * 6
    model = fed.new_model().eval()
    x = torch.randn(6, *fed.dataset.input_shape, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        logits = model(x)
        ce = exit_ce_losses(logits, y)
        weighted_ce = (ce[0] + 2 * ce[1] + 3 * ce[2]) / 6
        kd = (kl(logits[2], logits[0], 3.0) + 2 * kl(logits[2], logits[1], 3.0)) / 6
        before, after = method.objective(1)(model, x, y), method.objective(2)(model, x, y)
    assert float(kd) > 0.01
    assert float(before) == pytest.approx(float(weighted_ce), rel=1e-6)
    assert float(after) == pytest.approx(float(weighted_ce + 0.5 * kd), rel=1e-6)


# -- InclusiveFL ------------------------------------------------------------------------------------------------

def test_inclusivefl_top_update_takes_a_momentum_of_the_deeper_tiers_update(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=inclusivefl", "method.hparams.tiers=[0.5,0.0,0.5]",
                     "method.hparams.momentum=0.25")
    method = fed.method
    server = method.init_server(fed.new_model())
    shift = {c: 1.0 if method.client_exits(c) == 1 else 3.0 for c in range(4)}
    assert sorted(shift.values()) == [1.0, 1.0, 3.0, 3.0]
    uploads = {c: Message({k: v + shift[c] if v.is_floating_point() else v
                           for k, v in method.payload(0, c, server).tensors.items()}) for c in range(4)}
    new = method.aggregate(0, uploads, server)
    top, previous_top, previous = new["tops"]["1"], server["tops"]["1"], server["model"]
    assert set(top) == {k for k in previous if k.startswith(("stages.0.", "exits.0."))}
    # parameters: (1 − β)·1 + β·3 = 1.5; the top's BatchNorm statistics: the shallow tier's own average
    assert torch.allclose(top["stages.0.0.weight"], previous_top["stages.0.0.weight"] + 1.5)
    assert torch.allclose(top["exits.0.bias"], previous_top["exits.0.bias"] + 1.5)
    assert torch.allclose(top["stages.0.1.running_mean"], previous_top["stages.0.1.running_mean"] + 1.0)
    # the shared stages are averaged over the deep clients only
    assert torch.allclose(new["model"]["stages.0.0.weight"], previous["stages.0.0.weight"] + 3.0)
    assert torch.allclose(new["model"]["stages.2.0.weight"], previous["stages.2.0.weight"] + 3.0)
    shallow = next(c for c in range(4) if method.client_exits(c) == 1)
    assert torch.equal(method.payload(1, shallow, new).tensors["stages.0.0.weight"], top["stages.0.0.weight"])


# -- tiered runs end to end -------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [("method.name=depthfl", TIERS), ("method.name=scalefl", LEVELS),
                                       ("method.name=inclusivefl", TIERS)], ids=["depthfl", "scalefl", "inclusivefl"])
def test_tiered_run_beats_chance_and_reports_only_the_exits_and_macs_each_client_holds(
        tiny_config_data, tmp_path, overrides):
    sim = simulate(tiny_config_data, *overrides)
    method, metrics = sim.fed.method, sim.last_eval.metrics
    assert metrics["test/acc/exit_3"] > 0.4 and metrics["test/acc/mean"] > 0.2  # 10 classes: chance is 0.1
    measures = final_measures(sim, tmp_path)
    per_client = pd.read_csv(tmp_path / "per_client.csv").set_index("client")
    assert sorted(per_client["exits_held"]) == [1, 2, 3, 3]
    for c, row in per_client.iterrows():
        held = method.client_exits(c)
        assert row["exits_held"] == held
        assert [pd.isna(row[f"test_acc_exit_{k}"]) for k in (1, 2, 3)] == [k > held for k in (1, 2, 3)]
    assert per_client["test_acc_exit_3"].mean() == pytest.approx(metrics["test/acc/exit_3"])
    shallow = int(per_client.index[per_client["exits_held"] == 1][0])
    own_exit_1 = client_cost_tables(sim)[shallow].exits[0].macs
    assert per_client.loc[shallow, "dyn_macs"] == pytest.approx(own_exit_1)  # it can only leave at exit 1
    assert own_exit_1 <= measures.metrics["macs/exit_1"] < per_client["dyn_macs"].max()
