"""Dynamic early-exit inference evaluated from one recorded forward pass, without further passes.

Rule. At threshold ``t`` a sample leaves at the first exit whose confidence (its maximum softmax
probability) is at least ``t``; the last exit answers every sample that reaches it. Threshold 0 sends every
sample out at exit 1; a threshold above 1 sends every sample to the last exit.

Definitions (accuracies are fractions in [0, 1], MACs are per sample):

* ``exit_macs[k]`` is the *cumulative* cost of an inference that stops at exit ``k + 1``, earlier heads
  included: ``CostTable.exits[k].macs`` from :mod:`bench.measure.flops`.
* Expected MACs at ``t``: the mean over samples of ``exit_macs`` at the exit where each sample leaves.
* Cost reduction at ``t`` (the ``dyn/cost_reduction@{t}`` metric): ``1 − expected MACs / static MACs``,
  where the static MACs are those of the backbone plus the last head, without intermediate heads
  (``CostTable.static_macs``). It is negative when the intermediate heads cost more than they save.
* Accuracy drop at ``t``: last-exit accuracy minus dynamic accuracy at ``t``, in accuracy units
  (0.02 = two percentage points); positive when dynamic inference loses accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: 0, 0.01, …, 1 and 1.01; above every softmax probability, 1.01 sends every sample to the last exit.
DEFAULT_THRESHOLDS: tuple[float, ...] = (*(round(i / 100, 2) for i in range(101)), 1.01)


@dataclass
class ExitRecords:
    """Per-sample confidence and correctness at every exit, from one forward pass over a set of samples."""

    confidence: np.ndarray  # N × m, maximum softmax probability per exit (float32 from logits; float64 kept)
    correct: np.ndarray  # N × m bool, prediction (argmax) equals the label

    def __post_init__(self) -> None:
        confidence = np.asarray(self.confidence)
        self.confidence = confidence.astype(np.result_type(confidence, np.float32), copy=False)
        self.correct = np.asarray(self.correct, dtype=bool)
        if self.confidence.ndim != 2 or self.confidence.shape[1] < 1:
            raise ValueError(f"confidence must be an N×m array (m ≥ 1 exits), not {self.confidence.shape}")
        if self.correct.shape != self.confidence.shape:
            raise ValueError(
                f"correct has shape {self.correct.shape} but confidence has {self.confidence.shape}; "
                "both must be N samples × m exits"
            )

    @property
    def num_samples(self) -> int:
        return self.confidence.shape[0]

    @property
    def num_exits(self) -> int:
        return self.confidence.shape[1]

    @property
    def exit_accuracy(self) -> np.ndarray:
        """Accuracy of each exit when it answers every sample (length m)."""
        return self.correct.mean(axis=0)

    @classmethod
    def from_logits(cls, logits: Sequence[torch.Tensor], labels: torch.Tensor) -> ExitRecords:
        """Records from the per-exit logits (m tensors of shape N × classes) and the N labels."""
        confidence, correct = exit_outcomes(logits, labels)
        return cls(confidence.cpu().numpy(), correct.cpu().numpy())

    @staticmethod
    def concat(records: Sequence[ExitRecords]) -> ExitRecords:
        """The samples of all ``records`` (e.g. of several clients) in one set."""
        if not records:
            raise ValueError("no records to concatenate")
        exit_counts = {r.num_exits for r in records}
        if len(exit_counts) > 1:
            raise ValueError(f"records have different numbers of exits: {sorted(exit_counts)}")
        return ExitRecords(
            np.concatenate([r.confidence for r in records]), np.concatenate([r.correct for r in records])
        )


def exit_outcomes(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(confidence, correct)``, two N × m tensors on the logits' device: each exit's maximum softmax probability
    (float32) and whether its argmax is the label; from the per-exit logits (m tensors N × classes) and N labels."""
    if not logits:
        raise ValueError("logits is empty: pass one N×classes tensor per exit")
    labels = labels.detach()
    confidence, correct = [], []
    for k, exit_logits in enumerate(logits):
        if exit_logits.dim() != 2 or exit_logits.shape[0] != labels.shape[0]:
            raise ValueError(
                f"logits of exit {k + 1} have shape {tuple(exit_logits.shape)}; "
                f"expected {labels.shape[0]} (the number of labels) × classes"
            )
        best, predicted = torch.softmax(exit_logits.detach().float(), dim=-1).max(dim=-1)
        confidence.append(best)
        correct.append(predicted == labels)
    return torch.stack(confidence, dim=1), torch.stack(correct, dim=1)


