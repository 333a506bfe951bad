"""Dirichlet label partition of a dataset over clients, with per-client train/val/test splits.

The scheme is the one most personalized-FL papers use: for every class, draw client proportions
``q ~ Dir(alpha * 1)`` and deal that class's shuffled samples out to the clients by ``q``. Small ``alpha``
gives each client few classes; large ``alpha`` approaches an i.i.d. split. Every client then splits its
own share into train/val/test, so its test data follow its own label distribution.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bench.ground.rng import numpy_generator

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
SCHEME = "dirichlet"


class PartitionError(ValueError):
    """A partition setting that cannot be satisfied; the message says which setting to change."""


@dataclass(frozen=True)
class PartitionSpec:
    """Everything that determines a partition of a named dataset.

    ``min_samples`` is the minimum total (train + val + test) size of every client; ``balance_cap``, when
    given, caps every client's total at ``balance_cap × N / num_clients`` samples; ``split`` holds the
    train/val/test fractions each client applies to its own share; ``max_retries`` bounds the number of
    Dirichlet draws tried before giving up (it does not change a successful result, so it is not part of
    the hash).
    """

    dataset: str
    num_clients: int
    alpha: float
    seed: int = 0
    min_samples: int = 10
    balance_cap: float | None = None
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    max_retries: int = 100

    def __post_init__(self) -> None:
        if len(self.split) != 3:
            raise PartitionError(f"split must hold three fractions (train, val, test), got {self.split!r}")
        object.__setattr__(self, "split", tuple(float(f) for f in self.split))
        _check_spec(self)

    def content_hash(self) -> str:
        """Short stable hex hash of the settings that determine the partition."""
        identity = {k: v for k, v in asdict(self).items() if k != "max_retries"}
        identity["scheme"] = SCHEME
        blob = json.dumps(identity, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _check_spec(spec: PartitionSpec) -> None:
    if spec.num_clients < 1:
        raise PartitionError(f"num_clients must be at least 1, got {spec.num_clients}")
    if not (math.isfinite(spec.alpha) and spec.alpha > 0):
        raise PartitionError(f"alpha must be a finite number > 0, got {spec.alpha}")
    if spec.seed < 0:
        raise PartitionError(f"seed must be >= 0, got {spec.seed}")
    if any(not math.isfinite(f) or f < 0 for f in spec.split) or not math.isclose(sum(spec.split), 1.0):
        raise PartitionError(f"split must be three non-negative fractions summing to 1, got {spec.split}")
    if spec.split[0] == 0 or spec.split[2] == 0:
        raise PartitionError(f"split must give train and test a fraction > 0, got {spec.split}")
    needed = _min_client_size(spec.split)
    if spec.min_samples < needed:
        raise PartitionError(
            f"min_samples={spec.min_samples} is too small for split={spec.split}: a client needs at least "
            f"{needed} samples to get one train and one test sample; raise min_samples to {needed}"
        )
    if spec.balance_cap is not None and not spec.balance_cap >= 1:
        raise PartitionError(
            f"balance_cap must be >= 1 (a multiple of the mean client size), got {spec.balance_cap}"
        )
    if spec.max_retries < 1:
        raise PartitionError(f"max_retries must be at least 1, got {spec.max_retries}")


def _split_counts(n: int, split: tuple[float, float, float]) -> tuple[int, int, int]:
    """Train/val/test counts of ``n`` samples; each is within one sample of ``n × fraction``."""
    train_end = math.floor(n * split[0] + 0.5)
    val_end = max(train_end, math.floor(n * (split[0] + split[1]) + 0.5))
    return train_end, val_end - train_end, n - val_end


def _min_client_size(split: tuple[float, float, float]) -> int:
    """Smallest client size whose split has a train and a test sample (both counts grow with n)."""
    n = 1
    while True:
        train, _, test = _split_counts(n, split)
        if train >= 1 and test >= 1:
            return n
        n += 1


class ClientIndices:
    """One split's index tensors of all clients, held as one flat int64 tensor and the clients' offsets.

    ``indices[c]`` is client ``c``'s index tensor (a view). One tensor for all clients instead of one per client
    keeps the partition of thousands of clients small: a tensor costs a few hundred bytes besides its data.
    """

    def __init__(self, flat: torch.Tensor, sizes: Sequence[int] | np.ndarray):
        self.flat = flat.to(torch.int64).reshape(-1)
        self.offsets = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
        if self.offsets[-1] != len(self.flat):
            raise ValueError(f"client sizes add up to {self.offsets[-1]} but there are {len(self.flat)} indices")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, client: int) -> torch.Tensor:
        if not -len(self) <= client < len(self):
            raise IndexError(f"client must be in 0..{len(self) - 1}, got {client}")
        client %= len(self)
        return self.flat[int(self.offsets[client]) : int(self.offsets[client + 1])]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[c] for c in range(len(self)))

    def sizes(self) -> np.ndarray:
        """Every client's number of indices."""
        return np.diff(self.offsets)


