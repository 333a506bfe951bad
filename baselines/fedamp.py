"""FedAMP — Huang, Chu, Zhou, Wang, Liu, Pei & Zhang, "Personalized Cross-Silo Federated Learning on Non-IID
Data", AAAI 2021.

Attentive message passing: every client keeps a personal model ``w_i``. After each round the server builds one
personalized *cloud model* per participating client, ``u_i = Σ_j ξ_ij w_j``, over the models uploaded in that
round; the client then trains its personal model on its own data plus the proximal term ``λ/2·‖w − u_i‖²``.

Attention weights. The paper's attention function is ``A(‖w_i − w_j‖²)`` with ``A(x) = 1 − exp(−x/σ)``, whose
derivative ``A'(x) = exp(−x/σ)/σ`` weighs the message from client j. As in the paper's HeurFedAMP (the variant
it recommends for deep networks), the self weight ``ξ_ii`` is a hyperparameter (``self_weight``) and the other
weights share ``1 − ξ_ii`` in proportion to ``A'``:

    ξ_ij = (1 − ξ_ii) · exp(−‖w_i − w_j‖²/σ) / Σ_{h≠i} exp(−‖w_i − w_h‖²/σ),

so every row of weights lies on the probability simplex and a client listens most to the clients whose models
are closest to its own. Distances use the parameters (not BatchNorm statistics); the cloud model combines the
whole state. The paper gives no σ for these networks: the default σ = 1 suits the scale of the squared
distances between conv3 clients on Fashion-MNIST (about 0.7 to 7.5 after two rounds, median 4.7), where it
weighs the nearest neighbour tens of times more than a typical one; σ ≫ distances gives plain averaging.

Early-exit extension ("-EE"): the personal model is the whole early-exit network, trained with the sum of the
exits' cross-entropy losses plus the proximal term; the evaluated model is the client's personal model.
Communication per round: the cloud model down, the personal model up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field

from bench.ground.tensor_ops import flatten, weighted_average
from bench.methods.api import (
    ClientData,
    Hparams,
    LocalResult,
    Message,
    Method,
    MethodContext,
    extract,
    load_state,
    sum_ce_loss,
    train_epochs,
)
from bench.methods.personalization import proximal_term
from bench.methods.registry import register
from bench.models.base import EarlyExitNet


class FedAMPHparams(Hparams):
    proximal: float = Field(1.0, gt=0,
                            description="λ of the proximal term λ/2·‖w − u_i‖² towards the cloud model",
                            json_schema_extra={"search": {"low": 0.01, "high": 10.0, "log": True}})
    self_weight: float = Field(0.5, ge=0, le=1,
                               description="ξ_ii: weight of a client's own model in its cloud model",
                               json_schema_extra={"search": {"low": 0.1, "high": 0.9, "log": False}})
    sigma: float = Field(1.0, gt=0, description="σ of the attention function exp(−‖w_i − w_j‖²/σ)",
                         json_schema_extra={"search": {"low": 0.1, "high": 100.0, "log": True}})


def attention_weights(models: torch.Tensor, self_weight: float, sigma: float) -> torch.Tensor:
    """The n×n message-passing weights ξ of n flattened models (rows); every row lies on the simplex."""
    n = models.shape[0]
    if n == 1:
        return torch.ones(1, 1, dtype=torch.float64, device=models.device)
    squared = torch.cdist(models.double(), models.double()).pow(2)
    scores = -squared / sigma
    scores.fill_diagonal_(float("-inf"))
    others = torch.softmax(scores, dim=1) * (1.0 - self_weight)
    return others + self_weight * torch.eye(n, dtype=torch.float64, device=models.device)


@register
class FedAMP(Method):
    name = "fedamp"
    family = "pfl"
    Hparams = FedAMPHparams

    def __init__(self, hparams: FedAMPHparams, ctx: MethodContext):
        super().__init__(hparams, ctx)
        self.parameter_names = [name for name, _ in ctx.build_model().named_parameters()]

    def init_server(self, model: EarlyExitNet) -> dict[str, Any]:
        initial = extract(model)
        return {"cloud": [initial for _ in range(self.ctx.num_clients)]}

    def init_client(self, client: int, model: EarlyExitNet, server: dict[str, Any]) -> dict[str, Any]:
        return {"model": extract(model)}

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        return Message(server["cloud"][client])

    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        load_state(model, state["model"])

        def loss_fn(net: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return sum_ce_loss(net, x, y) + proximal_term(net, payload.tensors, self.hp.proximal)

        loss = train_epochs(model, data, gen, self.ctx.train, loss_fn)
        personal = extract(model)
        return LocalResult(Message(personal), {"model": personal}, {"train/loss": loss})

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        clients = list(uploads)
        models = [uploads[c].tensors for c in clients]
        flat = torch.stack([flatten(m, self.parameter_names) for m in models])
        weights = attention_weights(flat, self.hp.self_weight, self.hp.sigma)
        cloud = list(server["cloud"])
        for row, client in enumerate(clients):
            cloud[client] = weighted_average(models, weights[row])
        return {"cloud": cloud}

    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return state["model"]
