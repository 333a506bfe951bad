"""A small pre-norm transformer encoder over token ids, with one exit after each encoder block.

Stages pass ``(hidden, keep)`` pairs: ``hidden`` is ``N×L×d`` and ``keep`` the ``N×L`` boolean mask of
non-pad tokens, so attention and pooling ignore padding without data-dependent control flow (the model
traces cleanly under ``torch.jit.trace``). Attention is written with ``nn.Linear`` and ``torch.matmul``
so that fvcore and ``torch.utils.flop_counter`` both count its work.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.base import EarlyExitNet

PAD_ID = 0
#: ``(hidden N×L×d, keep N×L bool)``, the value passed from stage to stage.
TokenStates = tuple[torch.Tensor, torch.Tensor]


class TokenEmbedding(nn.Module):
    """Token ids ``N×L`` → learned token plus learned position embeddings, with the non-pad mask."""

    def __init__(self, vocab_size: int, max_length: int, d_model: int) -> None:
        super().__init__()
        self.max_length = max_length
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        self.positions = nn.Parameter(0.02 * torch.randn(max_length, d_model))

    def forward(self, x: torch.Tensor) -> TokenStates:
        if not torch.jit.is_tracing() and (x.dim() != 2 or x.shape[1] > self.max_length):
            raise ValueError(
                f"expected token ids of shape N×L with L ≤ {self.max_length}, got shape {tuple(x.shape)}"
            )
        return self.tokens(x) + self.positions[: x.shape[1]], x != PAD_ID


class SelfAttention(nn.Module):
    """Multi-head self-attention in which no query attends to pad tokens."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.scale = (d_model // num_heads) ** -0.5
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.output = nn.Linear(d_model, d_model)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._split_heads(proj(h)) for proj in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        # A finite fill value keeps an all-pad sequence finite (uniform weights) instead of NaN.
        scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)
        attended = torch.matmul(scores.softmax(dim=-1), v)
        return self.output(attended.transpose(1, 2).flatten(2))


class EncoderBlock(nn.Module):
    """Pre-norm encoder block: ``h + attn(LN(h))``, then ``h + FF(LN(h))`` with a GELU feed-forward."""

    def __init__(self, d_model: int, num_heads: int, ff_dim: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = SelfAttention(d_model, num_heads)
        self.feed_forward_norm = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Linear(ff_dim, d_model))

    def forward(self, state: TokenStates) -> TokenStates:
        h, keep = state
        h = h + self.attention(self.attention_norm(h), keep)
        h = h + self.feed_forward(self.feed_forward_norm(h))
        return h, keep


class TransformerEncoderNet(EarlyExitNet):
    """``depth`` encoder blocks, one exit after each; the embedding belongs to the first stage.

    Exit ``k`` reads the mean over non-pad tokens of block ``k``'s output, normalised per token by a
    parameter-free layer norm (the final norm of a pre-norm encoder), so each head stays a single linear
    layer on pooled features.
    """

    def __init__(
        self,
        max_length: int,
        num_classes: int,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        ff_dim: int,
        depth: int,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        first = nn.Sequential(
            OrderedDict(
                embed=TokenEmbedding(vocab_size, max_length, d_model),
                block=EncoderBlock(d_model, num_heads, ff_dim),
            )
        )
        rest = [EncoderBlock(d_model, num_heads, ff_dim) for _ in range(depth - 1)]
        self.stages = nn.ModuleList([first, *rest])
        self.exits = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(depth))

    def pool(self, h: TokenStates, k: int) -> torch.Tensor:
        hidden, keep = h
        normed = F.layer_norm(hidden, (self.d_model,))
        weights = keep.unsqueeze(-1).to(normed.dtype)
        return (normed * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
