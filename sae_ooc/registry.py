"""Registries for named choices (task families, attribution methods, ablations, SAE architectures).

As `sae_lens.registry` does for SAE architectures: a choice is one function plus one registration, and every
list of valid names (config validation, CLI help, error messages) is read from the registry, never retyped.

    METHODS = Registry("attribution.method")

    @METHODS.register("exact")
    def effects_exact(...): ...

Config validation must not import torch, so config.py checks names against torch-free tuples; each registry
that has such a tuple passes it as `expected`, and `check()` (run by the tests) proves the two agree.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from sae_ooc.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str, expected: tuple[str, ...] | None = None):
        self.key = key  # the config key or option that names a choice, for messages
        self.expected = expected
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.key}: {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(f"unknown {self.key} {name!r}; valid values: {', '.join(self._items)}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def check(self) -> None:
        """The registered names are exactly the torch-free list config validation uses."""
        if self.expected is not None and set(self.expected) != set(self._items):
            raise AssertionError(f"{self.key}: registered {sorted(self._items)} but config allows {sorted(self.expected)}")
