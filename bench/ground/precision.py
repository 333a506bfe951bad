"""Mixed precision: the autocast context and gradient scaler of ``train.precision`` (fp32, bf16, fp16).

``fp32`` changes nothing (no autocast, no scaler), so fp32 results are those of plain PyTorch. ``bf16`` and ``fp16``
run the forward pass under :func:`torch.autocast` on the tensors' device type; ``fp16`` also scales the loss
(:class:`torch.amp.GradScaler`) so small gradients do not underflow. Parameters and optimiser state stay float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision: str) -> torch.dtype:
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}") from None


@contextlib.contextmanager
def autocast(device_type: str, precision: str) -> Iterator[None]:
    """Autocast to ``precision``'s dtype on ``device_type`` (``cpu``, ``cuda``, ``mps``); nothing for fp32."""
    dtype = precision_dtype(precision)
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type, dtype=dtype):
        yield


def grad_scaler(device_type: str, precision: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (None otherwise: bf16 has float32's exponent range)."""
    return torch.amp.GradScaler(device_type) if precision_dtype(precision) == torch.float16 else None
