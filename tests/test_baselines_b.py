"""FedAMP, pFedGraph, FedRoD and FedPAC: each one's own rule on constructed cases, and a tracked run of each."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import federation
from mlflow.tracking import MlflowClient
from test_baselines_a import ShiftingTraining, a_batch, moved_by, parameter_count

import baselines.fedrod as fedrod_module
import bench.methods.phases as phases_module
from baselines.fedamp import fedamp_weights, heurfedamp_weights
from baselines.fedpac import (
    CLASS_COUNTS,
    PROTOTYPE,
    STATISTIC_PROTOTYPE,
    VARIANCE,
    alignment_loss,
    alignment_targets,
    combination_weights,
    feature_statistics,
)
from baselines.fedrod import balanced_softmax_loss, combined_logits, log_class_prior
from baselines.pfedgraph import TARGET, collaboration_graph, cosine_to, regulariser_targets
from bench.config import apply_overrides, validate_config
from bench.fed.federation import Federation
from bench.ground.rng import torch_generator
from bench.ground.tensor_ops import class_prototypes, flatten, subtract
from bench.methods.aggregation import personalized_aggregates
from bench.methods.api import Message
from bench.methods.losses import exit_ce_losses, sum_ce_loss
from bench.methods.model_state import extract, is_head, load_state
from bench.methods.simplex_qp import minimize_on_simplex
from bench.track.runner import run_experiment


def assert_rows_on_simplex(weights: torch.Tensor) -> None:
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(1), torch.ones(len(weights), dtype=weights.dtype))


def two_alike_one_apart() -> torch.Tensor:
    """Three flattened models: the first two nearly identical, the third far away and pointing elsewhere."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(50, generator=gen, dtype=torch.float64)
    return torch.stack([base, base + 0.01 * torch.randn(50, generator=gen, dtype=torch.float64), -base])


# -- shared tensor ops ---------------------------------------------------------------------------------------

