"""The one-line config error every section's `validate` raises."""

from __future__ import annotations

import dataclasses

from sae_ooc.typed_yaml import ConfigError

# field metadata of a setting that changes how fast a stage runs, never what it computes (sae.workers): left out of
# the stage's fingerprint and of the settings recorded with its outputs, so changing it reruns nothing
NOT_HASHED = {"hashed": False}


def is_hashed(section, attr: str) -> bool:
    """False for a NOT_HASHED field of the config section `section`."""
    return next((f.metadata.get("hashed", True) for f in dataclasses.fields(section) if f.name == attr), True) is not False


def hashed(section) -> dict:
    """A config section as a plain dict without its NOT_HASHED fields: what outputs depend on."""
    names = {f.name for f in dataclasses.fields(section) if f.metadata.get("hashed", True) is False}
    return {k: v for k, v in dataclasses.asdict(section).items() if k not in names}


def check(ok: bool, where: str, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: invalid value for '{key}': {why}")
