"""A cache of decoded images beside the files they came from (Tiny ImageNet, image folders).

The cache is a dict of tensors and the entries that identify what it was made from, written atomically with
``torch.save`` and read with the safe loader (``weights_only=True``). A cache that cannot be read is ignored with a
warning, one that cannot be written only costs the decoding next time: the caller decodes the images again.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def read_decoded_cache(path: Path) -> dict[str, Any] | None:
    """The cache's entries (empty when the file holds something else), or None where there is no readable cache."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        log.warning("ignoring unreadable cache %s (%s)", path, err)
        return None
    return cached if isinstance(cached, dict) else {}


def write_decoded_cache(path: Path, entries: dict[str, Any]) -> None:
    """Write the cache atomically (a partial file renamed into place); a failure is logged, not raised."""
    partial = path.with_suffix(".partial")
    try:
        torch.save(entries, partial)
        partial.replace(path)
    except OSError as err:
        log.warning("could not cache the decoded images at %s (%s)", path, err)
        partial.unlink(missing_ok=True)