def test_class_prototypes_by_hand():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [0.0, 6.0]])
    prototypes, counts = class_prototypes(features, torch.tensor([0, 0, 2, 0]), num_classes=4)
    assert counts.tolist() == [3, 0, 1, 0]
    expected = torch.tensor([[4 / 3, 4.0], [0.0, 0.0], [10.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(prototypes, expected)
    with pytest.raises(ValueError, match="num_classes"):
        class_prototypes(features, torch.tensor([0, 0, 5, 0]), num_classes=4)


def test_quadratic_on_simplex_is_solved_exactly_on_hand_solved_cases():
    # 2a² + 2a(1 − a) + 3(1 − a)² is smallest where 6a − 4 = 0: a = 2/3
    w = minimize_on_simplex(torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
    assert torch.allclose(w, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64), atol=1e-12)
    # diagonal M: the minimiser is proportional to 1/M_jj
    w = minimize_on_simplex(torch.diag(torch.tensor([1.0, 2.0, 4.0])))
    assert torch.allclose(w, torch.tensor([4 / 7, 2 / 7, 1 / 7], dtype=torch.float64), atol=1e-12)
    # the third coordinate is dominated: on {c = 0} the minimum is (½, ½) with 2Mw = (1, 1, 2) and ν = 1, so the
    # third multiplier 2 − 1 > 0 keeps it out: exactly zero, not merely small
    w = minimize_on_simplex(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 3.0]]))
    assert torch.allclose(w, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), atol=1e-12) and w[2] == 0
    # a free coordinate takes all the mass (a vertex of the simplex)
    assert torch.equal(minimize_on_simplex(torch.tensor([[1.0, 0.0], [0.0, 0.0]])),
                       torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        minimize_on_simplex(torch.zeros(2, 3))


def test_quadratic_on_simplex_meets_the_kkt_conditions_on_random_cases():
    gen = torch.Generator().manual_seed(3)
    for n in (3, 8, 20):
        d = torch.randn(n, 12, generator=gen, dtype=torch.float64)
        m = d @ d.T + torch.diag(torch.rand(n, generator=gen, dtype=torch.float64))
        w = minimize_on_simplex(m)
        gradient = 2 * m @ w
        nu = gradient[w > 0].mean()
        assert (w >= 0).all() and float(w.sum()) == pytest.approx(1.0, abs=1e-12)
        assert torch.allclose(gradient[w > 0], nu.expand(int((w > 0).sum())), atol=1e-9)  # equal on the support
        assert (gradient[w == 0] >= nu - 1e-9).all()  # no better direction outside it


def test_quadratic_on_simplex_whose_kkt_solution_is_rounded_above_1e12_is_solved():
    # A FedPAC round's 20×20 matrix (entries up to 4e7), captured when the reference run's tune stage stopped on it:
    # the KKT solution on the support {0, 1} sums to 1 + 1.5e-12, so a fixed 1e-12 step test never held and the
    # solver gave up. Its minimum, found here, is that of projected gradient descent run to convergence.
    m = torch.tensor(json.loads((Path(__file__).parent / "data" / "fedpac_qp_rounding.json").read_text()),
                     dtype=torch.float64)
    w = minimize_on_simplex(m)
    m = (m + m.T) / 2
    gradient = 2 * m @ w
    nu = gradient[w > 0].mean()
    scale = float(m.abs().max())
    assert (w >= 0).all() and float(w.sum()) == pytest.approx(1.0, abs=1e-12) and int((w > 0).sum()) == 6
    assert torch.allclose(gradient[w > 0], nu.expand(6), atol=1e-12 * scale)
    assert (gradient[w == 0] >= nu - 1e-12 * scale).all()
    assert float(w @ m @ w) == pytest.approx(22233.278356512, rel=1e-12)


# -- FedAMP ----------------------------------------------------------------------------------------------------

def test_fedamp_weights_by_hand():
    # 1-D models 0, 1, 3: squared distances 1 (0–1), 9 (0–2), 4 (1–2); σ = 2, α_k = σ/(N − 1) = 1
    weights = fedamp_weights(torch.tensor([[0.0], [1.0], [3.0]]), alpha_k=1.0, sigma=2.0)
    m01, m02, m12 = math.exp(-0.5) / 2, math.exp(-4.5) / 2, math.exp(-2.0) / 2  # α_k·exp(−d²/σ)/σ
    assert (m01, m02, m12) == pytest.approx((0.3032653, 0.0055545, 0.0676676), abs=1e-7)
    expected = torch.tensor([[1 - m01 - m02, m01, m02], [m01, 1 - m01 - m12, m12], [m02, m12, 1 - m02 - m12]],
                            dtype=torch.float64)
    assert torch.allclose(weights, expected, atol=1e-12)
    # under FedAvg every row would be the train-size shares; here the self-weight is what the messages leave
    assert weights[2, 2].item() == pytest.approx(0.9267779, abs=1e-7)
    assert_rows_on_simplex(weights)


def test_heurfedamp_weights_by_hand():
    # cos(w0, w1) = cos(w1, w2) = 1/√2, cos(w0, w2) = 0; self-weight 0.5, scale 1
    weights = heurfedamp_weights(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]), self_weight=0.5, scale=1.0)
    near = math.exp(1 / math.sqrt(2))
    expected = torch.tensor([[0.5, 0.5 * near / (near + 1), 0.5 / (near + 1)], [0.25, 0.5, 0.25],
                             [0.5 / (near + 1), 0.5 * near / (near + 1), 0.5]], dtype=torch.float64)
    assert expected[0, 1].item() == pytest.approx(0.3348808, abs=1e-7)
    assert torch.allclose(weights, expected, atol=1e-12)  # FedAvg: the same train-size shares in every row


def test_personalized_aggregates_refuse_weights_of_another_shape():
    uploads = {3: Message({"w": torch.zeros(2)}), 5: Message({"w": torch.ones(2)})}
    out = personalized_aggregates(uploads, torch.tensor([[1.0, 0.0], [0.25, 0.75]]), [{"w": torch.full((2,), 9.0)}] * 6)
    assert torch.equal(out[5]["w"], torch.full((2,), 0.75)) and torch.equal(out[3]["w"], torch.zeros(2))
    assert torch.equal(out[0]["w"], torch.full((2,), 9.0))  # a client outside the round keeps its aggregate
    with pytest.raises(ValueError, match="must be 2×2"):
        personalized_aggregates(uploads, torch.ones(3, 3), [{"w": torch.zeros(2)}] * 6)


