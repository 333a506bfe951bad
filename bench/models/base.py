"""The early-exit network contract every model follows."""

from __future__ import annotations

import torch
from torch import nn

# Every parameter and buffer name of an early-exit network starts with one of these (its ``stages`` or ``exits``).
STAGES_PREFIX, EXITS_PREFIX = "stages.", "exits."


def stage_prefix(k: int) -> str:
    """The name prefix of stage ``k``'s (0-based) entries, ``stages.{k}.``."""
    return f"{STAGES_PREFIX}{k}."


def exit_prefix(k: int) -> str:
    """The name prefix of exit head ``k``'s (0-based) entries, ``exits.{k}.``."""
    return f"{EXITS_PREFIX}{k}."


class EarlyExitNet(nn.Module):
    """A backbone of ``m`` stages with one exit head after each stage.

    Subclasses fill ``stages`` (m modules, stage k maps the output of stage k-1 to its own) and
    ``exits`` (m heads; head k reads the pooled output of stage k), and implement :meth:`pool`, which
    turns a stage output into the feature vector the head reads. Parameter names therefore start with
    ``stages.{k}.`` or ``exits.{k}.``, so methods choose shared and personal parts by prefix.
    """

    stages: nn.ModuleList
    exits: nn.ModuleList

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def pool(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """Feature vector read by exit ``k`` from the output ``h`` of stage ``k``."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Input transformation before the first stage (identity for images)."""
        return x

    def features(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Pooled features read by exits ``1..upto`` (all when None), computing the backbone once."""
        upto = self._check_upto(upto)
        h = self.embed(x)
        feats = []
        for k in range(upto):
            h = self.stages[k](h)
            feats.append(self.pool(h, k))
        return feats

    def forward(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Logits of exits ``1..upto`` (all when None)."""
        return [head(f) for head, f in zip(self.exits, self.features(x, upto), strict=False)]

    def _check_upto(self, upto: int | None) -> int:
        if upto is None:
            return self.num_exits
        if not 1 <= upto <= self.num_exits:
            raise ValueError(f"upto must be between 1 and {self.num_exits}, got {upto}")
        return upto
