"""Versioned registries ("tfidf_lr.v1") mapping config type names to classes.

A registry is an explicit dict filled by decorators at import time: no
``getattr(module, name)`` lookups, so only registered names can be built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from medcoder.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> class map for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator registering ``cls`` under a versioned ``name``."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; a ConfigError lists the known names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._entries)


MODELS: Registry = Registry("model")
