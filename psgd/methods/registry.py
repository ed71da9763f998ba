"""Methods by name: one file per method, one ``@register`` line each."""

from __future__ import annotations

from typing import TypeVar

from psgd.methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}

M = TypeVar("M", bound=type[Method])


def register(cls: M) -> M:
    if cls.name in _REGISTRY:
        raise RuntimeError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def registered() -> dict[str, type[Method]]:
    return dict(_REGISTRY)


def build(options, task=None) -> Method:
    """The method the options name, ready to run. ``task`` (optional) lends constants such as
    smoothness to methods whose step size comes from theory."""
    return method_class(options.name)(options)