def test_fedamp_refuses_a_step_that_makes_a_self_weight_negative(tiny_config_data):
    # 4 clients, σ = 1: α_k may be at most 1/3
    with pytest.raises(ValueError, match="alpha_k ≤ σ/\\(N − 1\\) = 0.333333"):
        federation(tiny_config_data, "method.name=fedamp", "method.hparams.sigma=1", "method.hparams.alpha_k=0.5")
    assert federation(tiny_config_data, "method.name=fedamp", "method.hparams.sigma=1").method.alpha_k == 1 / 3


def test_fedamp_cloud_models_follow_the_hand_computed_weights(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=fedamp", "data.clients=3", "method.hparams.sigma=2")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    uploads = {}
    for c, offset in enumerate([0.0, 1.0, 3.0]):  # one scalar apart: squared distances 1, 9, 4 as above
        state = dict(server["cloud"][c])
        state["exits.0.bias"] = state["exits.0.bias"].clone()
        state["exits.0.bias"][0] += offset
        uploads[c] = Message(state)
    cloud = method.aggregate(0, uploads, server)["cloud"]
    m01, m02 = math.exp(-0.5) / 2, math.exp(-4.5) / 2
    base = server["cloud"][0]["exits.0.bias"][0].item()
    # FedAvg would give every client base + (0 + 1 + 3)·(its train share)
    assert cloud[0]["exits.0.bias"][0].item() == pytest.approx(base + m01 * 1.0 + m02 * 3.0, abs=1e-6)
    assert torch.equal(cloud[0]["stages.0.0.weight"], server["cloud"][0]["stages.0.0.weight"])


def test_fedamp_proximal_term_is_lambda_over_two_alpha_k_by_hand(tiny_config_data):
    # 3 clients, σ = 4: α_k = σ/(N − 1) = 2, so λ = 1 gives λ/(2α_k) = 1/4 (λ/2 would be 1/2)
    fed = federation(tiny_config_data, "method.name=fedamp", "data.clients=3", "method.hparams.sigma=4",
                     "method.hparams.proximal=1")
    method = fed.method
    assert method.alpha_k == 2.0 and method.proximal_coefficient == 0.5
    server = method.init_server(fed.new_model())
    model, (x, y) = moved_by(fed.new_model(), 0.1), a_batch(fed)
    with torch.no_grad():
        extra = method.local_objective(method.payload(0, 0, server))(model, x, y) - sum_ce_loss(model, x, y)
    assert float(extra) == pytest.approx(0.25 * 0.01 * parameter_count(model), rel=1e-4)  # FedAvg: 0


def test_fedamp_trains_the_personal_model_towards_its_cloud_model_and_evaluates_it(tiny_config_data):
    distances = {}
    for lam in (0.01, 10.0):
        fed = federation(tiny_config_data, "method.name=fedamp", f"method.hparams.proximal={lam}")
        method, model = fed.method, fed.new_model()
        server = method.init_server(model)
        state = method.init_client(0, model, server)
        gen = torch.Generator().manual_seed(0)
        cloud = {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                 for k, v in state["model"].items()}  # a cloud model away from the personal one
        server["cloud"][0] = cloud
        result = method.local_update(model, 0, method.payload(0, 0, server), state, fed.client_data(0),
                                     torch_generator(0, "test", 0, 0))
        assert method.eval_params(0, server, result.state) is result.state["model"]  # the personal model
        names = [n for n, _ in model.named_parameters()]
        distances[lam] = float((flatten(result.state["model"], names) - flatten(cloud, names)).norm())
    # the personal model starts 0.05·√d away; with λ = 10 it ends about a third closer (5.4 against 8.2); a
    # FedAvg-like step without the proximal term would end equally far for both
    assert distances[10.0] < 0.75 * distances[0.01]


# -- pFedGraph --------------------------------------------------------------------------------------------------

def test_pfedgraph_graph_favours_the_similar_client():
    graph = collaboration_graph(two_alike_one_apart(), torch.ones(3), alpha=0.8)
    assert_rows_on_simplex(graph)
    # p + s/(2α) = 1/3 + [1, 1, -1]/1.6 → the projection splits the mass between the twins
    assert torch.allclose(graph[0], torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), atol=1e-3)
    assert graph[2, 2] > 0.9


