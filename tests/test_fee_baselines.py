"""DepthFL, ScaleFL and InclusiveFL on real numbers: capacity tiers, held-entry aggregation, their local terms,
and tiered runs that report only the exits (and MACs) each client can run."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import DEBIAN_FMNIST, federation, fmnist_config
from test_baselines_a import ShiftingTraining, a_batch, shifted
from torch import nn

import bench.methods.heterogeneous as heterogeneous_module
from baselines.depthfl import consistency_weight, mutual_distillation
from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.ground.rng import torch_generator
from bench.ground.tensor_ops import weighted_average
from bench.measure.summary import client_cost_tables
from bench.methods.api import Message
from bench.methods.heterogeneous import aggregate_held, assign_tiers, leading_region, tier_sizes
from bench.methods.losses import exit_ce_losses, sum_ce_loss
from bench.methods.model_state import load_state

TIERS = "method.hparams.tiers=[0.25,0.25,0.5]"
LEVELS = "method.hparams.levels=[[0.25,1,0.25],[0.25,2,0.375],[0.5,3,0.5]]"


def simulate(data: dict, *overrides: str) -> Simulation:
    sim = Simulation(validate_config(apply_overrides(data, list(overrides))))
    sim.run()
    return sim



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


def test_depthfl_gap_to_fedavg_at_alpha_0_1_comes_from_the_distillation(tiny_config_data):
    """The review's DepthFL-below-FedAvg result at α = 0.1, reproduced on the tiny config (see the docstring)."""
    short = ("train.rounds=12", "train.local_epochs=1", "data.alpha=0.1", "eval.every=12", "run.checkpoint_every=0")
    fedavg = simulate(tiny_config_data, *short).last_eval.metrics
    depthfl = simulate(tiny_config_data, *short, "method.name=depthfl").last_eval.metrics
    assert depthfl["test/acc/mean"] < fedavg["test/acc/mean"] - 0.02  # 48.4% against 51.8%
    assert depthfl["test/acc/exit_2"] < fedavg["test/acc/exit_2"] - 0.05  # 36.9% against 45.0%


# -- ScaleFL ----------------------------------------------------------------------------------------------------

