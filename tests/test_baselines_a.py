"""FedProx, FedPer, FedRep, FedBABU and Ditto: each does what its paper says, not FedAvg by another name."""

import pytest
import torch
from helpers import DEBIAN_FMNIST, federation, fmnist_config
from mlflow.tracking import MlflowClient
from torch import nn

import baselines.ditto as ditto_module
import baselines.fedper as fedper_module
import baselines.local as local_module
import bench.methods.phases as phases_module
from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.fed.federation import Federation
from bench.ground.rng import torch_generator
from bench.ground.tensor_ops import flatten, subtract
from bench.methods.api import LocalResult, Message
from bench.methods.losses import sum_ce_loss
from bench.methods.model_state import extract, is_head
from bench.methods.personalization import frozen, personal_keys, proximal_term
from bench.methods.training import train_epochs
from bench.track.runner import run_experiment

METHODS = ["fedprox", "fedper", "fedrep", "fedbabu", "ditto"]
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")



def local_update(fed: Federation, client: int, server: dict, state: dict | None = None,
                 model: nn.Module | None = None) -> LocalResult:
    """Client ``client``'s round-0 update, from its initial state unless ``state`` is given."""
    method = fed.method
    state = method.init_client(client, fed.new_model(), server) if state is None else state
    return method.local_update(model or fed.new_model(), 0, method.payload(0, client, server), state,
                               fed.client_data(client), torch_generator(0, "local-update", 0, client))


def in_backbone(name: str) -> bool:
    return not is_head(name)


def copied(tensors: dict) -> dict:
    return {k: v.detach().clone() for k, v in tensors.items()}


def distance(a: dict, b: dict) -> float:
    """Euclidean distance over the trainable parameters (BatchNorm statistics left out)."""
    return float(flatten(subtract({k: v for k, v in a.items() if not k.endswith(BUFFER_SUFFIXES)}, b)).norm())


def history_without_time(sim: Simulation) -> list[dict]:
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in sim.history]


class ShiftingTraining:
    """A stand-in for ``train_epochs`` whose outcome is known by hand: every parameter it trains moves by
    ``client + 1`` per epoch (client 0: +1, client 1: +2, ...). It records each call's loss function, epochs and
    trained parameters, so a test can also evaluate the objective a method built."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, model, data, gen, train, loss_fn, params=None, epochs=None, lr=None, after_step=None):
        chosen = list(model.parameters()) if params is None else list(params)
        n_epochs = train.local_epochs if epochs is None else epochs
        with torch.no_grad():
            for p in chosen:
                p.add_(float((data.client + 1) * n_epochs))
        self.calls.append({"loss_fn": loss_fn, "epochs": n_epochs, "params": chosen})
        return 0.0


def shifted(tensors: dict, shift: float) -> dict:
    """The floating-point entries of ``tensors`` moved by ``shift`` (integer ones as they are)."""
    return {k: v + shift if v.is_floating_point() else v for k, v in tensors.items()}


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def moved_by(model: nn.Module, delta: float) -> nn.Module:
    """``model`` with every parameter moved by ``delta``, in eval mode (its loss then depends on it alone)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(delta)
    return model.eval()


