"""FedAMP — Huang, Chu, Zhou, Wang, Liu, Pei & Zhang, "Personalized Cross-Silo Federated Learning on Non-IID
Data", AAAI 2021.

Attentive message passing: every client keeps a personal model ``w_i``. After each round the server builds one
personalized *cloud model* per participating client, ``u_i = Σ_j ξ_ij w_j``, over the personal models uploaded
in that round; the client then trains its personal model, starting from where it left it, on its own data plus
the paper's proximal term ``λ/(2α_k)·‖w − u_i‖²`` towards its cloud model (the paper's local
problem, whose step ``α_k`` also scales the messages below; with the default ``α_k`` and N clients the coefficient is
``λ(N − 1)/σ``). The evaluated model is the personal one.

Attention, ``attention="fedamp"`` (the default, as published): the message from client j weighs
``ξ_ij = α_k · A'(‖w_i − w_j‖²)`` for ``j ≠ i`` with the attention function ``A(x) = 1 − exp(−x/σ)``, so
``A'(x) = exp(−x/σ)/σ`` decreases with the squared distance, and the client keeps the rest for itself,
``ξ_ii = 1 − Σ_{j≠i} ξ_ij``. Since ``A' ≤ 1/σ``, every self-weight is non-negative when
``α_k ≤ σ/(N − 1)`` for N clients; a larger ``alpha_k`` is refused. The paper leaves ``α_k`` (its step size) and ``σ``
to the experiment; here ``alpha_k`` defaults to ``σ/(N − 1)``, the largest step that keeps every cloud model
a convex combination, so ``ξ_ij = exp(−‖w_i − w_j‖²/σ)/(N − 1)``: a client at distance 0 gets a 1/(N − 1)
share and a far one nearly none. ``σ = 5`` is about the median squared distance between conv3 clients'
models on Fashion-MNIST after two rounds (4.7, range 0.7 to 7.5, measured with this plugin's earlier kernel
rule), so a typical neighbour gets ``e^{-1}`` of the largest share; a σ far below the distances turns FedAMP
into local training.

``attention="heurfedamp"`` is the paper's HeurFedAMP for deep networks: ``ξ_ii = self_weight`` is a
hyperparameter and the others share ``1 − ξ_ii`` by a softmax of ``cosine_scale·cos(w_i, w_j)`` (the paper's σ
of that rule; it leaves it open, 10 here: a neighbour at cosine 0.9 outweighs one at 0.5 by e⁴). Its proximal
term is FedAMP's, ``λ/(2α_k)``, with ``α_k`` as above (where it then scales only that term).

Distances and cosines use the parameters (not the BatchNorm statistics); the cloud model combines the whole
state. With fewer participants than clients a round's weights run over its participants only (``N`` in the
bound stays the number of clients). Early-exit extension ("-EE"): the personal model is the whole early-exit
network, trained with the sum of the exits' cross-entropy losses plus the proximal term.
Communication per round: the cloud model down, the personal model up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field

from bench.ground.tensor_ops import cosine_similarity_matrix, flatten
from bench.methods.aggregation import personalized_aggregates
from bench.methods.api import ClientData, Hparams, LocalResult, Message, Method, MethodContext
from bench.methods.losses import LossFn
from bench.methods.model_state import extract, load_state
from bench.methods.personalization import proximal_objective
from bench.methods.registry import register
from bench.methods.training import train_epochs
from bench.models.base import EarlyExitNet
from bench.record_names import TRAIN_LOSS


class FedAMPHparams(Hparams):
    attention: Literal["fedamp", "heurfedamp"] = Field(
        "fedamp", description="message-passing weights: FedAMP's (self-weight 1 − Σ, attention exp(−d²/σ)) or "
                              "HeurFedAMP's (fixed self-weight, softmax of cosine_scale·cos)")
    proximal: float = Field(1.0, gt=0,
                            description="λ of the proximal term λ/(2α_k)·‖w − u_i‖² towards the cloud model",
                            json_schema_extra={"search": {"low": 0.01, "high": 10.0, "log": True}})
    sigma: float = Field(5.0, gt=0, description="FedAMP: σ of the attention derivative exp(−‖w_i − w_j‖²/σ)/σ",
                         json_schema_extra={"search": {"low": 0.1, "high": 100.0, "log": True}})
    alpha_k: float | None = Field(None, gt=0, description="step size α_k of the messages and of the "
                                                          "proximal term λ/(2α_k) (None: σ/(N − 1), the largest "
                                                          "that keeps FedAMP's ξ_ii ≥ 0)")
    self_weight: float = Field(0.5, ge=0, le=1, description="HeurFedAMP: ξ_ii, a client's own share of its "
                                                            "cloud model")
    cosine_scale: float = Field(10.0, gt=0, description="HeurFedAMP: σ of the attention exp(σ·cos(w_i, w_j))")


def fedamp_weights(models: torch.Tensor, alpha_k: float, sigma: float) -> torch.Tensor:
    """FedAMP's n×n weights of n flattened models (rows): ``ξ_ij = α_k·exp(−‖w_i − w_j‖²/σ)/σ``, ``ξ_ii = 1 − Σ``.

    ``α_k ≤ σ/(n − 1)`` keeps ``ξ_ii ≥ 0``; a sum that exceeds 1 by rounding leaves a self-weight of 0.
    """
    squared = torch.cdist(models.double(), models.double()).pow(2)
    messages = alpha_k * torch.exp(-squared / sigma) / sigma
    messages.fill_diagonal_(0.0)
    return messages + torch.diag((1.0 - messages.sum(1)).clamp_min(0.0))  # ≥ 0 but for rounding at the bound


def heurfedamp_weights(models: torch.Tensor, self_weight: float, scale: float) -> torch.Tensor:
    """HeurFedAMP's weights: ``ξ_ii = self_weight``, the rest shared by a softmax of ``scale·cos(w_i, w_j)``."""
    n = models.shape[0]
    if n == 1:
        return torch.ones(1, 1, dtype=torch.float64, device=models.device)
    scores = scale * cosine_similarity_matrix(models)
    scores.fill_diagonal_(float("-inf"))
    others = torch.softmax(scores, dim=1) * (1.0 - self_weight)
    return others + self_weight * torch.eye(n, dtype=torch.float64, device=models.device)


