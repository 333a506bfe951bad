"""pFedGraph — Ye, Ni, Wu, Chen & Wang, "Personalized Federated Learning with Inferred Collaboration
Graphs", ICML 2023.

The server infers a collaboration graph from the clients' models and gives every client its own aggregate.

Graph inference. For client i the row ``a_i`` of the graph solves, over the probability simplex,

    min_a  α‖a‖² − 2α pᵀa − s_iᵀa   ⇔   min_a  α‖a − (p + s_i/(2α))‖²

where ``p`` is the data-size prior (train sizes of the round's clients, normalised), ``s_ij`` the cosine
similarity of the model updates ``θ_j − θ_0`` (parameters only, relative to the initial global model, as in
the authors' code), with every similarity above 0.9 taken as 1 (the authors' ``if diff < -0.9: diff = -1.0``:
near-identical updates count as identical), and ``α`` the hyperparameter that keeps the graph from
concentrating on a few neighbours. The closed form is the Euclidean projection ``a_i = Π_simplex(p + s_i/(2α))``
(:func:`collaboration_graph`).

Aggregation and local training. Client i receives ``θ̄_i = Σ_j a_ij θ_j`` and trains from it with the local
loss plus ``λ·(1 − cos(θ, t_i))`` over the parameters, towards the regulariser target
``t_i = Σ_j a_ij θ_j/‖θ_j‖``: the graph's combination of the neighbours' *normalised* parameter vectors (the
authors' cosine variant), so a neighbour's pull on the direction does not grow with the size of its weights.
As in the authors' code the regulariser is on from the second round (0-based round ``r > 0``): the first round
trains on the local loss alone, and its payload carries no target. The target is sent with the aggregate (its
bytes count as communication); a client that has not been aggregated yet receives the initial model's parameter
vector. Norms and the target use the parameters (the authors' code also flattens BatchNorm statistics).

The sign of the regulariser follows the paper, not the authors' code: the code adds ``λ·⟨t_i, θ⟩/‖θ‖``
(``= λ‖t_i‖·cos(θ, t_i)``) to the loss it minimises, which turns the model *away* from its target, while the
paper's regulariser pulls each model towards its neighbours' combination; ``λ·(1 − cos)`` here does the latter.

Early-exit extension ("-EE"): the whole early-exit network is one model; local training uses the sum of the
exits' cross-entropy losses plus the regulariser. The evaluated model is the client's personalized aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.ground.tensor_ops import (
    cosine_similarity_matrix,
    flatten,
    normalized_weights,
    project_simplex,
    subtract,
)
from bench.methods.aggregation import personalized_aggregates
from bench.methods.api import ClientData, Hparams, LocalResult, Message, Method
from bench.methods.losses import LossFn, sum_ce_loss
from bench.methods.model_state import extract, load_state
from bench.methods.registry import register
from bench.methods.training import train_epochs
from bench.models.base import EarlyExitNet
from bench.record_names import TRAIN_LOSS

TARGET = "regulariser_target"  # payload key of the flattened regulariser target t_i (from round 1 on)
SAME_DIRECTION = 0.9  # update cosine similarities above this count as 1 (the authors' rule)


class PFedGraphHparams(Hparams):
    graph_alpha: float = Field(0.8, gt=0,
                               description="α of the graph QP (larger: closer to the data-size prior)",
                               json_schema_extra={"search": {"low": 0.1, "high": 5.0, "log": True}})
    cosine_reg: float = Field(0.01, ge=0, description="λ of the local regulariser λ·(1 − cos(θ, Σ_j a_ij·θ_j/‖θ_j‖))",
                              json_schema_extra={"search": {"low": 0.001, "high": 1.0, "log": True}})


def update_similarity(updates: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of the flattened updates (rows), each one above ``SAME_DIRECTION`` taken as 1."""
    similarity = cosine_similarity_matrix(updates)
    return torch.where(similarity > SAME_DIRECTION, torch.ones_like(similarity), similarity)


def collaboration_graph(updates: torch.Tensor, prior: torch.Tensor, alpha: float) -> torch.Tensor:
    """The n×n graph of n clients from their flattened updates (rows) and data-size prior.

    Row i is client i's aggregation weights ``Π_simplex(p + s_i/(2α))``, so every row lies on the simplex.
    """
    similarity = update_similarity(updates)
    p = normalized_weights(prior)
    return torch.stack([project_simplex(p + similarity[i] / (2.0 * alpha)) for i in range(len(p))])


def cosine_to(model: EarlyExitNet, reference: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the model's flattened parameters (differentiable) and a fixed vector."""
    theta = torch.cat([p.reshape(-1) for p in model.parameters()])
    return F.cosine_similarity(theta, reference.to(theta.dtype), dim=0)


def regulariser_targets(models: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
    """Row i: ``Σ_j graph[i, j]·θ_j/‖θ_j‖`` of the flattened models ``θ_j`` (rows of ``models``)."""
    unit = models.double() / models.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    return graph.double() @ unit


@register
class PFedGraph(Method):
    name = "pfedgraph"
    order = 80
    family = "pfl"
    Hparams = PFedGraphHparams

    def init_server(self, model: EarlyExitNet) -> dict[str, Any]:
        initial = extract(model)
        parameters = {name: initial[name] for name, _ in model.named_parameters()}
        start = flatten(parameters, list(parameters)).float()
        return {"initial": parameters, "aggregates": [initial for _ in range(self.ctx.num_clients)],
                "targets": [start for _ in range(self.ctx.num_clients)]}

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        if round == 0:
            return Message(server["aggregates"][client])
        return Message({**server["aggregates"][client], TARGET: server["targets"][client]})

    def local_objective(self, payload: Message) -> LossFn:
        """The summed exit cross-entropy, plus ``λ·(1 − cos(θ, t_i))`` when the payload carries a target."""
        target = payload.tensors.get(TARGET)
        if target is None or self.hp.cosine_reg == 0:
            return sum_ce_loss

        def loss_fn(net: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return sum_ce_loss(net, x, y) + self.hp.cosine_reg * (1.0 - cosine_to(net, target))

        return loss_fn

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, {k: v for k, v in payload.tensors.items() if k != TARGET})
        loss = train_epochs(model, data, gen, self.ctx.train, self.local_objective(payload))
        return LocalResult(Message(extract(model)), state, {TRAIN_LOSS: loss})

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        clients = list(uploads)
        models = [uploads[c].tensors for c in clients]
        initial = server["initial"]
        names = list(initial)
        updates = torch.stack([flatten(subtract({k: m[k] for k in names}, initial), names) for m in models])
        prior = torch.tensor([self.ctx.client_train_sizes[c] for c in clients], dtype=torch.float64,
                             device=updates.device)
        graph = collaboration_graph(updates, prior, self.hp.graph_alpha)
        targets = list(server["targets"])
        flat = torch.stack([flatten(m, names) for m in models])
        for client, target in zip(clients, regulariser_targets(flat, graph), strict=True):
            targets[client] = target.float()
        return {"initial": initial, "aggregates": personalized_aggregates(uploads, graph, server["aggregates"]),
                "targets": targets}

    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return server["aggregates"][client]
