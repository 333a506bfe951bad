"""CAFEDistill on real numbers: the teacher QP, the student schedule, the distillation loss, what crosses the
network, the ablation switches, and an end-to-end run on real digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.fed.federation import build_federation
from bench.ground.rng import torch_generator
from bench.ground.tensor_ops import state_nbytes
from bench.methods.api import Message, MethodContext, TrainSettings
from bench.methods.cafedistill import CAFEDistill, CAFEDistillHparams
from bench.methods.cafedistill.layout import model_layout
from bench.methods.cafedistill.selection import (
    active_fraction,
    rank_clients,
    student_budget,
    student_depth_order,
    update_alignment,
)
from bench.methods.cafedistill.teacher import (
    head_similarity,
    linear_teacher_probs,
    mixture_teacher_probs,
    teacher_weights,
)
from bench.methods.losses import distillation_loss
from bench.models.conv3 import Conv3


def tiny_model(channels: tuple[int, ...] = (4, 8, 8)) -> Conv3:
    torch.manual_seed(0)
    return Conv3((1, 8, 8), 10, channels)


def make_method(n: int = 20, rounds: int = 10, channels: tuple[int, ...] = (4, 8, 8), **hparams) -> CAFEDistill:
    ctx = MethodContext(num_clients=n, num_classes=10, num_exits=len(channels), rounds=rounds,
                        train=TrainSettings(1, 32, 0.05, 0.9, 5e-4), client_train_sizes=[10 + c for c in range(n)],
                        seed=0, build_model=lambda width=None: tiny_model(channels))
    return CAFEDistill(CAFEDistillHparams(**hparams), ctx)


def tiny_federation(data: dict, *overrides: str):
    return build_federation(validate_config(apply_overrides(data, ["method.name=cafedistill", *overrides])))


# -- the teacher-weight QP [A-2] ------------------------------------------------------------------------------------

def test_qp_small_mu_is_local_kd_large_mu_follows_data_fractions():
    similarity = torch.tensor([[1.0, 0.9, 0.2], [0.9, 1.0, 0.4], [0.2, 0.4, 1.0]])
    p = torch.tensor([0.5, 0.3, 0.2])
    assert torch.allclose(teacher_weights(similarity, p, 1e-6), torch.eye(3, dtype=torch.float64))
    assert torch.allclose(teacher_weights(similarity, p, 1e6), p.double().expand(3, 3), atol=1e-5)


def test_qp_solved_by_hand():
    # v = p + s_1/(2μ) = (1.0, 0.55, -0.05); projection threshold θ = 0.275 → w = (0.725, 0.275, 0)
    similarity = torch.tensor([[1.0, 0.5, -0.5], [0.5, 1.0, 0.0], [-0.5, 0.0, 1.0]])
    w = teacher_weights(similarity, torch.tensor([0.5, 0.3, 0.2]), mu=1.0)
    assert torch.allclose(w[0], torch.tensor([0.725, 0.275, 0.0], dtype=torch.float64))
    assert torch.allclose(w.sum(1), torch.ones(3, dtype=torch.float64)) and (w >= 0).all()


def test_qp_of_diverged_heads_says_so():
    heads = [{"weight": torch.ones(2, 3)}, {"weight": torch.full((2, 3), float("nan"))}]
    with pytest.raises(RuntimeError, match="last-exit heads hold NaN or infinite values, so training diverged"):
        teacher_weights(head_similarity(heads), torch.tensor([0.5, 0.5]), mu=1.0)


def test_head_similarity_of_identical_opposite_and_orthogonal_heads():
    a = {"exits.2.weight": torch.tensor([[1.0, 0.0]]), "exits.2.bias": torch.tensor([0.0])}
    b = {"exits.2.weight": torch.tensor([[-2.0, 0.0]]), "exits.2.bias": torch.tensor([0.0])}
    c = {"exits.2.weight": torch.tensor([[0.0, 3.0]]), "exits.2.bias": torch.tensor([0.0])}
    s = head_similarity([a, a, b, c])
    assert s[0, 1] == pytest.approx(1.0) and s[0, 2] == pytest.approx(-1.0) and s[0, 3] == pytest.approx(0.0)


# -- the student schedule (section 5) -------------------------------------------------------------------------------

@pytest.mark.parametrize("t, expected", [(1, (8, 0, 8)), (2, (16, 0, 16)), (3, (24, 1, 4)), (4, (32, 1, 12)),
                                         (5, (40, 2, 0)), (10, (40, 2, 0))])
def test_budget_by_hand_m3_n20_t10(t, expected):
    budget = student_budget(t, 10, num_exits=3, num_clients=20)
    assert (budget.active, budget.full_depths, budget.extra_clients) == expected


def test_budget_uses_exact_fractions():
    assert math.floor(2 * 3 / 7 * 3 * 21) == 53  # floating point loses a student here
    assert student_budget(3, 7, num_exits=4, num_clients=21).active == 54
    assert active_fraction(3, 7) == pytest.approx(6 / 7) and active_fraction(9, 10) == 1


def test_progressive_schedule_over_a_whole_run():
    method = make_method(n=20, rounds=10)
    server = method.init_server(tiny_model())
    for round in range(10):
        sets = method.students(round, server)
        budget = student_budget(round + 1, 10, 3, 20)
        assert sum(len(s) for s in sets) == budget.active
        assert all(set(s) <= {0, 1} for s in sets)
        if round + 1 >= 5:
            assert sets == [[0, 1]] * 20
    round2 = method.students(2, server)  # t = 3: exit 0 everywhere, exit 1 on the 4 largest clients (no updates yet)
    assert [c for c, s in enumerate(round2) if s == [0, 1]] == [16, 17, 18, 19]
    assert all(s in ([0], [0, 1]) for s in round2)
    payload = method.payload(0, 3, server)
    assert payload.meta["students"] == [] and set(payload.tensors) == set(method.layout.shared)


def test_last_exit_always_trains_and_the_upload_is_backbone_plus_last_head(tiny_config_data):
    fed = tiny_federation(tiny_config_data, "train.rounds=10", "train.local_epochs=1")
    method = fed.method
    server = method.init_server(fed.new_model())
    state = method.init_client(0, fed.new_model(), server)
    payload = method.payload(0, 0, server)
    before = state["personal"]
    result = method.local_update(fed.new_model(), 0, payload, state, fed.client_data(0),
                                 torch_generator(0, "local-update", 0, 0))
    after = result.state["personal"]
    changed = [not torch.equal(before[f"exits.{k}.weight"], after[f"exits.{k}.weight"]) for k in range(3)]
    assert changed == [k in payload.meta["students"] for k in range(2)] + [True]
    assert set(result.upload.tensors) == set(method.layout.shared) | {"exits.2.weight",
                                                                                        "exits.2.bias"}


def test_deep_first_switches_on_the_deepest_student_first():
    assert student_depth_order(4, "deep_first") == [2, 1, 0]
    assert student_depth_order(4, "shallow_first") == [0, 1, 2]
    method = make_method(n=4, rounds=10, channels=(4, 4, 8, 8), depth_order="deep_first")
    server = method.init_server(tiny_model((4, 4, 8, 8)))
    sets = method.students(3, server)  # t = 4: R = 0.8, K = 9, d = 2, r = 1
    assert sets == [[1, 2], [1, 2], [1, 2], [0, 1, 2]]  # tier 2 by data size: client 3 is the largest


def test_update_alignment_by_hand_and_tier2_picks_the_most_aligned():
    updates = [{"a": torch.tensor([1.0]), "b": torch.tensor([0.0])},
               {"a": torch.tensor([1.0]), "b": torch.tensor([0.0])},
               {"a": torch.tensor([0.0]), "b": torch.tensor([1.0])}]
    scores = update_alignment(updates, [["a"], ["b"]])
    # group 0 only: mean (2/3), client 2's update is zero → 0; groups 0..1: mean (2/3, 1/3)
    assert torch.allclose(scores[:, 0], torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(scores[:, 1], torch.tensor([2, 2, 1], dtype=torch.float64) / math.sqrt(5))
    assert rank_clients([0.2, float("nan"), 0.9, 0.2], sizes=[5, 9, 1, 7]) == [2, 3, 0, 1]

    method = make_method(n=6, rounds=10)
    server = method.init_server(tiny_model())
    server["alignment"][:, 1] = torch.tensor([0.1, 0.9, -0.5, 0.8, 0.3, 0.7], dtype=torch.float64)
    sets = method.students(3, server)  # t = 4: K = 9, d = 1, r = 3 → clients 1, 3, 5 get exit 1
    assert [c for c, s in enumerate(sets) if s == [0, 1]] == [1, 3, 5]


def test_aggregate_scores_updates_from_what_was_sent_and_what_came_back():
    method = make_method(n=3, rounds=10)
    model = tiny_model()
    server = method.init_server(model)
    uploads = {}
    for c, scale in enumerate([1.0, 1.0, -1.0]):
        tensors = {k: server["backbone"][k] + (scale * 0.01 if v.is_floating_point() else 0)
                   for k, v in server["backbone"].items()}
        tensors.update({k: v for k, v in model.state_dict().items() if k.startswith("exits.2.")})
        uploads[c] = Message(tensors)
    new = method.aggregate(0, uploads, server)
    assert torch.allclose(new["alignment"][:, 0], torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert method.students(2, new)[2] == [0]  # t=3, n=3: K=3, d=1, r=0
    # t=4: K=4, d=1, r=1; clients 0 and 1 tie on alignment, the larger (1) wins; the opposed client 2 loses
    assert [c for c, s in enumerate(method.students(3, new)) if s == [0, 1]] == [1]


def test_selection_all_and_random_and_m1_edge_case():
    assert make_method(n=5, selection="all").students(0, {}) == [[0, 1]] * 5
    method = make_method(n=20, rounds=10, selection="random")
    sets = method.students(2, {})
    assert sum(len(s) for s in sets) == 24 and sets == method.students(2, {}) != method.students(1, {})
    single = make_method(n=4, channels=(8,))
    server = single.init_server(tiny_model((8,)))
    assert single.students(9, server) == [[]] * 4
    assert single.payload(9, 0, server).nbytes == state_nbytes(server["backbone"])


# -- teachers and the local objective (sections 3 and 4) -----------------------------------------------------------

def test_averaged_linear_head_gives_the_weighted_average_of_teacher_logits():
    gen = torch.Generator().manual_seed(0)
    heads = [{"exits.2.weight": torch.randn(10, 8, generator=gen, dtype=torch.float64),
              "exits.2.bias": torch.randn(10, generator=gen, dtype=torch.float64)} for _ in range(4)]
    method = make_method(n=4)
    w = torch.tensor([0.1, 0.5, 0.0, 0.4], dtype=torch.float64)
    tensors = method.teacher_tensors(0, {"heads": heads, "teacher_weights": w.expand(4, 4)})
    features = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    averaged = F.linear(features, tensors["teacher.weight"], tensors["teacher.bias"])
    expected = sum(wj * F.linear(features, h["exits.2.weight"], h["exits.2.bias"])
                   for wj, h in zip(w, heads, strict=True))
    assert torch.allclose(averaged, expected, atol=1e-12, rtol=0)


def test_mixture_teacher_is_the_weighted_mixture_of_softened_outputs():
    gen = torch.Generator().manual_seed(1)
    weights, biases, features = torch.randn(3, 10, 8, generator=gen), torch.randn(3, 10, generator=gen), \
        torch.randn(5, 8, generator=gen)
    mix = torch.tensor([0.2, 0.0, 0.8])
    probs = mixture_teacher_probs(weights, biases, mix, features, tau=3.0)
    expected = 0.2 * linear_teacher_probs(weights[0], biases[0], features, 3.0) \
        + 0.8 * linear_teacher_probs(weights[2], biases[2], features, 3.0)
    assert torch.allclose(probs, expected, atol=1e-6) and torch.allclose(probs.sum(1), torch.ones(5))


def test_distillation_term_is_zero_at_the_teacher_and_positive_elsewhere():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    teacher = F.softmax(logits / 3.0, dim=-1)
    assert distillation_loss(logits, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits.flip(1), teacher, 3.0).item() > 0.1


def test_gradients_reach_students_and_backbone_but_not_the_teacher():
    method = make_method(n=2, channels=(4, 8, 8))
    model = tiny_model()
    teacher_weight = torch.randn(10, 8, requires_grad=True)
    teacher_bias = torch.zeros(10, requires_grad=True)
    tensors = {"teacher.weight": teacher_weight, "teacher.bias": teacher_bias}
    teacher = method.teacher(tensors, {})
    x, y = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.arange(6)

    def grads(lam: float) -> dict[str, torch.Tensor]:
        model.zero_grad()
        objective = make_method(n=2, lam=lam).objective([0], [], teacher)
        objective(model, x, y).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    with_kd, without_kd = grads(1.0), grads(0.0)
    assert teacher_weight.grad is None and teacher_bias.grad is None
    assert "exits.1.weight" not in with_kd  # inactive student: no gradient at all
    assert not torch.allclose(with_kd["exits.0.weight"], without_kd["exits.0.weight"])
    assert not torch.allclose(with_kd["stages.0.0.weight"], without_kd["stages.0.0.weight"])
    # the teacher reads the last stage's features detached: the KD term adds nothing to the last stage
    assert torch.equal(with_kd["stages.2.0.weight"], without_kd["stages.2.0.weight"])


def test_inactive_student_head_is_bit_identical_after_a_local_update(tiny_config_data):
    fed = tiny_federation(tiny_config_data, "method.hparams.selection=all")
    method = fed.method
    server = method.init_server(fed.new_model())
    state = method.init_client(0, fed.new_model(), server)
    payload = method.payload(0, 0, server)
    payload.meta["students"] = [0]
    result = method.local_update(fed.new_model(), 0, payload, state, fed.client_data(0),
                                 torch_generator(0, "local-update", 0, 0))
    before, after = state["personal"], result.state["personal"]
    assert all(torch.equal(before[k], after[k]) for k in ("exits.1.weight", "exits.1.bias"))
    assert not torch.equal(before["exits.0.weight"], after["exits.0.weight"])
    assert result.metrics["train/active_students"] == 1.0


def test_cross_client_false_teaches_with_the_clients_own_last_head():
    method = make_method(n=4, cross_client=False, selection="all")
    model = tiny_model()
    server = method.init_server(model)
    assert "teacher_weights" not in server
    payload = method.payload(0, 1, server)
    assert set(payload.tensors) == set(method.layout.shared)
    personal = {k: torch.randn_like(v) for k, v in method.init_client(1, model, server)["personal"].items()}
    features = torch.randn(3, 8)
    expected = F.softmax(F.linear(features, personal["exits.2.weight"], personal["exits.2.bias"]) / 3.0, dim=-1)
    assert torch.allclose(method.teacher(payload.tensors, personal)(features), expected)


# -- what crosses the network --------------------------------------------------------------------------------------

def test_download_is_backbone_plus_one_teacher_head_or_n_heads_in_mixture_mode():
    model = tiny_model()
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("exits.")}
    head = state_nbytes({k: v for k, v in model.state_dict().items() if k.startswith("exits.2.")})
    averaged = make_method(n=5, selection="all")
    message = averaged.payload(0, 2, averaged.init_server(model))
    assert message.nbytes == state_nbytes(backbone) + head
    assert set(message.tensors) - set(backbone) == {"teacher.weight", "teacher.bias"}
    mixture = make_method(n=5, selection="all", teacher_mode="mixture")
    assert mixture.payload(0, 2, mixture.init_server(model)).nbytes == state_nbytes(backbone) + 5 * head + 5 * 4


def test_one_engine_round_counts_backbone_plus_head_both_ways(tiny_config_data):
    sim = Simulation(tiny_federation(tiny_config_data, "train.rounds=1").config)  # t = T: all students active
    sim.run()
    model = sim.fed.new_model()
    per_client = state_nbytes({k: v for k, v in model.state_dict().items()
                               if not k.startswith("exits.") or k.startswith("exits.2.")})
    assert sim.history[0]["comm/bytes_down"] == 4 * per_client
    assert sim.history[0]["comm/bytes_up"] == 4 * per_client
    assert per_client < state_nbytes(model.state_dict())


def test_local_batch_norm_stays_personal():
    method = make_method(n=2, bn_mode="local")
    assert "stages.0.1.running_mean" in method.layout.personal
    assert "stages.0.1.running_mean" not in method.layout.shared and "stages.0.0.weight" in method.layout.shared
    assert "stages.0.1.weight" not in method.layout.stage_params[0]
    assert set(model_layout(tiny_model(), False).personal) == {f"exits.{k}.{p}" for k in range(3)
                                                               for p in ("weight", "bias")}


def test_mixture_without_cross_client_is_refused():
    with pytest.raises(ValidationError, match="needs cross_client=true"):
        CAFEDistillHparams(teacher_mode="mixture", cross_client=False)


# -- end to end ----------------------------------------------------------------------------------------------------

def test_learns_real_digits_far_above_chance(tmp_path):
    data = {"seed": 0, "data": {"dataset": "digits", "clients": 5, "alpha": 0.5, "augment": False},
            "model": {"name": "conv3", "width": 0.5}, "method": {"name": "cafedistill"},
            "train": {"rounds": 4, "local_epochs": 2, "batch_size": 32, "lr": 0.05},
            "eval": {"every": 4, "batch_size": 512},
            "run": {"checkpoint_every": 0, "cache_dir": str(tmp_path / "cache"), "threads": 1}}
    sim = Simulation(validate_config(data))
    metrics = sim.run().metrics
    assert metrics["test/acc/mean"] > 0.6  # 10 classes: chance is 0.1
    assert metrics["test/acc/exit_3"] > 0.8
    assert [h["train/active_students"] for h in sim.history] == [1.0, 2.0, 2.0, 2.0]


def test_kd_warmup_sends_no_teacher_and_trains_students_on_cross_entropy_alone():
    method = make_method(n=4, selection="all", kd_warmup=2)
    model = tiny_model()
    server = method.init_server(model)
    for round, distil in ((0, False), (1, False), (2, True)):
        payload = method.payload(round, 1, server)
        assert payload.meta == {"students": [0, 1], "distil": distil}
        assert ("teacher.weight" in payload.tensors) is distil
    students, teacher = [0, 1], method.teacher(method.payload(2, 1, server).tensors, {})
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    model.eval()
    logits = model(x)
    ce = sum(F.cross_entropy(z, y) for z in logits)
    assert torch.allclose(method.objective(students, [], None)(model, x, y), ce)
    with_kd = method.objective(students, [], teacher)(model, x, y)
    assert with_kd > ce + 1e-3  # λ·τ²·KL from the teacher on top of the same CE terms


def test_without_cross_client_kd_the_last_head_is_not_uploaded(tiny_config_data):
    sim = Simulation(tiny_federation(tiny_config_data, "train.rounds=1", "method.hparams.cross_client=false").config)
    sim.run()
    model = sim.fed.new_model()
    backbone = state_nbytes({k: v for k, v in model.state_dict().items() if not k.startswith("exits.")})
    assert sim.history[0]["comm/bytes_up"] == 4 * backbone == sim.history[0]["comm/bytes_down"]
    assert "heads" not in sim.state.server
