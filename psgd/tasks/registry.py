"""Tasks by name: one file per task family, one ``@register`` line per task."""

from __future__ import annotations

from typing import TypeVar

from psgd.tasks.base import Task

_REGISTRY: dict[str, type[Task]] = {}

T = TypeVar("T", bound=type[Task])


def register(cls: T) -> T:
    if cls.name in _REGISTRY:
        raise RuntimeError(f"task {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def task_class(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def registered() -> dict[str, type[Task]]:
    return dict(_REGISTRY)
