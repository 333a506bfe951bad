"""Per-exit inference cost of early-exit networks in multiply-accumulate operations (MACs), via fvcore.

What is counted. Only operators that multiply two operands and accumulate the products: convolutions,
linear layers, matrix products (``addmm``, ``mm``, ``matmul``, ``bmm``, ``einsum``) and scaled dot-product
attention (``QKᵀ`` plus ``AV``). Normalisation, activations, pooling, residual additions, softmax, masking
and embedding look-ups are not counted (fvcore's default handles for batch/layer norm, pooling and
upsampling are switched off); each such operator is listed, with how often it ran, in
:attr:`CostTable.unsupported_ops`. This is the operator set of ``torch.utils.flop_counter.FlopCounterMode``,
which :func:`cross_check_flop_counter` uses as an independent second count (it reports FLOPs = 2 × MACs).
fvcore has no handle for ``aten::scaled_dot_product_attention``; one is added here.

Cumulative cost. fvcore traces with ``torch.jit.trace``, which drops work that does not feed the traced
output, so the cost of exit ``k`` is counted on a wrapper returning the logits of exits ``1..k``: the
cost of an inference that stops at exit ``k`` after evaluating every earlier head. The *static model* is
the backbone (all stages) with the last head only, as if the network had no intermediate exits; the static
model of depth ``k`` (for a client that holds only exits ``1..k``) is stages ``1..k`` with head ``k`` only.

Counting runs on a deep copy of the model in eval mode with batch size 1, so the caller's model (its
parameters, BatchNorm statistics and training flag) is untouched. fvcore traces the copy on the CPU with
gradients enabled, which keeps PyTorch's fused inference fast paths (e.g. ``nn.TransformerEncoderLayer``'s)
off: they would hide their matrix products. The cross-check runs the copy on the ``meta`` device, which
computes shapes only (fast, no memory) and takes the plain matrix-product path for attention.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.models.base import EarlyExitNet

with warnings.catch_warnings():
    # Importing fvcore.nn scripts a loss function with the deprecated torch.jit.script.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import (
        addmm_flop_jit,
        bmm_flop_jit,
        conv_flop_jit,
        einsum_flop_jit,
        get_shape,
        linear_flop_jit,
        matmul_flop_jit,
    )

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExitCost:
    """Cost of an inference that stops at one exit."""

    exit: int  # 1-based
    macs: int  # cumulative MACs for one sample, earlier heads included
    params: int  # parameters needed to reach this exit: stages 1..k, heads 1..k and anything outside them
    share: float  # macs / MACs of the full model (all exits)


@dataclass(frozen=True)
class CostTable:
    """Per-exit costs of one architecture at one input shape (a cached, shared object: do not mutate)."""

    exits: tuple[ExitCost, ...]
    static_macs_by_depth: tuple[int, ...]  # entry k-1: stages 1..k + head k, no intermediate heads
    unsupported_ops: dict[str, int]  # operators fvcore ran but did not count, with their counts

    @property
    def static_macs(self) -> int:
        """MACs of the static model: the backbone (all stages) and the last head, no intermediate heads."""
        return self.static_macs_by_depth[-1]

    def static_macs_upto(self, upto: int) -> int:
        """MACs of the static model truncated after exit ``upto``: stages ``1..upto`` and head ``upto``."""
        if not 1 <= upto <= len(self.static_macs_by_depth):
            raise ValueError(f"upto must be between 1 and {len(self.static_macs_by_depth)}, got {upto}")
        return self.static_macs_by_depth[upto - 1]

    def to_frame(self) -> pd.DataFrame:
        """One row per exit with columns ``exit``, ``macs``, ``params``, ``share``."""
        return pd.DataFrame(
            {
                "exit": [e.exit for e in self.exits],
                "macs": [e.macs for e in self.exits],
                "params": [e.params for e in self.exits],
                "share": [e.share for e in self.exits],
            }
        )

    def to_markdown(self) -> str:
        """Markdown table of the per-exit costs followed by the static model's MACs."""
        frame = self.to_frame()
        frame["share"] = [f"{100 * s:.1f}%" for s in frame["share"]]
        table = frame.to_markdown(index=False, intfmt=",")
        return f"{table}\n\nstatic model (backbone + last head): {self.static_macs:,} MACs"


