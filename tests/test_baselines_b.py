"""FedAMP, pFedGraph, FedRoD and FedPAC: each one's own rule on constructed cases, and a tracked run of each."""

import math

import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from baselines.fedamp import attention_weights
from baselines.fedpac import alignment_loss, combination_weights
from baselines.fedrod import balanced_softmax_loss, combined_logits, log_class_prior
from baselines.pfedgraph import collaboration_graph
from bench.config import apply_overrides, validate_config
from bench.fed.federation import Federation, build_federation
from bench.ground.rng import torch_generator
from bench.ground.tensor_ops import class_prototypes, minimize_quadratic_on_simplex
from bench.methods.api import Message, load_state
from bench.track.runner import run_experiment


def federation(data: dict, *overrides: str) -> Federation:
    return build_federation(validate_config(apply_overrides(data, list(overrides))))


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


def test_quadratic_on_simplex_matches_closed_forms():
    # diagonal M: the minimiser is proportional to 1/M_jj
    w = minimize_quadratic_on_simplex(torch.diag(torch.tensor([1.0, 2.0, 4.0])))
    assert torch.allclose(w, torch.tensor([4 / 7, 2 / 7, 1 / 7], dtype=torch.float64), atol=1e-6)
    # a free coordinate takes all the mass (a vertex of the simplex)
    w = minimize_quadratic_on_simplex(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(w, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-6)


# -- FedAMP ----------------------------------------------------------------------------------------------------

def test_fedamp_attention_favours_the_similar_client():
    weights = attention_weights(two_alike_one_apart(), self_weight=0.4, sigma=10.0)
    assert_rows_on_simplex(weights)
    assert torch.allclose(weights.diagonal(), torch.full((3,), 0.4, dtype=torch.float64))
    assert weights[0, 1] > 0.59 and weights[1, 0] > 0.59  # nearly all of the 0.6 left goes to the twin
    assert weights[0, 2] < 0.01 and weights[1, 2] < 0.01
    assert weights[2, 0].item() == pytest.approx(weights[2, 1].item(), rel=0.05)  # the outsider: equally far from both


def test_fedamp_cloud_models_mix_similar_clients_only(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=fedamp", "data.clients=3")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    uploads = {}
    for c, offset in enumerate([0.0, 1e-3, 30.0]):  # clients 0 and 1 nearly identical, client 2 far away
        state = dict(server["cloud"][c])
        state["exits.0.bias"] = state["exits.0.bias"] + offset
        uploads[c] = Message(state)
    cloud = method.aggregate(0, uploads, server)["cloud"]
    bias = [u.tensors["exits.0.bias"] for u in uploads.values()]
    assert torch.allclose(cloud[0]["exits.0.bias"], 0.5 * bias[0] + 0.5 * bias[1], atol=1e-3)
    assert torch.allclose(cloud[2]["exits.0.bias"], 0.5 * bias[2] + 0.25 * (bias[0] + bias[1]), atol=1e-3)


# -- pFedGraph --------------------------------------------------------------------------------------------------

def test_pfedgraph_graph_favours_the_similar_client():
    graph = collaboration_graph(two_alike_one_apart(), torch.ones(3), alpha=0.8)
    assert_rows_on_simplex(graph)
    # p + s/(2α) = 1/3 + [1, 1, -1]/1.6 → the projection splits the mass between the twins
    assert torch.allclose(graph[0], torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), atol=1e-3)
    assert graph[2, 2] > 0.9


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
    assert all((v == 0).all() for v in state["heads"].values())  # a new client predicts with the generic heads
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
        assert torch.equal(predicted[k], expected)
    assert torch.equal(predicted[0], combined_logits(model, state["heads"], x)[0])


def test_fedrod_personal_heads_learn_and_backbone_is_averaged(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=fedrod", "train.local_epochs=1")
    method, model = fed.method, fed.new_model()
    server = method.init_server(model)
    state = method.init_client(1, model, server)
    result = method.local_update(model, 0, method.payload(0, 1, server), state, fed.client_data(1),
                                 torch_generator(0, "test", 0, 1))
    assert all(v.abs().sum() > 0 for v in result.state["heads"].values())
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
    known = torch.ones(fed.method.ctx.num_classes, dtype=torch.bool)
    with torch.no_grad():
        return sum(float(alignment_loss(f, y, c, known)) for f, c in zip(model.features(x), prototypes, strict=True))


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
        result = method.local_update(model, 0, method.payload(0, 0, server), {}, fed.client_data(0),
                                     torch_generator(0, "test", 0, 0))
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


# -- every method, end to end ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fedamp", "pfedgraph", "fedrod", "fedpac"])
def test_tracked_run_beats_chance(tracking_uri, tiny_config_data, method):
    config = validate_config(apply_overrides(tiny_config_data, [f"method.name={method}", "train.rounds=2"]))
    result = run_experiment(config)
    run = MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["family"] == "pfl"
    assert result.evaluation.metrics["test/acc/mean"] > 0.3  # 10 classes: chance is 0.1
    assert result.evaluation.metrics["test/acc/exit_3"] > 0.5
