"""Registries for named choices (task families, attribution methods, ablations, SAE architectures, analyses).

As `sae_lens.registry` does for SAE architectures: a choice is one function plus one registration, and every
list of valid names (config validation, CLI help, error messages) is read from one place, never retyped.

Config validation must not import torch, so the names live here, in `NAMES` (this module imports no torch), and
both sides read that one list: `config` (its sections check a value against `NAMES[key]`) and the registry of that
key (`Registry(key)` takes its names from `NAMES[key]`; the module holding it registers a function under each):

    METHODS = Registry("attribution.method")

    @METHODS.register("exact")
    def effects_exact(...): ...

A name registered that is not listed, or listed that nothing registered, fails loudly: `register` refuses the
first at import, `check()` (run at the end of the registering module and by the tests) the second.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from sae_ooc.errors import UserError

T = TypeVar("T")

# The one list of each registry's names, in the order --help and error messages give them. A new choice: its name
# here, its function registered in the module that holds the registry (docs/ARCHITECTURE.md says which).
NAMES: dict[str, tuple[str, ...]] = {
    "task.family": ("twohop", "reversal", "comparison", "threehop"),  # sae_ooc.tasks.families.FAMILIES
    "attribution.method": ("exact", "atp", "ig", "atp_verified"),  # sae_ooc.circuits.methods.ATTRIBUTION_METHODS
    "ablation": ("mean", "zero", "resample", "corrupt"),  # sae_ooc.circuits.ablation.ABLATIONS
    # SAELens architecture names: sae_ooc.saes.architectures.ARCHITECTURES
    "sae.architecture": ("standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka_batchtopk"),
    "analysis": ("attention", "logit-lens", "patching", "causal-tracing", "probes", "dla", "back-patching", "answers"),  # sae_ooc.analyses.analyze.ANALYSES
}


class Registry(Generic[T]):
    def __init__(self, key: str):
        if key not in NAMES:
            raise ValueError(f"registry {key!r} has no list of names in sae_ooc.registry.NAMES")
        self.key = key  # the config key or option that names a choice, for messages
        self.expected: tuple[str, ...] = NAMES[key]
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if name not in self.expected:
            raise ValueError(f"{self.key}: {name!r} is not in sae_ooc.registry.NAMES[{self.key!r}]; add it there")

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
        """The registered names, in the order they were registered."""
        return tuple(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def check(self) -> None:
        """Every listed name has a registered function (a name not listed cannot be registered)."""
        if set(self.expected) != set(self._items):
            raise AssertionError(f"{self.key}: registered {sorted(self._items)} but sae_ooc.registry.NAMES lists {sorted(self.expected)}")
