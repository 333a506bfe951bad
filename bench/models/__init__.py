"""Early-exit networks: the :class:`EarlyExitNet` contract and the named models."""

from bench.models.base import EarlyExitNet
from bench.models.registry import MODELS, build_model

__all__ = ["MODELS", "EarlyExitNet", "build_model"]