def test_pfedgraph_counts_a_similarity_above_0_9_as_1_by_hand():
    # updates (1, 0), (0.95, √(1 − 0.95²)), (0, 1): cos = 0.95 between the first two, so they count as identical;
    # equal priors, α = 1: row 0 is Π(1/3 + [1, 1, 0]/2) = Π(5/6, 5/6, 1/3) = (1/2, 1/2, 0) (with the raw 0.95:
    # Π(5/6, 0.8083, 1/3) = (0.5083, 0.4833, 0.0083))
    updates = torch.tensor([[1.0, 0.0], [0.95, math.sqrt(1 - 0.95**2)], [0.0, 1.0]], dtype=torch.float64)
    graph = collaboration_graph(updates, torch.ones(3), alpha=1.0)
    assert torch.allclose(graph[0], torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), atol=1e-12)


def test_pfedgraph_regularises_from_the_second_round_by_hand(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=pfedgraph", "method.hparams.cosine_reg=0.3")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    server["targets"][0] = -theta  # the opposite direction: 1 − cos = 2
    x, y = a_batch(fed)
    model.eval()
    first, second = method.payload(0, 0, server), method.payload(1, 0, server)
    assert TARGET not in first.tensors and torch.equal(second.tensors[TARGET], -theta)
    with torch.no_grad():
        ce = sum_ce_loss(model, x, y)
        assert float(method.local_objective(first)(model, x, y) - ce) == 0.0  # round 0: the local loss alone
        assert float(method.local_objective(second)(model, x, y) - ce) == pytest.approx(2 * 0.3, rel=1e-5)


def test_pfedgraph_closed_form_solves_the_graph_qp():
    gen = torch.Generator().manual_seed(1)
    updates = torch.randn(5, 20, generator=gen, dtype=torch.float64)
    prior = torch.tensor([10.0, 20.0, 30.0, 15.0, 25.0])
    alpha = 0.3
    graph = collaboration_graph(updates, prior, alpha)
    p = prior.double() / prior.sum()
    sim = F.cosine_similarity(updates.unsqueeze(1), updates.unsqueeze(0), dim=2)

    def objective(a: torch.Tensor, i: int) -> torch.Tensor:  # the paper's per-client QP
        return alpha * (a * a).sum(-1) - 2 * alpha * (a * p).sum(-1) - (a * sim[i]).sum(-1)

    candidates = torch.distributions.Dirichlet(torch.ones(5, dtype=torch.float64)).sample((2000,))
    for i in range(5):
        assert objective(graph[i], i) <= objective(candidates, i).min() + 1e-9


def test_pfedgraph_regulariser_target_combines_the_normalised_models_by_hand():
    models = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # unit vectors (0.6, 0.8) and (0, 1)
    graph = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    targets = regulariser_targets(models, graph)
    # Σ_j a_ij θ_j (the aggregate) would give (1.5, 3) for client 0; the target weighs directions only
    assert torch.allclose(targets, torch.tensor([[0.3, 0.9], [0.6, 0.8]], dtype=torch.float64))


def test_pfedgraph_aggregate_gives_each_client_its_graph_aggregate_and_target(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=pfedgraph", "data.clients=3")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    gen = torch.Generator().manual_seed(0)
    directions = [torch.randn(1, generator=gen) for _ in range(2)]
    uploads = {}
    for c, sign in enumerate([1.0, 1.0, -1.0]):  # clients 0 and 1 move alike, client 2 the other way
        state = extract(model)
        for k, v in state.items():
            if v.is_floating_point() and not k.endswith(("running_mean", "running_var")):
                state[k] = v + sign * 0.1 * directions[0] + (0.01 * c) * directions[1]
        uploads[c] = Message(state)
    new = method.aggregate(0, uploads, server)
    names = list(server["initial"])
    updates = torch.stack([flatten(subtract({k: uploads[c].tensors[k] for k in names}, server["initial"]), names)
                           for c in range(3)])
    sizes = torch.tensor([fed.method.ctx.client_train_sizes[c] for c in range(3)], dtype=torch.float64)
    graph = collaboration_graph(updates, sizes, 0.8)
    assert graph[0, 2] < graph[0, 1]  # the client moving the other way counts less
    key = "stages.0.0.weight"
    expected = sum(graph[0, j] * uploads[j].tensors[key].double() for j in range(3))
    assert torch.allclose(new["aggregates"][0][key].double(), expected, atol=1e-6)
    assert not torch.allclose(new["aggregates"][0][key], new["aggregates"][2][key])  # FedAvg: one model for all
    flat = torch.stack([flatten(uploads[c].tensors, names) for c in range(3)])
    assert torch.allclose(new["targets"][2].double(), regulariser_targets(flat, graph)[2], atol=1e-6)
    assert torch.equal(method.payload(1, 2, new).tensors[TARGET], new["targets"][2])
    assert method.eval_params(2, new, {}) is new["aggregates"][2]  # the client's own aggregate is evaluated


def test_pfedgraph_regulariser_turns_the_local_model_towards_its_target(tiny_config_data):
    cosines = {}
    for reg in (0.0, 50.0):
        fed = federation(tiny_config_data, "method.name=pfedgraph", f"method.hparams.cosine_reg={reg}")
        method, model = fed.method, fed.new_model()
        server = method.init_server(model)
        gen = torch.Generator().manual_seed(0)
        server["targets"][0] = torch.randn(server["targets"][0].shape, generator=gen)  # a direction far away
        result = method.local_update(model, 1, method.payload(1, 0, server), {}, fed.client_data(0),
                                     torch_generator(0, "test", 1, 0))
        load_state(model, result.upload.tensors)
        with torch.no_grad():
            cosines[reg] = float(cosine_to(model, server["targets"][0]))
    # without the regulariser (FedAvg's local step) the trained model stays nearly orthogonal to the target
    assert abs(cosines[0.0]) < 0.05 and cosines[50.0] > cosines[0.0] + 0.05


# -- FedRoD ----------------------------------------------------------------------------------------------------

def test_balanced_softmax_loss_by_hand():
    log_prior = log_class_prior(torch.tensor([0, 0, 1, 2]), num_classes=4)
    assert torch.allclose(log_prior[:3], torch.log(torch.tensor([0.5, 0.25, 0.25])))
    assert log_prior[3] == float("-inf")
    logits = torch.tensor([[1.0, 2.0, 0.0, 5.0]], requires_grad=True)
    loss = balanced_softmax_loss(logits, torch.tensor([1]), log_prior)
    by_hand = -(2 + math.log(0.25)) + math.log(0.5 * math.e + 0.25 * math.e**2 + 0.25)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, torch.tensor([1])).item(), rel=1e-3)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 3] == 0  # an absent class gets no mass


