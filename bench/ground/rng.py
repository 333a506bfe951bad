"""Generators derived from (seed, purpose, round, client): no draw ever touches global RNG state."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, purpose: str, round: int = -1, client: int = -1) -> int:
    """A 63-bit seed that depends only on its arguments (stable across processes and platforms)."""
    digest = hashlib.sha256(f"{seed}|{purpose}|{round}|{client}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, purpose: str, round: int = -1, client: int = -1) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, purpose, round, client))
    return gen


def numpy_generator(seed: int, purpose: str, round: int = -1, client: int = -1) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, purpose, round, client))


def sample_clients(seed: int, round: int, num_clients: int, participation: float) -> list[int]:
    """Clients taking part in ``round``: the same stream for every method under one seed."""
    count = max(1, round_half_up(participation * num_clients))
    if count >= num_clients:
        return list(range(num_clients))
    chosen = numpy_generator(seed, "client-sampling", round).choice(num_clients, size=count, replace=False)
    return sorted(int(c) for c in chosen)


def round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))