def test_scalefl_distillation_is_off_until_a_quarter_of_the_rounds_and_on_after(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=scalefl", "train.rounds=8", "method.hparams.kd_weight=0.5")
    method = fed.method
    # the authors' round > 0.25·T with 0-based rounds: 8 rounds, on from round 3
    assert [method.kd_active(r) for r in range(8)] == [False, False, False] + [True] * 5
    model = fed.new_model().eval()
    x = torch.randn(6, *fed.dataset.input_shape, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        logits = model(x)
        ce = exit_ce_losses(logits, y)
        weighted_ce = (ce[0] + 2 * ce[1] + 3 * ce[2]) / 6
        # the authors' element-wise-mean KL: the per-sample KL divided by the 10 classes
        kd = (kl(logits[2], logits[0], 3.0) + 2 * kl(logits[2], logits[1], 3.0)) / 6 / 10
        before, after = method.objective(2)(model, x, y), method.objective(3)(model, x, y)
    assert float(kd) > 0.001
    assert float(before) == pytest.approx(float(weighted_ce), rel=1e-6)
    assert float(after) == pytest.approx(float(weighted_ce + 0.5 * kd), rel=1e-6)


class FixedLogits(nn.Module):
    """Two "exits" whose logits are parameters: the gradient of a loss is then read off them directly."""

    def __init__(self, first: list[float], last: list[float]):
        super().__init__()
        self.first = nn.Parameter(torch.tensor([first], dtype=torch.float64))
        self.last = nn.Parameter(torch.tensor([last], dtype=torch.float64))

    def forward(self, x):
        return [self.first, self.last]


@pytest.mark.parametrize("detach_teacher", [False, True])
def test_scalefl_teacher_keeps_its_gradient_unless_detached_by_hand(tiny_config_data, detach_teacher):
    overrides = ["method.name=scalefl", "train.rounds=8", "method.hparams.kd_weight=0.4",
                 "method.hparams.temperature=2"] + (["method.hparams.detach_teacher=true"] if detach_teacher else [])
    method = federation(tiny_config_data, *overrides).method  # by default the teacher keeps its graph
    model, y, tau, gamma = FixedLogits([0.5, -1.0, 2.0], [1.0, 0.0, -0.5]), torch.tensor([2]), 2.0, 0.4
    method.objective(3)(model, None, y).backward()
    with torch.no_grad():
        p, q = F.softmax(model.last / tau, dim=-1), F.softmax(model.first / tau, dim=-1)
        kl_pq = (p * (p.log() - q.log())).sum()
        # L = [CE(z1) + γ·τ²·KL(p‖q)/C + 2·CE(z2)]/3 with C = 3 classes; ∂KL/∂z2_j = p_j·(log p_j − log q_j − KL)/τ
        ce_grad = F.softmax(model.last, dim=-1) - F.one_hot(y, 3)
        kd_grad = gamma * tau * tau / 3 * p * (p.log() - q.log() - kl_pq) / tau  # γτ²/C·∂KL/∂z2
        expected = (2 * ce_grad + (0 if detach_teacher else kd_grad)) / 3
    assert float(kd_grad.abs().max()) > 1e-3
    assert torch.allclose(model.last.grad, expected, atol=1e-12)


def test_scalefl_averages_each_entry_uniformly_over_its_holders(tiny_config_data):
    for overrides, expected in (((), 2.0), (("method.hparams.aggregation=train_size",), None)):
        fed = federation(tiny_config_data, "method.name=scalefl", *overrides)  # by default uniformly
        method = fed.method
        server = method.init_server(fed.new_model())
        n0, n3 = method.ctx.client_train_sizes[0], method.ctx.client_train_sizes[3]
        uploads = {0: Message(shifted(server["model"], 1.0)), 3: Message(shifted(server["model"], 3.0))}
        new = method.aggregate(0, uploads, server)
        # the authors' average_weights: the holders' sum over their count, 2 (by train size: 2.34)
        shift = expected if expected is not None else (1.0 * n0 + 3.0 * n3) / (n0 + n3)
        key = "stages.1.0.weight"
        assert torch.allclose(new["model"][key], server["model"][key] + shift, atol=1e-5)


def test_scalefl_narrow_sub_models_scale_their_convolutions_by_the_width_rate(tiny_config_data):
    levels = "method.hparams.levels=[[0.5,2,0.25],[0.5,3,0.5]]"
    scaled = federation(tiny_config_data, "method.name=scalefl", levels).method
    plain = federation(tiny_config_data, "method.name=scalefl", levels,
                       "method.hparams.activation_scaler=false").method
    narrow = next(c for c in range(4) if scaled.client_width(c) == 0.25)
    full = next(c for c in range(4) if scaled.client_width(c) == 0.5)
    server = scaled.init_server(scaled.ctx.build_model())
    x = torch.randn(3, *scaled.ctx.build_model().stages[0][0].weight.shape[1:2], 16, 16,
                    generator=torch.Generator().manual_seed(0))
    outputs = {}
    for name, method in (("scaled", scaled), ("plain", plain)):
        sub = method.plan.model_for(narrow, method.ctx.build_model())
        load_state(sub, method.payload(0, narrow, server).tensors)
        outputs[name] = sub.stages[0][0](x)
    # width 0.25 of a 0.5-wide model: 8 of 16 channels, rate 0.5, so the convolution's output doubles (a plain
    # sliced sub-model, as HeteroFL without its scaler, would give the same output as the full model's slice)
    assert torch.allclose(outputs["scaled"], 2 * outputs["plain"])
    assert scaled.plan.model_for(full, scaled.ctx.build_model()).stages[0][0]._forward_hooks == {}


def test_scalefl_static_batchnorm_tracks_nothing_in_training_and_estimates_statistics_to_evaluate(
        tiny_config_data):
    fed = federation(tiny_config_data, "method.name=scalefl")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    result = method.local_update(model, 0, method.payload(0, 0, server), {}, fed.client_data(0),
                                 torch_generator(0, "test", 0, 0))
    key = "stages.0.1.running_mean"
    assert torch.equal(result.upload.tensors[key], server["model"][key])  # never tracked in training
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    server = method.aggregate(0, {0: result.upload}, server)
    predictor = method.eval_model(fed.new_model(), 0, server, {}, fed.client_data(0),
                                  torch_generator(0, "evaluation", 0, 0))
    data = fed.client_data(0)
    x = torch.cat([xb for xb, _ in fed.batches.eval_batches(data.train_idx, method.ctx.train.batch_size)])
    with torch.no_grad():
        conv = predictor.stages[0][0](x)
    # the statistics come from the client's train split (averaged over its batches, so close to the split's own);
    # FedAvg would evaluate with the tracked statistics, here still the initial variance 1
    assert not predictor.training
    variance = predictor.stages[0][1].running_var
    assert torch.allclose(variance, conv.var((0, 2, 3)), rtol=0.1)
    assert not torch.allclose(variance, server["model"]["stages.0.1.running_var"], rtol=0.5)


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_scalefl_first_exit_lags_fedavg_by_its_position_weight(tiny_config_data):
    """The review's weak first exit, reproduced on Fashion-MNIST (2,400 images, 10 clients, α = 0.3, 8 rounds):
    the normalised weights (1, 2, 3)/6 slow exit 1 down, not the KD (switched off here)."""
    data = fmnist_config(tiny_config_data, "train.rounds=8", "data.alpha=0.3")
    fedavg = simulate(data).last_eval.metrics
    scalefl = simulate(data, "method.name=scalefl", "method.hparams.kd_weight=0").last_eval.metrics
    assert scalefl["test/acc/exit_1"] < fedavg["test/acc/exit_1"] - 0.08  # 10.3% (chance) against 24.1%
    assert scalefl["test/acc/exit_2"] < fedavg["test/acc/exit_2"] - 0.04  # 23.9% against 29.4%
    fed = federation(data, "method.name=scalefl", "method.hparams.kd_weight=0")
    model = fed.new_model().train()
    x, y = next(fed.batches.eval_batches(fed.client_data(0).train_idx, 32))
    gradients = {}
    for name, loss_fn in (("scalefl", fed.method.objective(0)), ("fedavg", sum_ce_loss)):
        model.zero_grad()
        loss_fn(model, x, y).backward()
        gradients[name] = [model.exits[k].bias.grad.clone() for k in range(3)]
    for k, share in enumerate((1 / 6, 2 / 6, 3 / 6)):  # FedAvg's "-EE" sum gives every exit weight 1
        assert torch.allclose(gradients["scalefl"][k], share * gradients["fedavg"][k], atol=1e-7)


# -- InclusiveFL ------------------------------------------------------------------------------------------------

def test_inclusivefl_top_update_distils_the_next_deeper_tiers_layer_updates(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=inclusivefl", "method.hparams.tiers=[0.5,0.0,0.5]",
                     "method.hparams.momentum=0.25")
    method = fed.method
    server = method.init_server(fed.new_model())
    shallow_clients = [c for c in range(4) if method.client_exits(c) == 1]
    assert len(shallow_clients) == 2 and method.next_deeper == {1: 3}

    def shifted(c: int) -> Message:
        """Shallow clients move every entry by 1; deep ones move stage j by 3 + 2j and their heads by 3."""
        out = {}
        for k, v in method.payload(0, c, server).tensors.items():
            stage = int(k.split(".")[1]) if k.startswith("stages.") else None
            shift = 1.0 if c in shallow_clients else 3.0 + 2 * (stage or 0)
            out[k] = v + shift if v.is_floating_point() else v
        return Message(out)

    new = method.aggregate(0, {c: shifted(c) for c in range(4)}, server)
    top, previous_top, previous = new["tops"]["1"], server["tops"]["1"], server["model"]
    assert set(top) == {k for k in previous if k.startswith(("stages.0.", "exits.0."))}
    # the top stage's parameters: (1 − β)·1 + β·mean(3, 5, 7) = 0.75 + 1.25 = 2 (distilling the same entries of
    # the deeper clients, as before, gave 0.75 + 0.25·3 = 1.5; FedAvg would average the clients' updates)
    assert torch.allclose(top["stages.0.0.weight"], previous_top["stages.0.0.weight"] + 2.0)
    assert torch.allclose(top["stages.0.1.bias"], previous_top["stages.0.1.bias"] + 2.0)
    # the exit head and the BatchNorm statistics take the tier's own average (as the authors' encoder-only rule)
    assert torch.allclose(top["exits.0.bias"], previous_top["exits.0.bias"] + 1.0)
    assert torch.allclose(top["stages.0.1.running_mean"], previous_top["stages.0.1.running_mean"] + 1.0)
    # the shared stages are averaged over the deep clients only
    assert torch.allclose(new["model"]["stages.0.0.weight"], previous["stages.0.0.weight"] + 3.0)
    assert torch.allclose(new["model"]["stages.2.0.weight"], previous["stages.2.0.weight"] + 7.0)
    assert torch.equal(method.payload(1, shallow_clients[0], new).tensors["stages.0.0.weight"],
                       top["stages.0.0.weight"])


def test_inclusivefl_teachers_are_leading_slices_of_the_deeper_stages(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=inclusivefl")
    method = fed.method
    assert sorted(method.client_exits(c) for c in range(4)) == [1, 1, 2, 3]  # default: a third at each depth
    # conv3 at width 0.5: stage convs 16×3, 32×16, 64×32; the top of the depth-2 model (stage 1) is taught by
    # stages 1 and 2 of the depth-3 model, the top of the depth-1 model by stages 0 and 1 of the depth-2 one
    assert method.counterparts[2]["stages.1.0.weight"] == ["stages.1.0.weight", "stages.2.0.weight"]
    assert method.counterparts[1]["stages.0.0.weight"] == ["stages.0.0.weight", "stages.1.0.weight"]


def test_inclusivefl_refuses_clients_at_a_single_depth(tiny_config_data):
    with pytest.raises(ValueError, match="FedAvg: give tiers that put clients at two depths"):
        federation(tiny_config_data, "method.name=inclusivefl", "method.hparams.tiers=[0,0,1]")


# -- DepthFL: FedDyn's uniform server average, the distillation in local training -----------------------------

def test_depthfl_feddyn_server_averages_uniformly(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=depthfl", "method.hparams.feddyn_alpha=0.1")
    method = fed.method
    server = method.init_server(fed.new_model())
    sizes = method.ctx.client_train_sizes
    assert sizes[0] != sizes[1]
    uploads = {c: Message({k: v + shift if v.is_floating_point() else v for k, v in server["model"].items()})
               for c, shift in ((0, 1.0), (1, 3.0))}
    new = method.aggregate(0, uploads, server)
    # h = −α/m·Σ(θ_k − θ) = −0.1/4·(1 + 3) = −0.1 and θ = mean(θ_k) − h/α = (θ + 2) + 1; a train-size weighted
    # mean would give θ + (1·n_0 + 3·n_1)/(n_0 + n_1) + 1 instead
    assert torch.allclose(new["feddyn_h"]["stages.0.0.weight"], torch.full_like(new["feddyn_h"]["stages.0.0.weight"],
                                                                                -0.1))
    assert torch.allclose(new["model"]["stages.0.0.weight"], server["model"]["stages.0.0.weight"] + 3.0, atol=1e-5)


def test_depthfl_local_update_distils_the_exits_into_each_other(tiny_config_data):
    disagreement = {}
    for weight in (0.0, 3.0):
        fed = federation(tiny_config_data, "method.name=depthfl", f"method.hparams.kd_weight={weight}")
        method, model = fed.method, fed.new_model()
        server = method.init_server(model)
        result = method.local_update(model, method.ctx.rounds, method.payload(0, 0, server), {},
                                     fed.client_data(0), torch_generator(0, "test", 0, 0))
        load_state(model, result.upload.tensors)
        model.eval()
        x, _ = next(fed.batches.eval_batches(fed.client_data(0).train_idx, 10_000))
        with torch.no_grad():
            disagreement[weight] = float(mutual_distillation(model(x), 1.0))
    # after the ramp-up the KL among the exits is part of the loss: the exits agree much more than under FedAvg's
    # summed cross-entropy (kd_weight = 0)
    assert disagreement[3.0] < 0.7 * disagreement[0.0]


def test_depthfl_feddyn_divides_the_correction_by_all_clients_by_hand(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=depthfl", "method.hparams.feddyn_alpha=0.1",
                     "method.hparams.tiers=[0.5,0.0,0.5]")
    method = fed.method
    server = method.init_server(fed.new_model())
    deep = [c for c in range(4) if method.client_exits(c) == 3]
    assert len(deep) == 2  # stages.2 is held by 2 of the 4 clients
    uploads = {c: Message(shifted(method.payload(0, c, server).tensors, shift))
               for c, shift in zip(deep, (1.0, 3.0), strict=True)}
    new = method.aggregate(0, uploads, server)
    key = "stages.2.0.weight"
    # h = −α/N·Σ(θ_k − θ) = −0.1/4·(1 + 3) = −0.1 (Flower divides by all N = 4 clients; by the 2 holders it would
    # be −0.2) and θ = mean(θ_k) − h/α = θ + 2 + 1
    assert torch.allclose(new["feddyn_h"][key], torch.full_like(new["feddyn_h"][key], -0.1))
    assert torch.allclose(new["model"][key], server["model"][key] + 3.0, atol=1e-5)


def test_depthfl_objective_adds_the_mutual_distillation_by_hand(tiny_config_data, monkeypatch):
    training = ShiftingTraining()
    monkeypatch.setattr(heterogeneous_module, "train_epochs", training)
    fed = federation(tiny_config_data, "method.name=depthfl", "method.hparams.kd_weight=0.7",
                     "method.hparams.temperature=2")
    method = fed.method
    server = method.init_server(fed.new_model())
    method.local_update(fed.new_model(), method.ctx.rounds, method.payload(0, 0, server), {}, fed.client_data(0),
                        torch_generator(0, "test", 0, 0))  # after the ramp-up: weight 0.7
    model, (x, y) = fed.new_model().eval(), a_batch(fed)
    with torch.no_grad():
        logits = model(x)
        ce = sum(F.cross_entropy(z, y) for z in logits)
        kd = sum(kl(t, s, 2.0) for s in logits for t in logits if t is not s) / 2
        loss = training.calls[0]["loss_fn"](model, x, y)
    assert float(kd) > 1e-3
    assert float(loss) == pytest.approx(float(ce + 0.7 * kd), rel=1e-5)  # FedAvg: ce alone


# -- tiered runs end to end -------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [("method.name=depthfl", TIERS), ("method.name=scalefl", LEVELS),
                                       ("method.name=inclusivefl", TIERS)], ids=["depthfl", "scalefl", "inclusivefl"])
def test_tiered_run_beats_chance_and_reports_only_the_exits_and_macs_each_client_holds(
        tiny_config_data, overrides):
    sim = simulate(tiny_config_data, *overrides)
    method, metrics = sim.fed.method, sim.last_eval.metrics
    assert metrics["test/acc/exit_3"] > 0.4 and metrics["test/acc/mean"] > 0.2  # 10 classes: chance is 0.1
    measures = sim.measures  # the run measures itself, untracked
    per_client = measures.per_client.set_index("client")
    assert sorted(per_client["exits_held"]) == [1, 2, 3, 3]
    for c, row in per_client.iterrows():
        held = method.client_exits(c)
        assert row["exits_held"] == held
        assert [pd.isna(row[f"test_acc_exit_{k}"]) for k in (1, 2, 3)] == [k > held for k in (1, 2, 3)]
    assert per_client["test_acc_exit_3"].mean() == pytest.approx(metrics["test/acc/exit_3"])
    shallow = int(per_client.index[per_client["exits_held"] == 1][0])
    own_exit_1 = client_cost_tables(sim.finished_run())[shallow].exits[0].macs
    assert per_client.loc[shallow, "dyn_macs"] == pytest.approx(own_exit_1)  # it can only leave at exit 1
    assert own_exit_1 <= measures.metrics["macs/exit_1"] < per_client["dyn_macs"].max()