@pytest.mark.parametrize(("personal_heads", "personal_exits"), [("all", {0, 1, 2}), ("last", {2})])
def test_fedrod_prediction_is_generic_plus_personal_logits(tiny_config_data, personal_heads, personal_exits):
    fed = federation(tiny_config_data, "method.name=fedrod", f"method.hparams.personal_heads={personal_heads}")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    state = method.init_client(0, model, server)
    assert {int(k.split(".")[1]) for k in state["heads"]} == personal_exits
    # the personal heads start as a copy of the initial generic heads (PFLlib, FL-bench)
    assert all(torch.equal(v, server["model"][k]) for k, v in state["heads"].items())
    gen = torch.Generator().manual_seed(0)
    state = {"heads": {k: torch.randn(v.shape, generator=gen) for k, v in state["heads"].items()}}
    predict = method.eval_model(model, 0, server, state, fed.client_data(0), torch_generator(0, "eval"))
    x, _ = next(fed.batches.eval_batches(fed.client_data(0).test_idx, 16))
    with torch.no_grad():
        predicted = predict(x)
        generic = model(x)
        feats = model.features(x)
    for k in range(3):
        expected = generic[k]
        if k in personal_exits:
            expected = expected + F.linear(feats[k], state["heads"][f"exits.{k}.weight"],
                                           state["heads"][f"exits.{k}.bias"])
        assert torch.equal(predicted[k], expected)  # FedAvg's prediction would be the generic logits alone
    assert torch.equal(predicted[0], combined_logits(model, state["heads"], x)[0])


def test_fedrod_local_loss_is_balanced_softmax_plus_the_residual_loss_by_hand(tiny_config_data, monkeypatch):
    training = ShiftingTraining()
    monkeypatch.setattr(fedrod_module, "train_epochs", training)
    fed = federation(tiny_config_data, "method.name=fedrod")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    for k, v in server["model"].items():
        if is_head(k):
            server["model"][k] = torch.zeros_like(v)  # every generic head, and so every personal copy, gives 0
    state = method.init_client(2, model, server)
    method.local_update(model, 0, method.payload(0, 2, server), state, fed.client_data(2),
                        torch_generator(0, "test", 0, 2))
    load_state(model, server["model"])
    x, y = a_batch(fed, client=2, size=64)
    with torch.no_grad():
        loss = float(training.calls[0]["loss_fn"](model.eval(), x, y))
    # zero logits: the balanced softmax of exit k is −log p(y) under the client's class prior (plain
    # cross-entropy: log 10), and the residual loss of generic + personal = 0 is log 10; three exits of each
    counts = torch.bincount(fed.client_data(2).train_labels(), minlength=10).double()
    balanced = float(-(counts / counts.sum()).log()[y].mean())
    assert abs(balanced - math.log(10)) > 0.2
    assert loss == pytest.approx(3 * balanced + 3 * math.log(10), rel=1e-5)