def _attention_macs_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of scaled dot-product attention, ``QKᵀ`` plus ``AV``, from its ``…×length×dim`` operands."""
    query_shape, key_shape, value_shape = (get_shape(v) for v in inputs[:3])
    *batch, query_length, query_dim = query_shape
    return math.prod(batch) * query_length * key_shape[-2] * (query_dim + value_shape[-1])


#: fvcore handles for the operators that do multiply-adds; every other operator is left uncounted.
MAC_OP_HANDLES = {
    "aten::_convolution": conv_flop_jit,
    "aten::linear": linear_flop_jit,
    "aten::addmm": addmm_flop_jit,
    "aten::mm": matmul_flop_jit,
    "aten::matmul": matmul_flop_jit,
    "aten::bmm": bmm_flop_jit,
    "aten::einsum": einsum_flop_jit,
    "aten::scaled_dot_product_attention": _attention_macs_jit,
}


class _LogitsUpTo(nn.Module):
    """Returns the logits of exits ``1..upto`` as a tuple, so tracing keeps every head up to ``upto``."""

    def __init__(self, net: EarlyExitNet, upto: int) -> None:
        super().__init__()
        self.net = net
        self.upto = upto

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net(x, upto=self.upto))


class _StaticModel(nn.Module):
    """Stages ``1..upto`` followed by head ``upto`` only."""

    def __init__(self, net: EarlyExitNet, upto: int) -> None:
        super().__init__()
        self.net = net
        self.upto = upto

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.exits[self.upto - 1](self.net.features(x, upto=self.upto)[-1])


_COST_CACHE: dict[tuple[str, str, tuple[int, ...], torch.dtype], CostTable] = {}


def exit_costs(
    model: EarlyExitNet, input_shape: tuple[int, ...], *, dtype: torch.dtype | None = None
) -> CostTable:
    """Per-exit cumulative MACs and parameters of ``model`` for one sample of ``input_shape`` (no batch dim).

    ``dtype`` is the input's dtype; by default int64 token ids (all ones, no padding) for models with an
    ``nn.Embedding``, otherwise zeros of the parameters' floating dtype. Results are cached per (model
    class, architecture signature, input shape, dtype): a second call returns the identical object.
    """
    shape = _check_input(model, input_shape)
    input_dtype = dtype or _default_input_dtype(model)
    model_class = f"{type(model).__module__}.{type(model).__qualname__}"
    key = (model_class, architecture_signature(model), shape, input_dtype)
    if key not in _COST_CACHE:
        _COST_CACHE[key] = _count_exit_costs(model, shape, input_dtype)
    return _COST_CACHE[key]


def cross_check_flop_counter(
    model: EarlyExitNet, input_shape: tuple[int, ...], *, dtype: torch.dtype | None = None
) -> list[int]:
    """Per-exit cumulative MACs counted by ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2).

    An independent check of :func:`exit_costs`: it runs the model eagerly, on the ``meta`` device, instead
    of tracing it.
    """
    shape = _check_input(model, input_shape)
    net = _counting_copy(model, torch.device("meta"))
    x = _sample_input(shape, dtype or _default_input_dtype(model), torch.device("meta"))
    macs = []
    for upto in range(1, net.num_exits + 1):
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            net(x, upto=upto)
        macs.append(counter.get_total_flops() // 2)
    return macs


def architecture_signature(model: nn.Module) -> str:
    """Hash of the module tree's printout (layer types and settings) and every parameter's and buffer's
    name and shape: equal for two models that cost the same, whatever their weights."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    text = repr(model) + "".join(f"\n{name}:{tuple(t.shape)}" for name, t in tensors)
    return hashlib.sha256(text.encode()).hexdigest()


def _count_exit_costs(model: EarlyExitNet, shape: tuple[int, ...], dtype: torch.dtype) -> CostTable:
    net = _counting_copy(model, torch.device("cpu"))
    x = _sample_input(shape, dtype, torch.device("cpu"))
    depths = range(1, net.num_exits + 1)
    analyses = [_mac_analysis(_LogitsUpTo(net, upto), x) for upto in depths]
    cumulative = [int(a.total()) for a in analyses]
    static = tuple(int(_mac_analysis(_StaticModel(net, upto), x).total()) for upto in depths)
    full = cumulative[-1]
    exits = tuple(
        ExitCost(k + 1, macs, params=_params_up_to(model, k + 1), share=macs / full if full else 0.0)
        for k, macs in enumerate(cumulative)
    )
    unsupported = {op: int(n) for op, n in analyses[-1].unsupported_ops().items()}
    logger.debug("MACs of %s at %s: %s, static %s", type(model).__name__, shape, cumulative, static)
    return CostTable(exits=exits, static_macs_by_depth=static, unsupported_ops=unsupported)


def _mac_analysis(module: nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(module, (x,)).clear_op_handles().set_op_handle(**MAC_OP_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    try:
        with torch.enable_grad():
            analysis.total()
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"could not trace the model on an input of shape {tuple(x.shape)} ({x.dtype}); "
            f"check input_shape (without the batch dimension) and dtype: {error}"
        ) from error
    return analysis


def _counting_copy(model: EarlyExitNet, device: torch.device) -> EarlyExitNet:
    net = copy.deepcopy(model).to(device).eval()
    net.requires_grad_(True)
    return net


def _sample_input(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    fill = torch.zeros if dtype.is_floating_point else torch.ones  # token id 1: no padding
    return fill((1, *shape), dtype=dtype, device=device)


def _default_input_dtype(model: nn.Module) -> torch.dtype:
    if any(isinstance(m, nn.Embedding) for m in model.modules()):
        return torch.int64
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _params_up_to(model: EarlyExitNet, upto: int) -> int:
    later = [*model.stages[upto:], *model.exits[upto:]]
    unused = {id(p) for module in later for p in module.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in unused)


def _check_input(model: EarlyExitNet, input_shape: Sequence[int]) -> tuple[int, ...]:
    if not isinstance(model, EarlyExitNet):
        raise TypeError(f"expected an EarlyExitNet (bench.models), got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must hold positive sizes (no batch dimension), got {input_shape}")
    return shape
