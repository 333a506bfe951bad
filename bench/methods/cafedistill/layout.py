"""What CAFEDistill shares, keeps personal and scores, read once off a probe model of the experiment."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.methods.model_state import is_head
from bench.models.base import STAGES_PREFIX, EarlyExitNet, exit_prefix

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class ModelLayout:
    """State-dict names by role.

    ``shared``: the backbone entries FedAvg averages; ``personal``: every exit head, plus the BatchNorm
    entries when BN is kept local; ``last_head``: the last exit's entries (uploaded, the teachers);
    ``stage_params[e]``: the shared backbone *parameters* of stage ``e`` (anything before the first stage
    counts as stage 0), for ``e`` in ``0..m-2`` — the groups the [A-6] tier-2 score is restricted to.
    """

    num_exits: int
    shared: tuple[str, ...]
    personal: tuple[str, ...]
    last_head: tuple[str, ...]
    stage_params: tuple[tuple[str, ...], ...]


def stage_of(name: str) -> int:
    """0-based stage index of a backbone entry ``stages.{k}.…``; entries outside the stages count as 0."""
    if not name.startswith(STAGES_PREFIX):
        return 0
    index = name[len(STAGES_PREFIX):].split(".", 1)[0]
    return int(index) if index.isdigit() else 0


def batch_norm_entries(model: nn.Module) -> set[str]:
    """Names of every parameter and buffer that belongs to a BatchNorm layer."""
    prefixes = {name for name, module in model.named_modules() if isinstance(module, BATCH_NORMS)}
    return {key for key in model.state_dict() if key.rpartition(".")[0] in prefixes}


def model_layout(model: EarlyExitNet, local_batch_norm: bool) -> ModelLayout:
    """Split ``model``'s entries by role; raises if an exit head is not one biased linear layer ([A-4])."""
    not_linear = [k for k, head in enumerate(model.exits)
                  if not isinstance(head, nn.Linear) or head.bias is None]
    if not_linear:
        raise ValueError(f"CAFEDistill averages linear exit heads (Eq. 9, assumption A-4), but exits "
                         f"{not_linear} of {type(model).__name__} are not nn.Linear layers with a bias; "
                         "use a model whose heads are linear")
    local_norms = batch_norm_entries(model) if local_batch_norm else set()
    names = list(model.state_dict())
    shared = tuple(k for k in names if not is_head(k) and k not in local_norms)
    personal = tuple(k for k in names if is_head(k) or k in local_norms)
    last = model.num_exits - 1
    last_head = tuple(k for k in names if k.startswith(exit_prefix(last)))
    shared_params = [k for k, _ in model.named_parameters() if k in shared]
    stage_params = tuple(tuple(k for k in shared_params if stage_of(k) == e) for e in range(last))
    return ModelLayout(model.num_exits, shared, personal, last_head, stage_params)