@register
class FedAMP(Method):
    name = "fedamp"
    order = 70
    family = "pfl"
    Hparams = FedAMPHparams

    def __init__(self, hparams: FedAMPHparams, ctx: MethodContext):
        super().__init__(hparams, ctx)
        self.parameter_names = [name for name, _ in ctx.build_model().named_parameters()]
        bound = hparams.sigma / max(ctx.num_clients - 1, 1)
        self.alpha_k = bound if hparams.alpha_k is None else hparams.alpha_k
        if hparams.attention == "fedamp" and self.alpha_k > bound * (1 + 1e-12):
            raise ValueError(f"fedamp alpha_k={self.alpha_k:g} can make a self-weight 1 − Σ_j ξ_ij negative with "
                             f"{ctx.num_clients} clients and sigma={hparams.sigma:g}: use alpha_k ≤ σ/(N − 1) = "
                             f"{bound:g}")

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
        loss = train_epochs(model, data, gen, self.ctx.train, self.local_objective(payload))
        personal = extract(model)
        return LocalResult(Message(personal), {"model": personal}, {TRAIN_LOSS: loss})

    @property
    def proximal_coefficient(self) -> float:
        """``λ/α_k``: the local objective adds ``λ/(2α_k)·‖w − u_i‖²``."""
        return self.hp.proximal / self.alpha_k

    def local_objective(self, payload: Message) -> LossFn:
        """The summed exit cross-entropy plus ``λ/(2α_k)·‖w − u_i‖²`` towards the received cloud model."""
        return proximal_objective(payload.tensors, self.proximal_coefficient)

    def weights(self, models: torch.Tensor) -> torch.Tensor:
        """The message-passing weights ξ of the round's flattened models (rows), by the chosen rule."""
        if self.hp.attention == "fedamp":
            return fedamp_weights(models, self.alpha_k, self.hp.sigma)
        return heurfedamp_weights(models, self.hp.self_weight, self.hp.cosine_scale)

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        flat = torch.stack([flatten(uploads[c].tensors, self.parameter_names) for c in uploads])
        return {"cloud": personalized_aggregates(uploads, self.weights(flat), server["cloud"])}

    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        return state["model"]