class ClientRecords(Mapping[int, ExitRecords]):
    """Exit records of many clients in two flat arrays allocated up front; ``records[c]`` views client ``c``'s rows.

    An evaluation fills them in place (:meth:`write`), so scoring thousands of clients makes no small long-lived
    allocation between its forward passes (each would pin a page of the heap the passes use) and holds no
    per-client arrays. The arrays live on ``device``, where the evaluation computes them; reading records copies
    them to the host once after writes (on the CPU the records view the arrays themselves).
    """

    def __init__(self, shapes: Mapping[int, tuple[int, int]], device: torch.device | str = "cpu"):
        """``shapes``: client → (samples, exits)."""
        self._index = {client: i for i, client in enumerate(shapes)}
        self._shapes = np.array(list(shapes.values()), dtype=np.int64).reshape(-1, 2)
        self._offsets = np.concatenate(([0], np.cumsum(self._shapes.prod(axis=1))))
        total = int(self._offsets[-1])
        self._on_host = torch.device(device).type == "cpu"
        self._confidence = torch.zeros(total, dtype=torch.float32, device=device)
        self._correct = torch.zeros(total, dtype=torch.bool, device=device)
        self._host: tuple[np.ndarray, np.ndarray] | None = (
            (self._confidence.numpy(), self._correct.numpy()) if self._on_host else None)

    def _rows(self, client: int) -> tuple[slice, tuple[int, int]]:
        i = self._index[client]
        return slice(int(self._offsets[i]), int(self._offsets[i + 1])), tuple(int(d) for d in self._shapes[i])

    def write(self, client: int, confidence: torch.Tensor, correct: torch.Tensor) -> None:
        """Store client ``client``'s records (N × m tensors, as :func:`exit_outcomes` returns) without leaving
        their device."""
        rows, shape = self._rows(client)
        if tuple(confidence.shape) != shape or tuple(correct.shape) != shape:
            raise ValueError(f"client {client} holds {shape[0]} samples × {shape[1]} exits, got records of shape "
                             f"{tuple(confidence.shape)}")
        self._confidence[rows] = confidence.reshape(-1)
        self._correct[rows] = correct.reshape(-1)
        if not self._on_host:
            self._host = None

    def __getitem__(self, client: int) -> ExitRecords:
        rows, shape = self._rows(client)
        if self._host is None:
            self._host = (self._confidence.cpu().numpy(), self._correct.cpu().numpy())
        confidence, correct = self._host
        return ExitRecords(confidence[rows].reshape(shape), correct[rows].reshape(shape))

    def __iter__(self) -> Iterator[int]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


@dataclass
class DynamicPoint:
    """Dynamic inference at one threshold."""

    threshold: float
    accuracy: float
    expected_macs: float
    exit_fractions: list[float]  # share of samples leaving at each exit (sums to 1)


