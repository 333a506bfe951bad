"""FedProx — Li, Sahu, Zaheer, Sanjabi, Talwalkar & Smith, "Federated Optimization in Heterogeneous
Networks", MLSys 2020.

FedAvg whose local objective adds the proximal term ``μ/2·‖θ − θ_global‖²``, which keeps each client's
update close to the global model it started from. Early-exit extension: the local objective is the sum of all
exits' cross-entropy losses plus the proximal term over every parameter of the network (backbone and all
heads); aggregation and evaluation are FedAvg's (including its optional fine-tuning before testing). With
``μ = 0`` the method is FedAvg exactly. The paper tunes μ per dataset between 0.001 and 1; the default
here is 0.01.
"""

from __future__ import annotations

from pydantic import Field

from baselines.fedavg import FedAvg, FedAvgHparams
from bench.methods.api import Message
from bench.methods.losses import LossFn
from bench.methods.personalization import proximal_objective
from bench.methods.registry import register


class FedProxHparams(FedAvgHparams):
    mu: float = Field(0.01, ge=0, description="proximal coefficient μ (0: plain FedAvg)",
                      json_schema_extra={"search": {"low": 1e-3, "high": 1.0, "log": True}})


@register
class FedProx(FedAvg):
    name = "fedprox"
    order = 30
    family = "pfl"
    Hparams = FedProxHparams

    def local_objective(self, payload: Message) -> LossFn:
        return proximal_objective(payload.tensors, self.hp.mu)
