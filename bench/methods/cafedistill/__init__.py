"""CAFEDistill — Liu, Zhou, Tong, "CAFEDistill: Learning Personalized and Dynamic Models through Federated
Early-Exit Network Distillation", arXiv:2601.10015, 2026 (method ``cafedistill``, family ``ours``).

A shared backbone averaged by sample-weighted FedAvg; every exit head personal. Each client's shallow exits
(students) distil from a per-client combination of all clients' last exits (teachers), weighted by a QP on the
heads' cosine similarity; students are switched on progressively, whole depths first. ``docs/cafedistill.md``
describes the method as implemented here; no official code exists.

Round ``t`` (1-based: the engine's ``round + 1``). Server: pick the active students ``S_i(t)``; send
client ``i`` the backbone, ``S_i(t)`` (in ``Message.meta``) and — only if ``S_i(t)`` holds a student — its
teacher head ``h̄_i = Σ_j w_ij h_j`` (``teacher.weight``/``teacher.bias``). Client: train the backbone, the
last exit and the active students on the section-4 loss; upload backbone + last-exit head. Server: FedAvg
the backbone, store the heads, recompute ``w`` and the tier-2 scores (from the backbone it sent and the
ones that came back). Personal state: every exit head (and BatchNorm with ``bn_mode=local``).

Assumptions, each a hyperparameter (``method.hparams.<option>``) or an experiment setting:

| assumption | default | option that controls it |
|---|---|---|
| A-1 BatchNorm in the backbone is averaged with it | shared | ``bn_mode``: shared / local (FedBN) |
| A-2 teacher weights ``w_i = Π_Δ(p + s_i/(2μ))`` | μ = 1.0 | ``mu`` (tuned log-uniformly over 0.03–10) |
| A-3 one averaged teacher head (Eq. 9) | averaged_head | ``teacher_mode``: averaged_head / mixture |
| A-4 heads: one linear layer on pooled features | linear | the model (other heads are refused) |
| A-5 students: CE + λ·τ²·KL; last exit: CE only | τ=3, λ=1, CE on | ``tau`` (1–6), ``lam`` (0.1–3), ``student_ce`` |
| A-5 students outside ``S_i(t)`` get no loss | no_loss | ``inactive_students``: no_loss / ce_only |
| A-6 tier-2 score (see below) | update_alignment | ``tier2_score``: update_alignment / random / data_size |
| A-7 shallow student depths first | shallow_first | ``depth_order``: shallow_first / deep_first |
| progressive schedule ``R(t) = min(2t/T, 1)`` | progressive | ``selection``: progressive / all / random |
| cross-client KD (off: own last exit teaches) | on | ``cross_client`` |
| A-8 exits after every stage; 20 clients, all join | conv3: 3 exits | ``model.name``, ``data.clients``, |
| | | ``train.participation`` |
| A-9 accuracy per exit, unweighted client mean | — | the harness (``test/acc/exit_k``, ``.../mean``) |
| A-10 distillation from round 1 (untrained teachers) | 0 rounds | ``kd_warmup`` |

``s_ij`` is the cosine similarity of the flattened last-exit heads of clients ``i`` and ``j``, ``p`` the data
fractions. The A-6 score of client ``j`` is the cosine between its latest backbone update (the stages up to
the tier-2 exit) and the mean update; before any update exists clients are ranked by data size.

Details that the spec leaves open, decided here:

* Before a client has uploaded, the server uses its initial head; all clients start from the same weights, so
  in round 1 ``s_ij = 1`` and ``w_i = p``.
* A client with no active student gets no teacher head (nothing to distil), saving that download.
* Selection is computed over all ``n`` clients as in the paper, also under partial participation (only
  the sampled clients' sets are used). With ``depth_order=deep_first`` the tier-2 score is restricted to the
  stages feeding the tier-2 exit. The mean update of A-6 is the plain mean over the clients that uploaded in
  the same round (with full participation: all clients); a client keeps its score until it uploads again,
  so the server stores n×(m−1) scores instead of n backbone updates. ``tier2_score=random`` and
  ``selection=random`` draw from the (seed, "selection", round) stream.
* ``cross_client=false`` (local KD) uses the client's own last exit as it was at the start of the round —
  the limit ``μ → 0`` of cross-client KD — downloads no teacher and uploads the backbone only (the last-exit head
  feeds no other client's teacher).
* ``kd_warmup=k``: in rounds ``t ≤ k`` no student is distilled and no teacher is sent; the active students (the
  schedule is unchanged) keep their cross-entropy term. The default 0 was kept after a small validation ablation
  found no difference (README).
"""

from bench.methods.cafedistill.method import CAFEDistill, CAFEDistillHparams

__all__ = ["CAFEDistill", "CAFEDistillHparams"]
