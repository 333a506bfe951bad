"""Errors raised when a dataset cannot be found or read."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DataNotFoundError(FileNotFoundError):
    """The dataset is in none of the places searched and could not be downloaded.

    The message lists every place looked and how to get the data.
    """


class CorruptDataError(ValueError):
    """A dataset file exists but is malformed; the message names the file and what is wrong."""


class DataTooLargeError(ValueError):
    """The data, or what its options ask for, would not fit in the memory available; refused before allocating."""


def require_labels_in_range(labels: np.ndarray, num_classes: int, path: Path) -> None:
    """Raise :class:`CorruptDataError` naming ``path`` unless every label lies in ``0..num_classes-1``."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDataError(
            f"{path}: labels range over {int(labels.min())}..{int(labels.max())}, "
            f"expected 0..{num_classes - 1}"
        )
