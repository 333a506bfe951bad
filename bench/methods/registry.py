"""Where methods are found: the ``register`` decorator and the ``cafebench.methods`` entry-point group."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
from typing import TypeVar

from bench.ground.plugins import load_entry_points
from bench.methods.api import FAMILIES, Method

ENTRY_POINT_GROUP = "cafebench.methods"
BUILTIN_PACKAGES = ("baselines",)  # every module in these packages is imported (each registers its method)
BUILTIN_MODULES = ("bench.methods.cafedistill",)
_REGISTRY: dict[str, type[Method]] = {}
_discovered = False
M = TypeVar("M", bound=type[Method])


def register(cls: M) -> M:
    """Class decorator: make a :class:`Method` subclass available under its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError("@register applies to subclasses of bench.methods.api.Method")
    if not cls.name or not cls.name.replace("_", "").isalnum() or cls.name.lower() != cls.name:
        raise ValueError(f"{cls.__name__}.name must be a lower-case identifier, got {cls.name!r}")
    if cls.family not in FAMILIES:
        raise ValueError(f"{cls.__name__}.family must be one of {FAMILIES}, got {cls.family!r}")
    order = declared_order(cls)
    if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
        raise ValueError(f"{cls.__name__}.order must be an integer (its place in the report's lists, lower first) "
                         f"or left out, got {order!r}")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"method name {cls.name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def declared_order(cls: type[Method]) -> int | None:
    """The ``order`` a method's class declares in its own body (None when it declares none: a subclass does not
    take its parent's place in the report's lists)."""
    return vars(cls).get("order")


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package_name in BUILTIN_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{info.name}")
    for module in BUILTIN_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    for _, loaded in load_entry_points(ENTRY_POINT_GROUP):
        if isinstance(loaded, type) and issubclass(loaded, Method) and loaded.name not in _REGISTRY:
            register(loaded)


def available_methods() -> dict[str, type[Method]]:
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[Method]:
    """The method registered as ``name``; an unknown name is refused with the closest registered one."""
    methods = available_methods()
    if name not in methods:
        close = difflib.get_close_matches(name, list(methods), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown method {name!r}{hint}; available: {', '.join(methods)} (a plugin's method "
                         f"needs its file imported: plugins='[FILE.py]', or --plugin FILE.py for cafebench methods; "
                         f"or a {ENTRY_POINT_GROUP!r} entry point)")
    return methods[name]
