"""The CAFEDistill plugin: hyperparameters and engine hooks (assumptions: see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from bench.ground.rng import torch_generator
from bench.ground.tensor_ops import TensorDict, weighted_average
from bench.methods.api import ClientData, Hparams, LocalResult, Message, Method, MethodContext
from bench.methods.cafedistill.layout import model_layout
from bench.methods.cafedistill.selection import (
    DepthOrder,
    StudentSets,
    progressive_students,
    random_students,
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
from bench.methods.losses import LossFn, distillation_loss
from bench.methods.model_state import extract, head_index, is_head, load_state
from bench.methods.personalization import parameters_where
from bench.methods.registry import register
from bench.methods.training import train_epochs
from bench.models.base import EarlyExitNet, exit_prefix
from bench.record_names import TRAIN_LOSS, train_metric

TEACHER = "teacher."  # payload keys of the teacher head(s): ``teacher.weight`` or ``teacher.{j}.weight``
MIXTURE_WEIGHTS = "teacher.mix"
TeacherProbs = Callable[[torch.Tensor], torch.Tensor]
KD_WARMUP_DEFAULT = 0  # measured: no difference on validation accuracy (README, "CAFEDistill's assumptions")


class CAFEDistillHparams(Hparams):
    mu: float = Field(1.0, gt=0, description="μ of the teacher-weight QP [A-2]: small → own last exit only, "
                                             "large → weights follow the data fractions",
                      json_schema_extra={"search": {"low": 0.03, "high": 10.0, "log": True}})
    tau: float = Field(3.0, gt=0, description="distillation temperature τ",
                       json_schema_extra={"search": {"low": 1.0, "high": 6.0}})
    lam: float = Field(1.0, ge=0, description="weight λ of the τ²·KL distillation term",
                       json_schema_extra={"search": {"low": 0.1, "high": 3.0, "log": True}})
    kd_warmup: int = Field(KD_WARMUP_DEFAULT, ge=0,
                           description="[A-10] rounds without distillation, until the teacher heads have been "
                                       "trained that many rounds (active students keep their CE term)")
    cross_client: bool = Field(True, description="distil from other clients' last exits (false: local KD, "
                                                 "the teacher is the client's own last exit)")
    teacher_mode: Literal["averaged_head", "mixture"] = Field(
        "averaged_head", description="[A-3] one weighted-average teacher head (Eq. 9) or the exact mixture "
                                     "of all n teachers' softened outputs (downloads n heads)")
    selection: Literal["progressive", "all", "random"] = Field(
        "progressive", description="active students: the progressive depth-prioritized schedule, every "
                                   "student from round 1, or random (client, exit) pairs in the schedule's "
                                   "numbers")
    tier2_score: Literal["update_alignment", "random", "data_size"] = Field(
        "update_alignment", description="[A-6] how the r tier-2 clients are chosen")
    depth_order: DepthOrder = Field("shallow_first", description="[A-7] which student depths come first")
    bn_mode: Literal["shared", "local"] = Field(
        "shared", description="[A-1] BatchNorm inside the backbone averaged with it, or kept local (FedBN)")
    student_ce: bool = Field(True, description="[A-5] active students keep a cross-entropy term")
    inactive_students: Literal["no_loss", "ce_only"] = Field(
        "no_loss", description="[A-5] students outside S_i(t): no loss (frozen) or cross-entropy only")

    @model_validator(mode="after")
    def _mixture_needs_cross_client(self) -> CAFEDistillHparams:
        if self.teacher_mode == "mixture" and not self.cross_client:
            raise ValueError("teacher_mode='mixture' mixes other clients' teachers and needs "
                             "cross_client=true; without cross-client KD the only teacher is the client's "
                             "own last exit")
        return self


@register
class CAFEDistill(Method):
    name = "cafedistill"
    order = 150
    family = "ours"
    Hparams = CAFEDistillHparams

    def __init__(self, hparams: CAFEDistillHparams, ctx: MethodContext):
        super().__init__(hparams, ctx)
        self.layout = model_layout(ctx.build_model(), local_batch_norm=hparams.bn_mode == "local")
        sizes = torch.tensor(ctx.client_train_sizes, dtype=torch.float64)
        self.fractions = sizes / sizes.sum()
        self.last = ctx.num_exits - 1
        self.scores_updates = (hparams.selection == "progressive" and self.last > 0
                               and hparams.tier2_score == "update_alignment")

    # -- server side -------------------------------------------------------------------------------------
    def init_server(self, model: EarlyExitNet) -> dict[str, Any]:
        initial = extract(model)
        heads = ([{k: initial[k].clone() for k in self.layout.last_head} for _ in range(self.ctx.num_clients)]
                 if self.hp.cross_client else [])
        no_scores = torch.full((self.ctx.num_clients, self.last), float("nan"), dtype=torch.float64)
        return self.server_state({k: initial[k] for k in self.layout.shared}, heads, no_scores)

    def server_state(self, backbone: TensorDict, heads: list[TensorDict],
                     alignment: torch.Tensor) -> dict[str, Any]:
        """Server state: the shared backbone, the tier-2 scores and, with cross-client KD, each client's latest
        last-exit head and the teacher weights ``w`` (row i: client i's weights over the n teachers)."""
        state = {"backbone": backbone, "alignment": alignment}
        if self.hp.cross_client:
            state["heads"] = heads
            state["teacher_weights"] = teacher_weights(head_similarity(heads), self.fractions, self.hp.mu)
        return state

    def init_client(self, client: int, model: EarlyExitNet, server: dict[str, Any]) -> dict[str, Any]:
        return {"personal": extract(model, lambda k: k in self.layout.personal)}

    def payload(self, round: int, client: int, server: dict[str, Any]) -> Message:
        """The backbone, the client's active students and, when it has any and the KD warm-up is over, its
        teacher head(s)."""
        students = self.students(round, server)[client]
        distil = bool(students) and round >= self.hp.kd_warmup
        tensors = dict(server["backbone"])
        if distil and self.hp.cross_client:
            tensors.update(self.teacher_tensors(client, server))
        return Message(tensors, {"students": students, "distil": distil})

    def teacher_tensors(self, client: int, server: dict[str, Any]) -> TensorDict:
        """Client ``client``'s teacher: ``h̄_i = Σ_j w_ij h_j`` (Eq. 9), or every head and ``w_i`` (mixture)."""
        weights = server["teacher_weights"][client]
        prefix_len = len(exit_prefix(self.last))
        if self.hp.teacher_mode == "averaged_head":
            averaged = weighted_average(server["heads"], weights)
            return {TEACHER + k[prefix_len:]: v for k, v in averaged.items()}
        tensors = {f"{TEACHER}{j}.{k[prefix_len:]}": v for j, head in enumerate(server["heads"])
                   for k, v in head.items()}
        tensors[MIXTURE_WEIGHTS] = weights.float()
        return tensors

    def students(self, round: int, server: dict[str, Any]) -> StudentSets:
        """Every client's active student exits (0-based) in ``round``; the schedule's ``t`` is round + 1."""
        n, m = self.ctx.num_clients, self.ctx.num_exits
        if self.hp.selection == "all":
            return [list(range(m - 1)) for _ in range(n)]
        budget = student_budget(round + 1, self.ctx.rounds, m, n)
        if self.hp.selection == "random":
            return random_students(budget.active, m, n, torch_generator(self.ctx.seed, "selection", round))
        order = student_depth_order(m, self.hp.depth_order)
        ranking = self.tier2_ranking(round, order[budget.full_depths], server) if budget.extra_clients else []
        return progressive_students(budget, order, ranking, n)

    def tier2_ranking(self, round: int, exit: int, server: dict[str, Any]) -> list[int]:
        """Clients best first for the tier-2 slots at student exit ``exit`` ([A-6])."""
        sizes = self.ctx.client_train_sizes
        if self.hp.tier2_score == "random":
            gen = torch_generator(self.ctx.seed, "selection", round)
            return torch.randperm(len(sizes), generator=gen).tolist()
        if self.hp.tier2_score == "data_size":
            return rank_clients([0.0] * len(sizes), sizes)
        return rank_clients(server["alignment"][:, exit].tolist(), sizes)

    def aggregate(self, round: int, uploads: Mapping[int, Message], server: dict[str, Any]) -> dict[str, Any]:
        clients = list(uploads)
        sizes = [self.ctx.client_train_sizes[c] for c in clients]
        backbone = weighted_average([uploads[c].tensors for c in clients], sizes, keys=self.layout.shared)
        heads = list(server.get("heads", []))
        if self.hp.cross_client:
            for c in clients:
                heads[c] = {k: uploads[c].tensors[k] for k in self.layout.last_head}
        alignment = server["alignment"].clone()
        if self.scores_updates:
            sent = server["backbone"]
            keys = [k for group in self.layout.stage_params for k in group]
            updates = [{k: uploads[c].tensors[k] - sent[k] for k in keys} for c in clients]
            alignment[clients] = update_alignment(updates, self.layout.stage_params).to(alignment.device)
        return self.server_state(backbone, heads, alignment)

    # -- client side -------------------------------------------------------------------------------------
    def local_update(self, model: EarlyExitNet, round: int, payload: Message, state: dict[str, Any],
                     data: ClientData, gen: torch.Generator) -> LocalResult:
        personal = state["personal"]
        load_state(model, {k: payload.tensors[k] for k in self.layout.shared}, personal)
        students = list(payload.meta["students"])
        ce_only = ([k for k in range(self.last) if k not in students]
                   if self.hp.inactive_students == "ce_only" else [])
        trained = {self.last, *students, *ce_only}
        teacher = self.teacher(payload.tensors, personal) if payload.meta["distil"] else None
        params = parameters_where(model, lambda k: not is_head(k) or head_index(k) in trained)
        loss = train_epochs(model, data, gen, self.ctx.train, self.objective(students, ce_only, teacher),
                            params=params)
        # the last-exit head only feeds the teachers of cross-client KD
        upload = extract(model, lambda k: k in self.layout.shared or (self.hp.cross_client and
                                                                      k in self.layout.last_head))
        return LocalResult(Message(upload), {"personal": extract(model, lambda k: k in self.layout.personal)},
                           {TRAIN_LOSS: loss, train_metric("active_students"): float(len(students))})

    def teacher(self, tensors: Mapping[str, torch.Tensor],
                personal: Mapping[str, torch.Tensor]) -> TeacherProbs:
        """Features of the last stage → the teacher's softened class probabilities."""
        tau = self.hp.tau
        if not self.hp.cross_client:
            own = exit_prefix(self.last)
            return partial(linear_teacher_probs, personal[own + "weight"], personal[own + "bias"], tau=tau)
        if self.hp.teacher_mode == "averaged_head":
            weight, bias = tensors[TEACHER + "weight"], tensors[TEACHER + "bias"]
            return partial(linear_teacher_probs, weight, bias, tau=tau)
        n = self.ctx.num_clients
        weights = torch.stack([tensors[f"{TEACHER}{j}.weight"] for j in range(n)])
        biases = torch.stack([tensors[f"{TEACHER}{j}.bias"] for j in range(n)])
        return partial(mixture_teacher_probs, weights, biases, tensors[MIXTURE_WEIGHTS], tau=tau)

    def objective(self, students: list[int], ce_only: list[int], teacher: TeacherProbs | None) -> LossFn:
        """The section-4 loss: CE on the last exit; each active student CE + λ·τ²·KL(teacher ‖ student) (no KL
        term without a teacher: during the KD warm-up)."""
        last, hp = self.last, self.hp

        def loss_fn(model: EarlyExitNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            feats = model.features(x)
            loss = F.cross_entropy(model.exits[last](feats[last]), y)
            target = None
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(feats[last].detach())
            for k in students:
                logits = model.exits[k](feats[k])
                if hp.student_ce:
                    loss = loss + F.cross_entropy(logits, y)
                if target is not None:
                    loss = loss + hp.lam * distillation_loss(logits, target, hp.tau)
            for k in ce_only:
                loss = loss + F.cross_entropy(model.exits[k](feats[k]), y)
            return loss

        return loss_fn

    # -- evaluation --------------------------------------------------------------------------------------
    def eval_params(self, client: int, server: dict[str, Any],
                    state: dict[str, Any]) -> Mapping[str, torch.Tensor]:
        """The aggregated backbone with the client's own heads (and BatchNorm, when kept local)."""
        return {**server["backbone"], **state["personal"]}
