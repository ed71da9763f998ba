"""Classes by name, for compressors, methods and tasks: one file per class, one ``@register`` line each."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Name -> class of one kind; ``kind`` words the errors ("unknown method 'x'; available: ...")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: make ``cls`` available under ``cls.name``."""
        name = cls.name  # type: ignore[attr-defined]
        if name in self._classes:
            raise RuntimeError(f"{self.kind} {name!r} registered twice")
        self._classes[name] = cls
        return cls

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def get(self, name: str) -> T:
        """The class of ``name``; ValueError listing the available names when there is none."""
        if name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._classes))}")
        return self._classes[name]

    def registered(self) -> dict[str, T]:
        return dict(self._classes)