@dataclass(eq=False)
class Partition:
    """Per-client int64 index tensors (sorted) into the dataset, for train, val and test."""

    spec: PartitionSpec
    train: ClientIndices
    val: ClientIndices
    test: ClientIndices

    @property
    def hash(self) -> str:
        return self.spec.content_hash()

    @property
    def num_clients(self) -> int:
        return len(self.train)

    def split_indices(self, split: str) -> ClientIndices:
        """The per-client index tensors of ``split`` ("train", "val" or "test")."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        return getattr(self, split)

    def client_indices(self, client: int) -> torch.Tensor:
        """All of a client's samples: its train, val and test indices concatenated."""
        if not 0 <= client < self.num_clients:
            raise IndexError(f"client must be in 0..{self.num_clients - 1}, got {client}")
        return torch.cat([self.train[client], self.val[client], self.test[client]])

    def sizes(self) -> np.ndarray:
        """``num_clients × 3`` int64 array of train, val and test counts."""
        return np.stack([self.split_indices(s).sizes() for s in SPLIT_NAMES], axis=1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Partition):
            return NotImplemented
        return self.spec == other.spec and all(
            len(mine) == len(theirs) and all(map(torch.equal, mine, theirs))
            for mine, theirs in ((self.split_indices(s), other.split_indices(s)) for s in SPLIT_NAMES)
        )