def dynamic_curve(
    records: ExitRecords, exit_macs: Sequence[float], thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> list[DynamicPoint]:
    """Accuracy, expected MACs and exit shares of dynamic inference at every threshold.

    Vectorised over thresholds: a sample reaches exit ``k + 1`` exactly when the best confidence of exits
    ``1..k`` is below the threshold, so counting samples that reach (and answer correctly at) each exit is
    one sort and one binary search per exit, whatever the number of thresholds.
    """
    macs = _check_exit_macs(exit_macs, records.num_exits)
    n = records.num_samples
    if n == 0:
        raise ValueError("records hold no samples; dynamic inference needs at least one")
    t = np.asarray(thresholds, dtype=np.float64)
    # Column k: a sample reaches exit k + 1 iff this bound is below the threshold (-inf always, inf never).
    bounds = np.hstack(
        [
            np.full((n, 1), -np.inf),
            np.maximum.accumulate(records.confidence[:, :-1], axis=1),
            np.full((n, 1), np.inf),
        ]
    )
    leaving = np.stack([_count_leaving(bounds[:, k], bounds[:, k + 1], t) for k in range(records.num_exits)])
    right = np.stack(
        [
            _count_leaving(bounds[records.correct[:, k], k], bounds[records.correct[:, k], k + 1], t)
            for k in range(records.num_exits)
        ]
    )
    accuracy = right.sum(axis=0) / n
    expected_macs = macs @ leaving / n
    fractions = leaving / n
    return [
        DynamicPoint(float(t[j]), float(accuracy[j]), float(expected_macs[j]), fractions[:, j].tolist())
        for j in range(len(t))
    ]


def mean_over_clients(
    curves: Sequence[Sequence[DynamicPoint]], weights: Sequence[float] | None = None
) -> list[DynamicPoint]:
    """Point-wise mean of the clients' curves (all over the same thresholds).

    Unweighted by default: every client counts once, as for the per-client accuracies of personalised FL.
    With ``weights`` set to the clients' sample counts it is the pooled curve of all their samples.
    """
    if not curves:
        raise ValueError("no client curves to average")
    thresholds = [p.threshold for p in curves[0]]
    if any([p.threshold for p in curve] != thresholds for curve in curves):
        raise ValueError("client curves use different thresholds; compute them all with the same thresholds")
    if weights is not None and len(weights) != len(curves):
        raise ValueError(f"got {len(weights)} weights for {len(curves)} client curves")
    accuracy = np.average([[p.accuracy for p in c] for c in curves], axis=0, weights=weights)
    expected_macs = np.average([[p.expected_macs for p in c] for c in curves], axis=0, weights=weights)
    fractions = np.average([[p.exit_fractions for p in c] for c in curves], axis=0, weights=weights)
    return [
        DynamicPoint(t, float(accuracy[j]), float(expected_macs[j]), fractions[j].tolist())
        for j, t in enumerate(thresholds)
    ]


def cost_reduction(point: DynamicPoint, static_macs: float) -> float:
    """``1 − expected MACs / static MACs`` (static: backbone + last head, no intermediate heads)."""
    if static_macs <= 0:
        raise ValueError(f"static_macs must be positive, got {static_macs}")
    return 1.0 - point.expected_macs / static_macs


def accuracy_drop(point: DynamicPoint, last_exit_accuracy: float) -> float:
    """Last-exit accuracy minus dynamic accuracy, in accuracy units (positive: dynamic inference loses)."""
    return last_exit_accuracy - point.accuracy


def budgeted_accuracy(
    val: ExitRecords,
    test: ExitRecords,
    exit_macs: Sequence[float],
    budgets: Sequence[float],
    thresholds: Sequence[float] | None = None,
) -> list[dict[str, float | None]]:
    """Test accuracy under each MACs budget, with the threshold chosen on validation data.

    For each budget the threshold with the best validation accuracy among those whose validation expected
    MACs fit the budget is chosen (ties: the cheaper on validation, then the lower threshold); its test
    accuracy and test expected MACs are reported. Where no threshold fits, the threshold is None and the
    numbers are NaN. Keys: ``budget``, ``threshold``, ``val_accuracy``, ``val_macs``, ``test_accuracy``,
    ``test_macs``.
    """
    grid = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    val_curve = dynamic_curve(val, exit_macs, grid)
    test_curve = dynamic_curve(test, exit_macs, grid)
    val_accuracy = np.array([p.accuracy for p in val_curve])
    val_macs = np.array([p.expected_macs for p in val_curve])
    # Best first: highest validation accuracy, then lowest validation MACs, then lowest threshold.
    preference = np.lexsort((np.arange(len(val_curve)), val_macs, -val_accuracy))
    results: list[dict[str, float | None]] = []
    for budget in budgets:
        row: dict[str, float | None] = {"budget": float(budget), "threshold": None}
        row.update(dict.fromkeys(("val_accuracy", "val_macs", "test_accuracy", "test_macs"), np.nan))
        fitting = preference[val_macs[preference] <= budget]
        if len(fitting):
            chosen_val, chosen_test = val_curve[fitting[0]], test_curve[fitting[0]]
            row.update(
                threshold=chosen_val.threshold,
                val_accuracy=chosen_val.accuracy,
                val_macs=chosen_val.expected_macs,
                test_accuracy=chosen_test.accuracy,
                test_macs=chosen_test.expected_macs,
            )
        results.append(row)
    return results


def _count_leaving(reach_bound: np.ndarray, pass_bound: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per threshold, how many samples reach an exit (bound below it) minus how many go past it."""
    return _count_below(reach_bound, thresholds) - _count_below(pass_bound, thresholds)


def _count_below(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(values), thresholds, side="left")


def _check_exit_macs(exit_macs: Sequence[float], num_exits: int) -> np.ndarray:
    macs = np.asarray(exit_macs, dtype=np.float64)
    if macs.shape != (num_exits,):
        raise ValueError(f"exit_macs needs one cumulative cost per exit ({num_exits}), got {macs.shape}")
    return macs
