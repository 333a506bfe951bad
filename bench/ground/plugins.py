"""Plugins: modules or ``.py`` files named in a config's ``plugins:`` (imported here), and third-party plugins
declared as package entry points (``cafebench.methods``, ``cafebench.datasets``)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import traceback
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

log = logging.getLogger(__name__)


class PluginError(ValueError):
    """A plugin that cannot be imported; the message names its file, and the exception its code raised."""


def _failure(what: str, file: str | None, exc: Exception) -> PluginError:
    """``<what> raised <Type> on import (line N): <message>``, the line being the last one of ``file`` in the
    traceback."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if file is not None and Path(frame.filename).resolve() == Path(file).resolve()]
    where = f" (line {lines[-1]})" if lines else ""
    return PluginError(f"{what} raised {type(exc).__name__} on import{where}: {exc}")


def import_plugin(spec: str) -> None:
    """Import one plugin, a dotted module name or the path of a ``.py`` file, so that its ``@register`` runs; a file
    is imported once per process (as ``cafebench_plugin_<stem>``).

    Raises:
        PluginError: the file does not exist, the module is not found, or its code raised while being imported (the
            message names the file, the exception type and the line of the file it came from).
    """
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise PluginError(f"file {spec!r} does not exist")
        module_name = f"cafebench_plugin_{path.stem}"
        if module_name in sys.modules:
            return
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]  # so that a fixed file is imported again, not taken as loaded
            raise _failure(f"plugin file {str(path.resolve())!r}", str(path), exc) from exc
        return
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError) as exc:
        raise PluginError(f"cannot import {spec!r}: {exc}") from exc
    if found is None:
        raise PluginError(f"cannot import {spec!r}: No module named {spec!r}")
    try:
        importlib.import_module(spec)
    except Exception as exc:
        raise _failure(f"plugin module {spec!r} ({found.origin})", found.origin, exc) from exc


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