def test_fedrod_personal_heads_learn_and_backbone_is_averaged(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=fedrod", "train.local_epochs=1")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    state = method.init_client(1, model, server)
    result = method.local_update(model, 0, method.payload(0, 1, server), state, fed.client_data(1),
                                 torch_generator(0, "test", 0, 1))
    assert all(not torch.equal(v, state["heads"][k]) for k, v in result.state["heads"].items())
    assert set(result.upload.tensors) == set(server["model"])  # personal heads never leave the client


# -- FedPAC ----------------------------------------------------------------------------------------------------

def test_fedpac_combination_weights_on_simplex_and_favour_similar_statistics():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    variances = torch.rand(4, generator=gen, dtype=torch.float64)
    for i in range(4):
        weights = combination_weights(h, variances, i)
        assert (weights >= 0).all() and weights.sum().item() == pytest.approx(1.0)
    # clients 0 and 1 share their statistics, client 2 is far: 0 splits between itself and its twin
    twins = torch.stack([h[0], h[0], h[0] + 10.0])
    weights = combination_weights(twins, torch.full((3,), 0.2, dtype=torch.float64), 0)
    assert torch.allclose(weights, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), atol=1e-4)


def mean_alignment(fed: Federation, model, client: int, prototypes: list[torch.Tensor]) -> float:
    data = fed.client_data(client)
    model.eval()
    x, y = next(fed.batches.eval_batches(data.train_idx, 10_000))
    with torch.no_grad():
        return sum(float(alignment_loss(f, y, c)) for f, c in zip(model.features(x), prototypes, strict=True))


def test_fedpac_aligns_every_sample_by_hand():
    # class 1 has no global prototype: its sample is aligned to the client's own prototype (0, 1), not dropped
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    global_prototypes = torch.tensor([[1.0, 1.0], [5.0, 5.0], [0.0, 0.0]])
    local_prototypes = torch.tensor([[9.0, 9.0], [0.0, 1.0], [9.0, 9.0]], dtype=torch.float64)
    targets = alignment_targets(global_prototypes, torch.tensor([True, False, True]), local_prototypes)
    assert torch.equal(targets, torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64))
    # squared residuals 1, 1 and 18 over 3 samples × 2 dimensions (dropping class 1 would give 19/4)
    assert float(alignment_loss(features, torch.tensor([0, 1, 2]), targets)) == pytest.approx(20 / 6)


def test_fedpac_takes_its_statistics_before_training_on_the_received_model(tiny_config_data, monkeypatch):
    monkeypatch.setattr(phases_module, "train_epochs", ShiftingTraining())
    fed = federation(tiny_config_data, "method.name=fedpac")
    method = fed.method
    server = method.init_server(fed.new_model())
    payload = method.payload(1, 0, server)
    result = method.local_update(fed.new_model(), 1, payload, {}, fed.client_data(0),
                                 torch_generator(0, "test", 1, 0))
    upload = result.upload.tensors
    received, trained = fed.new_model(), fed.new_model()
    load_state(received, method.eval_params(0, server, {}))
    load_state(trained, {k: v for k, v in upload.items() if k in trained.state_dict()})
    batch = method.ctx.train.batch_size
    before = feature_statistics(received, fed.client_data(0), 10, batch)
    after = feature_statistics(trained, fed.client_data(0), 10, batch)
    # h and V come from the received global extractor (as the authors' statistics_extraction before training);
    # the prototypes for the global ones from the trained model (their local_protos2)
    assert torch.equal(upload[VARIANCE], before.variances)
    assert not torch.allclose(after.variances, before.variances, rtol=1e-3)  # training did change the features
    for k in range(3):
        assert torch.equal(upload[f"{STATISTIC_PROTOTYPE}{k}"], before.prototypes[k].float())
        assert torch.equal(upload[f"{PROTOTYPE}{k}"], after.prototypes[k].float())