def a_batch(fed: Federation, client: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return next(fed.batches.eval_batches(fed.client_data(client).train_idx, size))


# -- Local and FedAvg ------------------------------------------------------------------------------------------

def test_local_clients_continue_from_their_own_model(tiny_config_data, monkeypatch):
    monkeypatch.setattr(local_module, "train_epochs", ShiftingTraining())
    fed = federation(tiny_config_data, "method.name=local")
    method, initial = fed.method, extract(fed.new_model())
    server = method.init_server(fed.new_model())
    state = method.init_client(1, fed.new_model(), server)
    for round in range(2):
        result = method.local_update(fed.new_model(), round, method.payload(round, 1, server), state,
                                     fed.client_data(1), torch_generator(0, "test", round, 1))
        state = result.state
    # client 1 moves +2 per epoch, 2 epochs a round, 2 rounds: +8 from its own model; a client that restarted
    # every round from the common model (FedAvg's round 0) would end at +4
    key = "stages.0.0.weight"
    assert torch.allclose(method.eval_params(1, server, state)[key], initial[key] + 8.0)
    assert result.upload.nbytes == 0  # nothing is communicated


def test_fedavg_averages_the_uploads_weighted_by_train_size(tiny_config_data):
    fed = federation(tiny_config_data)
    method = fed.method
    server = method.init_server(fed.new_model())
    n0, n3 = method.ctx.client_train_sizes[0], method.ctx.client_train_sizes[3]  # 102 and 207 images
    uploads = {0: Message(shifted(server["model"], 1.0)), 3: Message(shifted(server["model"], 3.0))}
    new = method.aggregate(0, uploads, server)
    expected = (1.0 * n0 + 3.0 * n3) / (n0 + n3)  # 2.34
    assert abs(expected - 2.0) > 0.1  # the unweighted mean would give 2
    key = "stages.1.0.weight"
    assert torch.allclose(new["model"][key], server["model"][key] + expected, atol=1e-5)


# -- FedProx -------------------------------------------------------------------------------------------------

def test_proximal_term_is_half_mu_squared_distance_and_its_gradient_pulls_to_the_reference():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    reference = {"weight": torch.zeros(2, 3), "bias": torch.tensor([0.5, 0.5])}
    term = proximal_term(model, reference, 0.2)
    term.backward()
    # ‖Δ‖² = 1 + 4 + 9 + 0 + 1 + 0.25 + 0 + 1 = 16.25
    assert float(term) == pytest.approx(0.1 * 16.25)
    assert torch.allclose(model.weight.grad, 0.2 * model.weight.detach())
    assert torch.allclose(model.bias.grad, torch.tensor([0.0, -0.2]))
    with pytest.raises(ValueError, match="no parameter"):
        proximal_term(model, {"other": torch.zeros(1)}, 0.2)


def test_fedprox_with_mu_zero_reproduces_fedavg_bitwise(tiny_config_data):
    overrides = ["train.rounds=2", "train.local_epochs=1"]
    fedavg = Simulation(validate_config(apply_overrides(tiny_config_data, overrides)))
    fedprox = Simulation(validate_config(apply_overrides(
        tiny_config_data, [*overrides, "method.name=fedprox", "method.hparams.mu=0"])))
    fedavg.run()
    fedprox.run()
    assert history_without_time(fedprox) == history_without_time(fedavg)
    for key, value in fedavg.state.server["model"].items():
        assert torch.equal(fedprox.state.server["model"][key], value), key


def test_fedprox_objective_adds_half_mu_times_the_squared_distance_to_the_global_model(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=fedprox", "method.hparams.mu=0.5")
    method = fed.method
    server = method.init_server(fed.new_model())
    model = moved_by(fed.new_model(), 0.1)
    x, y = a_batch(fed)
    with torch.no_grad():
        extra = method.local_objective(method.payload(0, 0, server))(model, x, y) - sum_ce_loss(model, x, y)
    # μ/2·‖θ − θ_global‖² with every parameter 0.1 away: 0.25·0.01·P (FedAvg's objective adds nothing)
    assert float(extra) == pytest.approx(0.25 * 0.01 * parameter_count(model), rel=1e-4)


def test_fedprox_keeps_the_local_update_closer_to_the_global_model(tiny_config_data):
    fedavg = federation(tiny_config_data, "method.name=fedavg")
    fedprox = federation(tiny_config_data, "method.name=fedprox", "method.hparams.mu=1.0")
    server = fedavg.method.init_server(fedavg.new_model())
    plain = distance(local_update(fedavg, 0, server).upload.tensors, server["model"])
    proximal = distance(local_update(fedprox, 0, server).upload.tensors, server["model"])
    assert 0 < proximal < 0.8 * plain


# -- personal heads: FedPer (and the "last" option) ----------------------------------------------------------

@pytest.mark.parametrize("personal_heads, personal_exits", [("all", {0, 1, 2}), ("last", {2})])
def test_fedper_shares_the_backbone_and_keeps_personal_heads(tiny_config_data, personal_heads,
                                                             personal_exits):
    fed = federation(tiny_config_data, "method.name=fedper", f"method.hparams.personal_heads={personal_heads}")
    method = fed.method
    server = method.init_server(fed.new_model())
    results = {c: local_update(fed, c, server) for c in (0, 1)}
    assert all(is_head(k) for k in results[0].state["heads"])
    assert {int(k.split(".")[1]) for k in results[0].state["heads"]} == personal_exits
    assert not set(results[0].upload.tensors) & set(results[0].state["heads"])  # heads are never uploaded
    server = method.aggregate(0, {c: r.upload for c, r in results.items()}, server)
    params = {c: method.eval_params(c, server, results[c].state) for c in (0, 1)}
    assert set(params[0]) == set(fed.new_model().state_dict())
    for key in params[0]:
        personal = is_head(key) and int(key.split(".")[1]) in personal_exits
        assert torch.equal(params[0][key], params[1][key]) == (not personal), key


def test_fedper_averages_the_backbone_and_keeps_each_clients_heads_by_hand(tiny_config_data, monkeypatch):
    monkeypatch.setattr(fedper_module, "train_epochs", ShiftingTraining())
    fed = federation(tiny_config_data, "method.name=fedper")
    method = fed.method
    server = method.init_server(fed.new_model())
    initial = extract(fed.new_model())
    results = {c: local_update(fed, c, server) for c in (0, 1)}  # client 0 moves +2, client 1 +4 (2 epochs)
    server = method.aggregate(0, {c: r.upload for c, r in results.items()}, server)
    n0, n1 = method.ctx.client_train_sizes[:2]
    backbone, head = "stages.0.0.weight", "exits.1.weight"
    for c, own in ((0, 2.0), (1, 4.0)):
        params = method.eval_params(c, server, results[c].state)
        assert torch.allclose(params[backbone], initial[backbone] + (2.0 * n0 + 4.0 * n1) / (n0 + n1), atol=1e-5)
        assert torch.allclose(params[head], initial[head] + own)  # FedAvg would average the heads as well


def test_personal_keys_selects_every_head_or_only_the_last():
    names = ["stages.0.0.weight", "exits.0.weight", "exits.1.bias", "exits.2.weight"]
    assert [n for n in names if personal_keys("all", 3)(n)] == names[1:]
    assert [n for n in names if personal_keys("last", 3)(n)] == ["exits.2.weight"]


# -- FedRep --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("head_batchnorm", ["train", "eval"])
def test_fedrep_trains_heads_with_the_backbone_fixed_then_the_backbone_with_heads_fixed(tiny_config_data,
                                                                                       monkeypatch, head_batchnorm):
    phases = []

    def recording_train_epochs(model, *args, **kwargs):
        before = extract(model)
        loss = train_epochs(model, *args, **kwargs)
        phases.append((before, extract(model)))
        return loss

    monkeypatch.setattr(phases_module, "train_epochs", recording_train_epochs)
    fed = federation(tiny_config_data, "method.name=fedrep", "method.hparams.head_epochs=1",
                     f"method.hparams.head_batchnorm={head_batchnorm}")
    server = fed.method.init_server(fed.new_model())
    model = fed.new_model()
    result = local_update(fed, 0, server, model=model)
    assert len(phases) == 2
    (head_before, head_after), (body_before, body_after) = phases

    def changed(before, after, keep):
        return {k for k in before if keep(k) and not torch.equal(before[k], after[k])}

    backbone = {k for k in head_before if in_backbone(k)}
    statistics = {k for k in backbone if k.endswith(BUFFER_SUFFIXES)}
    head_keys = {k for k in head_before if is_head(k)}
    # the backbone's weights never move in the head phase; its BatchNorm statistics do in train mode (the
    # authors' model.train()), and stay as they were in eval mode
    assert changed(head_before, head_after, in_backbone) == (statistics if head_batchnorm == "train" else set())
    assert changed(head_before, head_after, is_head) == head_keys
    assert changed(body_before, body_after, is_head) == set()
    assert changed(body_before, body_after, in_backbone) == backbone  # FedAvg: one phase moving everything
    assert all(p.requires_grad for p in model.parameters())  # the freezing is undone
    assert set(result.upload.tensors) == set(head_before) - head_keys


def test_fedrep_trains_the_heads_for_head_epochs_then_the_body_for_body_epochs_by_hand(tiny_config_data,
                                                                                       monkeypatch):
    training = ShiftingTraining()
    monkeypatch.setattr(phases_module, "train_epochs", training)
    fed = federation(tiny_config_data, "method.name=fedrep", "method.hparams.head_epochs=3",
                     "method.hparams.body_epochs=1")
    server = fed.method.init_server(fed.new_model())
    initial = extract(fed.new_model())
    model = fed.new_model()
    result = local_update(fed, 0, server, model=model)
    trained = extract(model)
    # client 0 moves +1 per epoch: heads +3 (their phase), backbone +1 (its phase); FedAvg's single phase of
    # train.local_epochs = 2 would move both by 2
    assert torch.allclose(trained["exits.0.weight"], initial["exits.0.weight"] + 3.0)
    assert torch.allclose(result.upload.tensors["stages.0.0.weight"], initial["stages.0.0.weight"] + 1.0)
    assert [call["epochs"] for call in training.calls] == [3, 1]


def test_head_phase_normalises_with_batch_statistics_in_train_mode(tiny_config_data):
    fed = federation(tiny_config_data, "method.name=fedrep")
    model = fed.new_model()
    x, y = next(fed.batches.eval_batches(fed.client_data(0).train_idx, 64))
    model.train()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.fill_(5.0)  # stored statistics far from the batch's
    losses = {mode: float(phases_module.head_loss(mode)(model, x, y)) for mode in ("train", "eval")}
    model.train()
    with torch.no_grad():
        expected = torch.stack([nn.functional.cross_entropy(z, y) for z in model(x)]).sum()
    assert losses["train"] == pytest.approx(float(expected), rel=1e-5)  # features normalised by the batch
    assert abs(losses["eval"] - losses["train"]) > 0.1  # the stored statistics give other features
    with pytest.raises(ValueError, match="head_batchnorm"):
        phases_module.head_loss("frozen")


@pytest.mark.parametrize("method", ["fedrep", "fedbabu"])
def test_personal_heads_last_shares_and_trains_the_shallow_heads(tiny_config_data, method):
    fed = federation(tiny_config_data, f"method.name={method}", "method.hparams.personal_heads=last")
    server = fed.method.init_server(fed.new_model())
    result = local_update(fed, 0, server)
    assert set(result.state["heads"]) == {"exits.2.weight", "exits.2.bias"}
    shallow = {k for k in server["shared"] if is_head(k)}
    assert shallow == {"exits.0.weight", "exits.0.bias", "exits.1.weight", "exits.1.bias"}
    # the shallow heads are uploaded and trained in the body phase; under "all" they would stay on the client
    assert all(not torch.equal(result.upload.tensors[k], server["shared"][k]) for k in shallow)
    if method == "fedbabu":  # the last head stays frozen at its initial value
        initial = fed.method.init_client(0, fed.new_model(), server)["heads"]
        assert all(torch.equal(result.state["heads"][k], v) for k, v in initial.items())


# -- FedBABU -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("finetune", ["head", "full"])
def test_fedbabu_freezes_heads_in_training_and_fine_tunes_them_at_evaluation(tiny_config_data, finetune):
    fed = federation(tiny_config_data, "method.name=fedbabu", f"method.hparams.finetune={finetune}",
                     "method.hparams.finetune_epochs=1")
    method = fed.method
    server = method.init_server(fed.new_model())
    initial_heads = method.init_client(0, fed.new_model(), server)["heads"]
    model = fed.new_model()
    result = local_update(fed, 0, server, model=model)
    trained = extract(model)
    assert all(torch.equal(trained[k], v) for k, v in initial_heads.items())  # frozen during training
    assert all(torch.equal(result.state["heads"][k], v) for k, v in initial_heads.items())
    assert distance(result.upload.tensors, server["shared"]) > 0  # the body did learn

    server = method.aggregate(0, {0: result.upload}, server)
    stored = (copied(server["shared"]), copied(result.state["heads"]))
    scratch = fed.new_model()
    predictor = method.eval_model(scratch, 0, server, result.state, fed.client_data(0),
                                  torch_generator(0, "evaluation", 1, 0))
    tuned = extract(predictor)
    assert all(not torch.equal(tuned[k], v) for k, v in initial_heads.items())  # fine-tuning moved the heads
    backbone_moved = distance({k: v for k, v in tuned.items() if in_backbone(k)}, server["shared"]) > 0
    assert backbone_moved == (finetune == "full")
    assert all(torch.equal(server["shared"][k], v) for k, v in stored[0].items())  # evaluation is pure
    assert all(torch.equal(result.state["heads"][k], v) for k, v in stored[1].items())


def test_fedbabu_trains_only_the_body_and_fine_tunes_the_whole_model_by_hand(tiny_config_data, monkeypatch):
    monkeypatch.setattr(phases_module, "train_epochs", ShiftingTraining())
    fed = federation(tiny_config_data, "method.name=fedbabu", "method.hparams.finetune_epochs=3")
    method = fed.method
    assert method.hp.finetune == "full"  # the paper's experiments fine-tune the whole network
    server = method.init_server(fed.new_model())
    initial = extract(fed.new_model())
    model = fed.new_model()
    result = local_update(fed, 0, server, model=model)
    trained = extract(model)
    # client 0, 2 local epochs of +1: the body moves by 2, the heads not at all (FedAvg would move them by 2 too)
    assert torch.equal(trained["exits.2.weight"], initial["exits.2.weight"])
    assert torch.allclose(trained["stages.2.0.weight"], initial["stages.2.0.weight"] + 2.0)
    server = method.aggregate(0, {0: result.upload}, server)
    tuned = extract(method.eval_model(fed.new_model(), 0, server, result.state, fed.client_data(0),
                                      torch_generator(0, "evaluation", 1, 0)))
    # 3 fine-tuning epochs move everything by 3 (without fine-tuning, FedAvg's evaluation, by 0)
    assert torch.allclose(tuned["exits.2.weight"], initial["exits.2.weight"] + 3.0)
    assert torch.allclose(tuned["stages.2.0.weight"], initial["stages.2.0.weight"] + 5.0)


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_fedbabu_early_exits_rest_on_the_fine_tuning(tiny_config_data):
    """On Fashion-MNIST (2,400 images, 10 clients, α = 0.3, 8 rounds) FedBABU's frozen random shallow heads give
    exit 1 at chance until fine-tuning trains them (see the docstring; with the default fine-tuning FedBABU reads
    52.4% mean accuracy there against FedAvg's 35.2%)."""
    data = fmnist_config(tiny_config_data, "train.rounds=8", "data.alpha=0.3")
    fedavg = Simulation(validate_config(data))
    fedavg.run()
    untuned = Simulation(validate_config(apply_overrides(data, ["method.name=fedbabu",
                                                                "method.hparams.finetune_epochs=0"])))
    untuned.run()
    fedavg_acc, fedbabu_acc = fedavg.last_eval.metrics, untuned.last_eval.metrics
    assert fedbabu_acc["test/acc/exit_1"] < 0.13  # 10.4%: chance with 10 classes
    assert fedavg_acc["test/acc/exit_1"] > 0.2  # 24.1%
    assert fedbabu_acc["test/acc/exit_2"] < fedavg_acc["test/acc/exit_2"] - 0.04  # 22.3% against 29.4%


# -- FedAvg+FT -----------------------------------------------------------------------------------------------

def test_fedavg_fine_tunes_a_copy_of_the_global_model_before_evaluation(tiny_config_data):
    tuned = {}
    for epochs in (0, 1):
        fed = federation(tiny_config_data, "method.name=fedavg", f"method.hparams.finetune_epochs={epochs}")
        server = fed.method.init_server(fed.new_model())
        stored = copied(server["model"])
        predictor = fed.method.eval_model(fed.new_model(), 0, server, {}, fed.client_data(0),
                                          torch_generator(0, "evaluation", 1, 0))
        tuned[epochs] = distance(extract(predictor), server["model"])
        assert all(torch.equal(server["model"][k], v) for k, v in stored.items())  # evaluation is pure
    assert tuned[0] == 0.0 and tuned[1] > 0.1  # plain FedAvg evaluates the global model itself


# -- Ditto ---------------------------------------------------------------------------------------------------

def test_ditto_personal_model_is_pulled_towards_the_global_model_as_lambda_grows(tiny_config_data):
    fedavg = federation(tiny_config_data, "method.name=fedavg")
    trained_global = {"model": local_update(fedavg, 1, fedavg.method.init_server(fedavg.new_model()))
                      .upload.tensors}
    distances = {}
    for lam in (0.0, 2.0):
        fed = federation(tiny_config_data, "method.name=ditto", f"method.hparams.lam={lam}")
        result = local_update(fed, 0, trained_global)
        personal = fed.method.eval_params(0, trained_global, result.state)
        assert distance(personal, result.upload.tensors) > 0  # two different models
        distances[lam] = distance(personal, trained_global["model"])
    assert distances[2.0] < 0.8 * distances[0.0]


def test_ditto_trains_and_evaluates_a_personal_model_pulled_to_the_global_one_by_hand(tiny_config_data,
                                                                                     monkeypatch):
    training = ShiftingTraining()
    monkeypatch.setattr(ditto_module, "train_epochs", training)
    fed = federation(tiny_config_data, "method.name=ditto", "method.hparams.lam=0.5",
                     "method.hparams.personal_epochs=1")
    method = fed.method
    server = method.init_server(fed.new_model())
    initial = extract(fed.new_model())
    result = local_update(fed, 0, server)
    server = method.aggregate(0, {0: result.upload}, server)
    key = "stages.0.0.weight"
    # the global model trains 2 epochs (+2) and is averaged; the personal one trains 1 epoch (+1) and is evaluated
    assert torch.allclose(server["model"][key], initial[key] + 2.0)
    assert torch.allclose(method.eval_params(0, server, result.state)[key], initial[key] + 1.0)
    # the personal objective adds λ/2·‖v − w‖²: 0.25·0.01·P with every parameter 0.1 from the global model
    model, (x, y) = moved_by(fed.new_model(), 0.1), a_batch(fed)
    with torch.no_grad():
        extra = training.calls[1]["loss_fn"](model, x, y) - sum_ce_loss(model, x, y)
    assert float(extra) == pytest.approx(0.25 * 0.01 * parameter_count(model), rel=1e-4)


# -- every method, end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_tracking_uri(tmp_path_factory):
    """One isolated MLflow store for the module: creating a store costs seconds, so the smoke runs share one."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.mark.parametrize("method", METHODS)
def test_method_learns_through_the_tracked_run_path(shared_tracking_uri, tiny_config_data, method):
    data = apply_overrides(tiny_config_data, [f"method.name={method}", "train.rounds=2",
                                              "run.checkpoint_every=0"])
    result = run_experiment(validate_config(data))
    assert MlflowClient(shared_tracking_uri).get_run(result.run_id).data.tags["method"] == method
    metrics = result.evaluation.metrics
    assert metrics["test/acc/mean"] > 0.3  # 10 classes: chance is 0.1
    assert metrics["test/acc/exit_3"] > 0.3


def test_frozen_restores_requires_grad_even_on_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[1].weight.requires_grad_(False)
    with pytest.raises(RuntimeError), frozen(model, lambda name: name.startswith("0.")):
        assert not model[0].weight.requires_grad
        raise RuntimeError("boom")
    assert model[0].weight.requires_grad and model[0].bias.requires_grad and not model[1].weight.requires_grad
