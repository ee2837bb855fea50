"""What a running stage sees of the config: only the keys its row of sae_ooc.stages declares.

A stage's fingerprint hashes its declared config keys, so a stage that read another key would not rerun when that
key changed and would be skipped with stale outputs (analyze read `sae_eval.positions`, data read `model.path`).
`sae_ooc.pipeline.run_stage` hands each stage function a RunDir whose `cfg` is a ConfigView: a declared section is
the section itself, a declared key `section.attr` is readable alone, and reading anything else raises
UndeclaredConfigKey (a bug in the stage, not in the user's config: so not a UserError). `name` (the run's label in
figure titles) is always readable.
"""

from __future__ import annotations

from typing import Any


class UndeclaredConfigKey(RuntimeError):
    pass


def _refuse(stage: str, key: str) -> UndeclaredConfigKey:
    return UndeclaredConfigKey(f"stage {stage!r} read config key {key!r}, which its row in sae_ooc/stages.py does not declare: "
                               f"add it to the stage's config keys (so that changing it reruns the stage) or stop reading it")


class SectionView:
    """The declared attributes of one config section (`circuit.seed`), nothing else."""

    def __init__(self, section: Any, name: str, attrs: set[str], stage: str):
        object.__setattr__(self, "_v", (section, name, attrs, stage))

    def __getattr__(self, attr: str) -> Any:
        section, name, attrs, stage = object.__getattribute__(self, "_v")
        if attr not in attrs:
            raise _refuse(stage, f"{name}.{attr}")
        return getattr(section, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        raise TypeError("a stage's config is read-only")


class ConfigView:
    """`cfg` restricted to `keys` (sections such as "train" or keys such as "attribution.method") for `stage`."""

    def __init__(self, cfg: Any, keys: tuple[str, ...], stage: str):
        sections = {k for k in keys if "." not in k}
        attrs: dict[str, set[str]] = {}
        for k in keys:
            if "." in k:
                s, a = k.split(".", 1)
                attrs.setdefault(s, set()).add(a)
        object.__setattr__(self, "_v", (cfg, sections, attrs, stage))

    def __getattr__(self, name: str) -> Any:
        cfg, sections, attrs, stage = object.__getattribute__(self, "_v")
        if name == "name" or name in sections:
            return getattr(cfg, name)
        if name in attrs:
            return SectionView(getattr(cfg, name), name, attrs[name], stage)
        raise _refuse(stage, name)

    def __setattr__(self, attr: str, value: Any) -> None:
        raise TypeError("a stage's config is read-only")

    def section(self, *names: str) -> dict:
        for n in names:
            getattr(self, n)  # refuses an undeclared one
        return object.__getattribute__(self, "_v")[0].section(*names)

