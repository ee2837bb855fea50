"""The one-line config error every section's `validate` raises."""

from __future__ import annotations

from sae_ooc.typed_yaml import ConfigError


def check(ok: bool, where: str, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: invalid value for '{key}': {why}")
