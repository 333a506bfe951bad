"""The mutant list: for every baseline, its distinctive step replaced by FedAvg's behaviour, and the fast unit test
that must fail on it.

Each case monkeypatches one step (the module-level name the method calls, so the method itself runs the mutant) and
runs the named test, which asserts a number computed by hand or from a tiny deterministic case; the case passes only
if that test fails with an ``AssertionError`` (a mutant that crashed the test some other way would prove nothing).
The killing tests also run unmutated in their own modules, so each one is shown to pass on the real code and to fail
on its mutant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_baselines_a as a
import test_baselines_b as b
import test_fee_baselines as fee
import torch
import torch.nn.functional as F
from conftest import tiny_config

import baselines.depthfl as depthfl
import baselines.ditto as ditto
import baselines.fedamp as fedamp
import baselines.fedbabu as fedbabu
import baselines.fedpac as fedpac
import baselines.fedprox as fedprox
import baselines.fedrep as fedrep
import baselines.fedrod as fedrod
import baselines.inclusivefl as inclusivefl
import baselines.local as local
import baselines.pfedgraph as pfedgraph
import baselines.scalefl as scalefl
import bench.methods.aggregation as aggregation
import bench.methods.personalization as personalization
import bench.methods.phases as phases
from bench.ground.tensor_ops import weighted_average
from bench.methods.aggregation import GlobalModelMethod
from bench.methods.api import LocalResult
from bench.methods.losses import sum_ce_loss
from bench.methods.registry import available_methods

Patch = Callable[[pytest.MonkeyPatch], None]
Killer = Callable[[Path, pytest.MonkeyPatch], None]


@dataclass(frozen=True)
class Mutant:
    baseline: str
    step: str  # the distinctive step the mutant removes
    mutation: str  # what it does instead (FedAvg's behaviour)
    patch: Patch
    killer: Killer  # the unit test that must fail on the mutant

    @property
    def id(self) -> str:
        return f"{self.baseline}: {self.step}"


def with_config(test) -> Killer:
    return lambda tmp_path, monkeypatch: test(tiny_config(tmp_path))


def with_config_and_patch(test) -> Killer:
    return lambda tmp_path, monkeypatch: test(tiny_config(tmp_path), monkeypatch)


# -- the mutations ----------------------------------------------------------------------------------------------

def uniform_average(uploads, train_sizes):
    return weighted_average([u.tensors for u in uploads.values()], [1.0] * len(uploads))


def keeps_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    real = local.Local.local_update

    def restart_from_the_common_model(self, model, round, payload, state, data, gen):
        result = real(self, model, round, payload, state, data, gen)
        return LocalResult(result.upload, state, result.metrics)  # the trained model is dropped

    monkeypatch.setattr(local.Local, "local_update", restart_from_the_common_model)


def one_joint_phase(model, data, gen, train, heads, head_epochs, batchnorm, body_loss=sum_ce_loss, body_epochs=None):
    loss = phases.train_epochs(model, data, gen, train, body_loss)
    return loss, loss


def train_everything(model, data, gen, train, heads, loss_fn=sum_ce_loss, epochs=None):
    return phases.train_epochs(model, data, gen, train, loss_fn, epochs=epochs)


def no_fine_tuning(model, data, gen, train, epochs, heads=None, batchnorm="train"):
    return model


def equal_rows(self, models: torch.Tensor) -> torch.Tensor:
    n = models.shape[0]
    return torch.full((n, n), 1.0 / n, dtype=torch.float64, device=models.device)


def prior_rows(updates: torch.Tensor, prior: torch.Tensor, alpha: float) -> torch.Tensor:
    p = prior.double() / prior.double().sum()
    return p.expand(len(p), len(p)).clone()


def uniform_combination(weighted_prototypes, variances, client):
    n = weighted_prototypes.shape[0]
    return torch.full((n,), 1.0 / n, dtype=torch.float64)


def statistics_after_training(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fedpac.FedPAC.local_update

    def late_statistics(self, model, round, payload, state, data, gen):
        result = real(self, model, round, payload, state, data, gen)
        late = fedpac.feature_statistics(model, data, self.ctx.num_classes, self.ctx.train.batch_size)
        result.upload.tensors[fedpac.VARIANCE] = late.variances
        for k, prototype in enumerate(late.prototypes):
            result.upload.tensors[f"{fedpac.STATISTIC_PROTOTYPE}{k}"] = prototype.float()
        return result

    monkeypatch.setattr(fedpac.FedPAC, "local_update", late_statistics)


def no_kd(student_logits, teacher_probs, tau) -> torch.Tensor:
    return student_logits.sum() * 0.0


def no_mutual_kd(logits, temperature) -> torch.Tensor:
    return logits[0].sum() * 0.0


def own_update_only(previous, own, deep_update, counterparts, momentum):
    return {name: own[name].clone() for name in previous}


def setattr_patch(target, name: str, value) -> Patch:
    return lambda monkeypatch: monkeypatch.setattr(target, name, value)


MUTANTS = [
    Mutant("local", "each client continues from its own model", "every round restarts from the common model",
           keeps_no_model, with_config_and_patch(a.test_local_clients_continue_from_their_own_model)),
    Mutant("fedavg", "the train-size weighted average", "the unweighted mean of the uploads",
           setattr_patch(aggregation, "average_uploads", uniform_average),
           with_config(a.test_fedavg_averages_the_uploads_weighted_by_train_size)),
    Mutant("fedprox", "the proximal term μ/2·‖θ − θ_global‖²", "the plain summed cross-entropy",
           setattr_patch(fedprox, "proximal_objective", lambda reference, mu: sum_ce_loss),
           with_config(a.test_fedprox_objective_adds_half_mu_times_the_squared_distance_to_the_global_model)),
    Mutant("fedper", "the personal heads", "every head shared and averaged",
           setattr_patch(personalization, "personal_keys", lambda personal_heads, num_exits: lambda name: False),
           with_config_and_patch(a.test_fedper_averages_the_backbone_and_keeps_each_clients_heads_by_hand)),
    Mutant("fedrep", "heads first on a fixed body, then the body on fixed heads", "one joint phase",
           setattr_patch(fedrep, "train_head_then_body", one_joint_phase),
           with_config_and_patch(a.test_fedrep_trains_the_heads_for_head_epochs_then_the_body_for_body_epochs_by_hand)),
    Mutant("fedbabu", "the heads frozen in federated training", "the whole network trained",
           setattr_patch(fedbabu, "train_body", train_everything),
           with_config_and_patch(a.test_fedbabu_trains_only_the_body_and_fine_tunes_the_whole_model_by_hand)),
    Mutant("fedbabu", "fine-tuning before evaluation", "the aggregated model evaluated as it is",
           setattr_patch(fedbabu, "fine_tune", no_fine_tuning),
           with_config_and_patch(a.test_fedbabu_trains_only_the_body_and_fine_tunes_the_whole_model_by_hand)),
    Mutant("ditto", "the personal model's pull λ/2·‖v − w‖²", "the plain summed cross-entropy",
           setattr_patch(ditto, "proximal_objective", lambda reference, lam: sum_ce_loss),
           with_config_and_patch(
               a.test_ditto_trains_and_evaluates_a_personal_model_pulled_to_the_global_one_by_hand)),
    Mutant("ditto", "the personal model evaluated", "the global model evaluated",
           setattr_patch(ditto.Ditto, "eval_params", GlobalModelMethod.eval_params),
           with_config_and_patch(
               a.test_ditto_trains_and_evaluates_a_personal_model_pulled_to_the_global_one_by_hand)),
    Mutant("fedamp", "the attention weights of the cloud models", "the same shares in every row",
           setattr_patch(fedamp.FedAMP, "weights", equal_rows),
           with_config(b.test_fedamp_cloud_models_follow_the_hand_computed_weights)),
    Mutant("fedamp", "the proximal term λ/(2α_k)·‖w − u_i‖²", "the plain summed cross-entropy",
           setattr_patch(fedamp, "proximal_objective", lambda reference, coefficient: sum_ce_loss),
           with_config(b.test_fedamp_proximal_term_is_lambda_over_two_alpha_k_by_hand)),
    Mutant("pfedgraph", "the collaboration graph", "the data-size prior in every row",
           setattr_patch(pfedgraph, "collaboration_graph", prior_rows),
           with_config(b.test_pfedgraph_aggregate_gives_each_client_its_graph_aggregate_and_target)),
    Mutant("pfedgraph", "the cosine regulariser towards the target", "the plain summed cross-entropy",
           setattr_patch(pfedgraph, "cosine_to", lambda model, reference: torch.ones(())),
           with_config(b.test_pfedgraph_regularises_from_the_second_round_by_hand)),
    Mutant("fedrod", "the balanced softmax of the generic heads", "plain cross-entropy",
           setattr_patch(fedrod, "balanced_softmax_loss", lambda logits, y, log_prior: F.cross_entropy(logits, y)),
           with_config_and_patch(b.test_fedrod_local_loss_is_balanced_softmax_plus_the_residual_loss_by_hand)),
    Mutant("fedrod", "prediction = generic + personal logits", "the generic model alone",
           setattr_patch(fedrod.FedRoD, "eval_model", GlobalModelMethod.eval_model),
           lambda tmp_path, monkeypatch: b.test_fedrod_prediction_is_generic_plus_personal_logits(
               tiny_config(tmp_path), "all", {0, 1, 2})),
    Mutant("fedpac", "the feature alignment to the global prototypes", "the plain summed cross-entropy",
           setattr_patch(fedpac, "alignment_loss", lambda features, y, targets: features.sum() * 0.0),
           with_config_and_patch(b.test_fedpac_alignment_term_is_on_from_the_second_round_by_hand)),
    Mutant("fedpac", "the classifier collaboration (QP weights)", "every client's heads averaged alike",
           setattr_patch(fedpac, "combination_weights", uniform_combination),
           with_config(b.test_fedpac_aggregate_combines_the_heads_by_the_exact_qp)),
    Mutant("fedpac", "statistics h, V on the received model before training", "taken after local training",
           statistics_after_training,
           with_config_and_patch(b.test_fedpac_takes_its_statistics_before_training_on_the_received_model)),
    Mutant("depthfl", "the mutual self-distillation among the exits", "the plain summed cross-entropy",
           setattr_patch(depthfl, "mutual_distillation", no_mutual_kd),
           with_config_and_patch(fee.test_depthfl_objective_adds_the_mutual_distillation_by_hand)),
    Mutant("scalefl", "the early exits' KD towards the last exit", "no KD term",
           setattr_patch(scalefl, "distillation_loss", no_kd),
           with_config(fee.test_scalefl_distillation_is_off_until_a_quarter_of_the_rounds_and_on_after)),
    Mutant("scalefl", "the position-weighted, normalised exit losses", "FedAvg's summed cross-entropy",
           setattr_patch(scalefl, "scalefl_objective", lambda kd_weight, temperature, detach=False: sum_ce_loss),
           with_config(fee.test_scalefl_distillation_is_off_until_a_quarter_of_the_rounds_and_on_after)),
    Mutant("inclusivefl", "the momentum distillation of a shallow tier's top", "the tier's own average alone",
           setattr_patch(inclusivefl, "distilled_top", own_update_only),
           with_config(fee.test_inclusivefl_top_update_distils_the_next_deeper_tiers_layer_updates)),
]


def test_every_baseline_has_a_mutant():
    baselines = {name for name, cls in available_methods().items() if cls.family != "ours"}
    assert len(baselines) == 14 and baselines == {m.baseline for m in MUTANTS}


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_the_mutant_is_killed(mutant: Mutant, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        mutant.patch(patch)
        with pytest.raises(AssertionError):
            mutant.killer(tmp_path, patch)