def test_fedpac_alignment_term_is_on_from_the_second_round_by_hand(tiny_config_data, monkeypatch):
    training = ShiftingTraining()
    monkeypatch.setattr(phases_module, "train_epochs", training)
    fed = federation(tiny_config_data, "method.name=fedpac", "method.hparams.align_weight=0.5")
    method = fed.method
    server = method.init_server(fed.new_model())
    gen = torch.Generator().manual_seed(0)
    server["prototypes"] = [torch.rand(p.shape, generator=gen) for p in server["prototypes"]]
    x, y = a_batch(fed)
    new_class = int(y[0])  # a class of the client's without a global prototype: its own prototype is the target
    server["class_counts"] = torch.ones_like(server["class_counts"])
    server["class_counts"][new_class] = 0
    for round in (0, 1):
        method.local_update(fed.new_model(), round, method.payload(round, 0, server), {}, fed.client_data(0),
                            torch_generator(0, "test", round, 0))
    round0_loss, round1_loss = training.calls[1]["loss_fn"], training.calls[3]["loss_fn"]  # the body phases
    model = fed.new_model()  # the received model: the initial one
    own = feature_statistics(model, fed.client_data(0), 10, method.ctx.train.batch_size).prototypes
    targets = [c.clone() for c in server["prototypes"]]
    for k, target in enumerate(targets):
        target[new_class] = own[k][new_class].float()
    with torch.no_grad():
        feats = model.features(x)
        ce = torch.stack(exit_ce_losses(model(x), y)).sum()
        align = sum((f - c[y]).pow(2).mean() for f, c in zip(feats, targets, strict=True))
        assert float(round0_loss(model, x, y)) == pytest.approx(float(ce), rel=1e-6)
        assert float(round1_loss(model, x, y)) == pytest.approx(float(ce + 0.5 * align), rel=1e-6)


def test_fedpac_alignment_term_falls_during_local_training(tiny_config_data):
    after = {}
    for weight in (0.0, 5.0):
        fed = federation(tiny_config_data, "method.name=fedpac", f"method.hparams.align_weight={weight}")
        method, model = fed.method, fed.new_model()
        server = method.init_server(model)
        gen = torch.Generator().manual_seed(0)
        server["prototypes"] = [torch.rand(p.shape, generator=gen) for p in server["prototypes"]]
        server["class_counts"] = torch.ones_like(server["class_counts"])
        load_state(model, method.eval_params(0, server, {}))
        before = mean_alignment(fed, model, 0, server["prototypes"])
        result = method.local_update(model, 1, method.payload(1, 0, server), {}, fed.client_data(0),
                                     torch_generator(0, "test", 1, 0))
        load_state(model, {k: v for k, v in result.upload.tensors.items() if k in model.state_dict()})
        after[weight] = mean_alignment(fed, model, 0, server["prototypes"])
    assert after[5.0] < 0.8 * before
    assert after[5.0] < 0.8 * after[0.0]  # the regulariser, not the cross-entropy, pulls the features in


def test_fedpac_server_averages_prototypes_by_class_counts(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=fedpac", "data.clients=2", "train.local_epochs=1")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    results = {c: method.local_update(model, 0, method.payload(0, c, server), {}, fed.client_data(c),
                                      torch_generator(0, "test", 0, c)) for c in range(2)}
    new = method.aggregate(0, {c: r.upload for c, r in results.items()}, server)
    counts = [r.upload.tensors["class_counts"].double() for r in results.values()]
    protos = [r.upload.tensors["prototype.2"].double() for r in results.values()]
    total = (counts[0] + counts[1]).clamp_min(1)[:, None]
    expected = (protos[0] * counts[0][:, None] + protos[1] * counts[1][:, None]) / total
    assert torch.allclose(new["prototypes"][2].double(), expected, atol=1e-5)
    assert torch.equal(new["class_counts"], (counts[0] + counts[1]).long())


