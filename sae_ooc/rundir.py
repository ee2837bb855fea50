"""The run directory: where every stage reads its inputs and writes its outputs.

Each stage records a fingerprint of its inputs (its own config sections plus the fingerprints of the
stages it reads) in `RUN/stages.json`. A stage whose fingerprint is unchanged is skipped; one whose
inputs changed is recomputed, and so is everything downstream of it, because their fingerprints
include this one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from sae_ooc.config import Config, config_to_yaml
from sae_ooc.errors import UserError
from sae_ooc.io import read_json, sha256_json, write_json, write_text


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / cfg.name


class RunDir:
    def __init__(self, root: str | Path, cfg: Config):
        self.root = Path(root)
        self.cfg = cfg

    # paths every stage agrees on -------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def activations_dir(self) -> Path:
        return self.root / "activations"

    @property
    def saes_dir(self) -> Path:
        return self.root / "saes"

    @property
    def attribution_dir(self) -> Path:
        return self.root / "attribution"

    @property
    def circuit_dir(self) -> Path:
        return self.root / "circuit"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def stages_file(self) -> Path:
        return self.root / "stages.json"

    # config ---------------------------------------------------------------------------------
    def check_and_save_config(self, force: bool = False) -> None:
        """Refuse to mix task configs in one run directory, then save the resolved config."""
        saved = self.root / "config.yaml"
        if saved.exists() and not force:
            try:
                old = yaml.safe_load(saved.read_text()) or {}
            except yaml.YAMLError:
                old = {}
            old_task = old.get("task")
            new_task = dataclasses.asdict(self.cfg.task)
            if old_task is not None and old_task != new_task:
                diffs = [f"task.{k}: {old_task.get(k)!r} -> {v!r}" for k, v in new_task.items() if old_task.get(k) != v]
                raise UserError(
                    f"run directory {self.root} was made with a different task config ({'; '.join(diffs) or 'keys differ'}); "
                    f"use --run NEW_DIR for the new task, or --force to rebuild this run from scratch"
                )
        write_text(saved, config_to_yaml(self.cfg))

    # stage bookkeeping ----------------------------------------------------------------------
    def _stages(self) -> dict:
        if self.stages_file.exists():
            try:
                return read_json(self.stages_file)
            except ValueError:
                return {}
        return {}

    def fingerprint(self, stage: str) -> str | None:
        return self._stages().get(stage, {}).get("fingerprint")

    def require(self, stage: str, command: str | None = None) -> str:
        """The fingerprint of a finished upstream stage, or an error telling which command to run."""
        fp = self.fingerprint(stage)
        if fp is None:
            cmd = command or f"sae-ooc {stage}"
            raise UserError(f"stage '{stage}' has not been run in {self.root}; run `{cmd} --run {self.root}` (or `sae-ooc pipeline`) first")
        return fp

    def stage_fingerprint(self, sections: tuple[str, ...], upstream: tuple[str, ...], extra: dict | None = None) -> str:
        ups = {u: self.require(u) for u in upstream}
        return sha256_json({"config": self.cfg.section(*sections), "upstream": ups, "extra": extra or {}})

    def is_done(self, stage: str, fingerprint: str) -> bool:
        return self.fingerprint(stage) == fingerprint

    def mark_done(self, stage: str, fingerprint: str, **info) -> None:
        stages = self._stages()
        stages[stage] = {"fingerprint": fingerprint, **info}
        write_json(self.stages_file, stages)

    def invalidate(self, stage: str) -> None:
        stages = self._stages()
        if stages.pop(stage, None) is not None:
            write_json(self.stages_file, stages)
