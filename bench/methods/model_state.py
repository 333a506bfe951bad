"""A model's state dict as methods handle it: load the parts of a model, copy parts out, tell heads by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from bench.ground.tensor_ops import TensorDict
from bench.models.base import EXITS_PREFIX, EarlyExitNet


def load_state(model: EarlyExitNet, *parts: Mapping[str, torch.Tensor]) -> None:
    """Copy the given tensors into ``model`` in place; together they must cover every parameter and buffer.

    Requiring full coverage keeps local updates pure: nothing of the previous client's model can leak in.
    """
    own = model.state_dict()
    covered: set[str] = set()
    with torch.no_grad():
        for part in parts:
            for key, value in part.items():
                if key not in own:
                    raise KeyError(f"{key!r} is not a parameter or buffer of {type(model).__name__}")
                own[key].copy_(value)
                covered.add(key)
    missing = own.keys() - covered
    if missing:
        raise KeyError(f"load_state left {len(missing)} entries unset, e.g. {sorted(missing)[:3]}: "
                       "a method must provide the whole model (shared part + personal part)")


def extract(model: EarlyExitNet, keep: Callable[[str], bool] = lambda _: True) -> TensorDict:
    """Detached copies of the model's parameters and buffers whose names pass ``keep``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if keep(k)}


def is_head(name: str) -> bool:
    """Whether a parameter or buffer name belongs to an exit head (the rest is backbone)."""
    return name.startswith(EXITS_PREFIX)


def head_index(name: str) -> int:
    """0-based exit index of a head parameter name ``exits.{k}.…``."""
    return int(name.split(".")[1])
