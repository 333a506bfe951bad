"""Third-party plugins declared as package entry points (``cafebench.methods``, ``cafebench.datasets``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points

log = logging.getLogger(__name__)


def load_entry_points(group: str) -> Iterator[tuple[EntryPoint, object]]:
    """Each entry point of ``group`` with the object it names; one that fails to import is logged and skipped,
    so a broken third-party plugin does not break the harness."""
    for ep in entry_points(group=group):
        try:
            loaded = ep.load()
        except Exception as exc:
            log.warning("could not load plugin %s (%s) of group %s: %s", ep.name, ep.value, group, exc)
            continue
        yield ep, loaded