def _check_labels(labels: torch.Tensor, num_classes: int) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise PartitionError(
            f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    y = labels.cpu().numpy().astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise PartitionError(f"labels must lie in 0..{num_classes - 1}, found {y.min()}..{y.max()}")
    return y


def _proportional_counts(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` items by ``weights`` (not all zero) into integer counts summing to ``total``."""
    bounds = np.rint(np.cumsum(weights / weights.sum()) * total).astype(np.int64)
    bounds[-1] = total
    return np.diff(bounds, prepend=0)


def _allocate(total: int, q: np.ndarray, room: np.ndarray) -> np.ndarray:
    """Deal ``total`` items out by proportions ``q`` without exceeding any client's ``room``.

    Clients with no room left get weight zero; what the rounding puts above a client's room goes to the
    clients that still have room, again by ``q``. Requires ``room.sum() >= total``.
    """
    counts = np.zeros_like(room)
    while (left := total - counts.sum()) > 0:
        spare = room - counts
        weights = np.where(spare > 0, q, 0.0)
        if weights.sum() == 0:
            weights = (spare > 0).astype(np.float64)
        counts += np.minimum(_proportional_counts(left, weights), spare)
    return counts


def _capacity(spec: PartitionSpec, n: int) -> int:
    """Largest total a client may hold."""
    if spec.balance_cap is None:
        return n
    return math.floor(spec.balance_cap * n / spec.num_clients)


def _check_feasible(spec: PartitionSpec, n: int) -> None:
    if spec.num_clients * spec.min_samples > n:
        raise PartitionError(
            f"{spec.num_clients} clients × min_samples={spec.min_samples} need "
            f"{spec.num_clients * spec.min_samples} samples but dataset {spec.dataset!r} has {n}; "
            "lower min_samples or use fewer clients"
        )
    if spec.num_clients * _capacity(spec, n) < n:
        raise PartitionError(
            f"balance_cap={spec.balance_cap} lets {spec.num_clients} clients hold only "
            f"{spec.num_clients * _capacity(spec, n)} of {n} samples; raise balance_cap"
        )


def _draw_client_shares(y: np.ndarray, num_classes: int, spec: PartitionSpec) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices from Dirichlet draws, retried until every client has min_samples: all samples ordered by
    client (each client's class by class, in drawn order) and every client's number of samples."""
    rng = numpy_generator(spec.seed, "partition")
    capacity = _capacity(spec, len(y))
    by_class = [np.flatnonzero(y == c) for c in range(num_classes)]
    alpha = np.full(spec.num_clients, spec.alpha)
    smallest = 0
    for attempt in range(1, spec.max_retries + 1):
        sizes = np.zeros(spec.num_clients, dtype=np.int64)
        samples, owners = [], []
        for members in by_class:
            shuffled = rng.permutation(members)
            counts = _allocate(len(shuffled), rng.dirichlet(alpha), capacity - sizes)
            samples.append(shuffled)
            owners.append(np.repeat(np.arange(spec.num_clients), counts))
            sizes += counts
        if sizes.min() >= spec.min_samples:
            log.debug("Dirichlet partition %s found on attempt %d", spec.content_hash(), attempt)
            # A stable sort by client keeps each client's samples class by class, in the order drawn.
            by_client = np.argsort(np.concatenate(owners), kind="stable")
            return np.concatenate(samples)[by_client], sizes
        smallest = max(smallest, int(sizes.min()))
    raise PartitionError(
        f"no Dirichlet draw in {spec.max_retries} tries gave each of {spec.num_clients} clients at least "
        f"min_samples={spec.min_samples} samples (alpha={spec.alpha}, {len(y)} samples; the best draw's "
        f"smallest client had {smallest}); lower min_samples, raise alpha or use fewer clients"
    )


def dirichlet_partition(labels: torch.Tensor, num_classes: int, spec: PartitionSpec) -> Partition:
    """Partition samples with ``labels`` over ``spec.num_clients`` clients by a Dirichlet label draw.

    Every sample lands in exactly one client and one of its train/val/test splits. Deterministic given
    ``spec``; raises :class:`PartitionError` for impossible settings or when retries run out.
    """
    y = _check_labels(labels, num_classes)
    _check_feasible(spec, len(y))
    shares, share_sizes = _draw_client_shares(y, num_classes, spec)
    split_sizes = np.array([_split_counts(int(n), spec.split) for n in share_sizes], dtype=np.int64).reshape(-1, 3)
    share_starts = np.concatenate(([0], np.cumsum(share_sizes)))
    # Allocated up front and filled client by client through the views: no per-client arrays outlive their client.
    splits = {name: ClientIndices(torch.empty(int(split_sizes[:, i].sum()), dtype=torch.int64), split_sizes[:, i])
              for i, name in enumerate(SPLIT_NAMES)}
    for client in range(spec.num_clients):
        share = shares[share_starts[client] : share_starts[client + 1]]
        shuffled = numpy_generator(spec.seed, "partition-split", client=client).permutation(share)
        train, val, _ = split_sizes[client]
        for name, part in zip(SPLIT_NAMES, np.split(shuffled, [train, train + val]), strict=True):
            splits[name][client].copy_(torch.from_numpy(np.sort(part)))
    return Partition(spec=spec, **splits)


def _labels_fingerprint(labels: torch.Tensor) -> str:
    return hashlib.sha256(labels.cpu().to(torch.int64).numpy().tobytes()).hexdigest()


def cache_path(cache_dir: Path, spec: PartitionSpec) -> Path:
    """Where the partition of ``spec`` is cached inside ``cache_dir``."""
    return Path(cache_dir) / f"partition_{spec.content_hash()}.pt"


def _read_cache(path: Path, spec: PartitionSpec, fingerprint: str) -> Partition:
    payload = torch.load(path, weights_only=True)
    if payload["spec"] != json.dumps(asdict(spec), sort_keys=True):
        raise ValueError("cached settings differ from the requested ones")
    if payload["labels"] != fingerprint:
        raise ValueError("cached partition was drawn for different labels")
    splits = {}
    for name in SPLIT_NAMES:
        if f"{name}_sizes" not in payload:
            raise ValueError("written in the older layout of one index tensor per client")
        flat, sizes = payload[name], payload[f"{name}_sizes"]
        if not isinstance(flat, torch.Tensor) or not isinstance(sizes, torch.Tensor) or len(sizes) != spec.num_clients:
            raise ValueError(f"cached {name} split does not hold the indices of {spec.num_clients} clients")
        splits[name] = ClientIndices(flat, sizes.numpy())
    return Partition(spec=spec, **splits)


def _write_cache(path: Path, partition: Partition, fingerprint: str) -> None:
    payload = {
        "spec": json.dumps(asdict(partition.spec), sort_keys=True),
        "labels": fingerprint,
    }
    for name in SPLIT_NAMES:
        indices = partition.split_indices(name)
        payload[name] = indices.flat
        payload[f"{name}_sizes"] = torch.from_numpy(indices.sizes())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_create_partition(
    labels: torch.Tensor, num_classes: int, spec: PartitionSpec, cache_dir: Path | None
) -> Partition:
    """The partition of ``spec``, read from ``cache_dir`` when cached there, else drawn and cached.

    A cache file that cannot be read or does not match ``spec`` and ``labels`` is logged and rebuilt.
    With ``cache_dir=None`` the partition is drawn and not cached.
    """
    if cache_dir is None:
        return dirichlet_partition(labels, num_classes, spec)
    path = cache_path(cache_dir, spec)
    fingerprint = _labels_fingerprint(labels)
    if path.exists():
        try:
            partition = _read_cache(path, spec, fingerprint)
            log.debug("partition %s read from %s", spec.content_hash(), path)
            return partition
        except Exception as err:  # any unreadable or mismatched cache is rebuilt
            reason = "an empty file" if path.stat().st_size == 0 else str(err) or type(err).__name__
            log.warning("partition cache %s is unusable (%s); rebuilding it", path, reason)
    partition = dirichlet_partition(labels, num_classes, spec)
    _write_cache(path, partition, fingerprint)
    log.info("partition %s written to %s", spec.content_hash(), path)
    return partition


def class_histogram(
    partition: Partition, labels: torch.Tensor, num_classes: int, split: str | None = None
) -> np.ndarray:
    """``clients × classes`` int64 counts of the clients' samples (all splits when ``split`` is None)."""
    y = labels.cpu().numpy()
    rows = [
        partition.client_indices(c) if split is None else partition.split_indices(split)[c]
        for c in range(partition.num_clients)
    ]
    return np.stack([np.bincount(y[r.numpy()], minlength=num_classes) for r in rows]).astype(np.int64)


def label_entropy(hist: np.ndarray) -> np.ndarray:
    """Per-client Shannon entropy of the label distribution, in nats (0 for an empty client).

    Ranges from 0 (one class) to ``log(num_classes)`` (uniform over classes).
    """
    counts = np.asarray(hist, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=1)


def partition_title(dataset: str, alpha: float) -> str:
    """The heatmap's title: which data, split how (e.g. ``fmnist, Dirichlet α=0.1``)."""
    return f"{dataset}, Dirichlet α={alpha:g}"


def format_histogram(hist: np.ndarray) -> str:
    """A text table with one row per client: client id, total and per-class counts."""
    counts = np.asarray(hist, dtype=np.int64)
    header = ["client", "total", *(f"c{k}" for k in range(counts.shape[1]))]
    rows = [[str(i), str(row.sum()), *map(str, row)] for i, row in enumerate(counts)]
    table = [header, *rows]
    widths = [max(len(r[j]) for r in table) for j in range(len(header))]
    return "\n".join(" ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in table)