def test_fedpac_aggregate_combines_the_heads_by_the_exact_qp(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=fedpac", "data.clients=3")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    counts = torch.full((method.ctx.num_classes,), 5, dtype=torch.long)
    uploads = {}
    for c, shift in enumerate([0.0, 0.0, 10.0]):  # clients 0 and 1 have equal feature statistics, 2 is far away
        state = {k: v + c if v.is_floating_point() else v for k, v in extract(model).items()}
        statistics = {f"{STATISTIC_PROTOTYPE}{k}": torch.ones(method.ctx.num_classes, head.in_features) + shift
                      for k, head in enumerate(model.exits)}
        # the post-training prototypes (for the global ones) are alike: h must come from the statistics above
        prototypes = {f"{PROTOTYPE}{k}": torch.ones(method.ctx.num_classes, head.in_features)
                      for k, head in enumerate(model.exits)}
        uploads[c] = Message({**state, **statistics, **prototypes, CLASS_COUNTS: counts,
                              VARIANCE: torch.full((3,), 0.2, dtype=torch.float64)})
    new = method.aggregate(0, uploads, server)
    # every client's class prior is uniform (0.1), so h_j = 0.1·statistics and for client 0 the QP matrix is
    # diagonal: diag(V) + ‖h_0 − h_j‖², with ‖h_0 − h_2‖² = 10 classes × 64 features × (0.1·10)² = 640; its
    # minimiser on the simplex is ∝ 1/M_jj = (5, 5, 1/640.2). FedAvg would average all three by train size.
    far = (1 / 640.2) / (10 + 1 / 640.2)
    alpha = torch.tensor([(1 - far) / 2, (1 - far) / 2, far], dtype=torch.float64)
    bias = uploads[0].tensors["exits.2.bias"]
    assert torch.allclose(new["heads"][0]["exits.2.bias"].double(), bias.double() + alpha[1] + 2 * alpha[2],
                          atol=1e-6)
    assert model.exits[2].in_features == 64
    # client 2: M = [[640.2, 640, 0], [640, 640.2, 0], [0, 0, 0.2]]; by symmetry α = (a, a, 1 − 2a), and
    # d/da [a²(4·640 + 0.4) + 0.2(1 − 2a)²] = 0 gives a = 0.1/640.3
    a = 0.1 / 640.3
    assert torch.allclose(new["heads"][2]["exits.2.bias"].double(), bias.double() + a + 2 * (1 - 2 * a), atol=1e-6)
    sizes = [method.ctx.client_train_sizes[c] for c in range(3)]
    shared_shift = sum(c * n for c, n in enumerate(sizes)) / sum(sizes)
    assert torch.allclose(new["shared"]["stages.0.0.weight"], uploads[0].tensors["stages.0.0.weight"] + shared_shift,
                          atol=1e-5)


@pytest.mark.parametrize("personal_heads", ["all", "last"])
def test_fedpac_head_phase_trains_only_the_personal_heads_first(tiny_config_data, monkeypatch, personal_heads):
    import bench.methods.phases as phases

    calls = []
    real = phases.train_heads

    def recording(model, data, gen, train, heads, epochs, batchnorm):
        before = extract(model)
        loss = real(model, data, gen, train, heads, epochs, batchnorm)
        calls.append((before, extract(model), heads))
        return loss

    monkeypatch.setattr(phases, "train_heads", recording)
    fed = federation(tiny_config_data, "method.name=fedpac", f"method.hparams.personal_heads={personal_heads}")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    result = method.local_update(model, 0, method.payload(0, 0, server), {}, fed.client_data(0),
                                 torch_generator(0, "test", 0, 0))
    (before, after, heads), = calls
    personal = {k for k in before if is_head(k) and (personal_heads == "all" or k.startswith("exits.2."))}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    weights = {k for k in changed if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert weights == personal  # FedAvg-style training would move the backbone too
    assert any(k.endswith("running_mean") for k in changed)  # BatchNorm in train mode, as the authors
    assert set(server["heads"][0]) == personal
    if personal_heads == "last":  # the shallow heads are shared: averaged with the backbone
        assert "exits.0.weight" in server["shared"] and "exits.0.weight" in result.upload.tensors


# -- every method, end to end ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fedamp", "pfedgraph", "fedrod", "fedpac"])
def test_tracked_run_beats_chance(tracking_uri, tiny_config_data, method):
    config = validate_config(apply_overrides(tiny_config_data, [f"method.name={method}", "train.rounds=2"]))
    result = run_experiment(config)
    run = MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["family"] == "pfl"
    assert result.evaluation.metrics["test/acc/mean"] > 0.3  # 10 classes: chance is 0.1
    assert result.evaluation.metrics["test/acc/exit_3"] > 0.5
