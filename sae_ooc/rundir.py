"""The run directory: where every stage reads its inputs and writes its outputs.

Which stage owns which path is declared in `sae_ooc.stages`; `sae_ooc.pipeline` records in `RUN/stages.json`
each finished stage's fingerprint and output files, and decides from them what to skip. RunDir only names the
paths and reads and writes that record.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path

import yaml

from sae_ooc.config import Config, config_to_yaml
from sae_ooc.errors import UserError
from sae_ooc.io import read_json, write_json, write_text
from sae_ooc.typed_yaml import load_yaml


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / cfg.name


def _under(name: str) -> property:
    return property(lambda self: self.root / name, doc=f"RUN/{name}")


class RunDir:
    """A run directory, its resolved config and the torch device every stage of this run uses."""

    def __init__(self, root: str | Path, cfg: Config, device: str = "cpu"):
        self.root = Path(root)
        self.cfg = cfg
        self.device = device
        # set by sae_ooc.pipeline while a stage runs: resumable stages tag their checkpoints with it
        self.current_fingerprint: str | None = None
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--run {self.root} is a file, not a directory; pass a directory (it is created if missing)")

    @classmethod
    def open(cls, root: str | Path, config=None, device: str = "cpu", overrides: list[str] | None = None) -> "RunDir":
        """`config`: a Config, a YAML path, or None for ROOT/config.yaml when it exists (else the built-in defaults)."""
        from sae_ooc.config import load_config

        root = Path(root)
        if isinstance(config, Config):
            cfg = config
        else:
            path = config if config is not None else (root / "config.yaml" if (root / "config.yaml").is_file() else None)
            cfg = load_config(path, overrides)
        return cls(root, cfg, device)

    # paths every stage agrees on (each folder is one stage's output: see sae_ooc.stages) ---------------
    data_dir = _under("data")
    model_dir = _under("model")
    activations_dir = _under("activations")
    saes_dir = _under("saes")
    sae_eval_dir = _under("sae_eval")
    attribution_dir = _under("attribution")
    circuit_dir = _under("circuit")
    variable_circuit_dir = _under("variable_circuit")
    export_dir = _under("export")
    analyze_dir = _under("analyze")
    steer_dir = _under("steer")
    edit_dir = _under("edit")
    browse_dir = _under("browse")
    dynamics_dir = _under("dynamics")
    variables_dir = _under("variables")
    stages_file = _under("stages.json")

    # config ---------------------------------------------------------------------------------
    def check_and_save_config(self, force: bool = False) -> None:
        """Refuse to mix task configs in one run directory, then save the resolved config."""
        saved = self.root / "config.yaml"
        if saved.exists() and not force:
            try:
                old = load_yaml(saved.read_text()) or {}
            except yaml.YAMLError:
                old = {}
            old_task = old.get("task")
            new_task = dataclasses.asdict(self.cfg.task)
            if isinstance(old_task, dict):  # a key added since the run was made (task.render) had its default then
                default = dataclasses.asdict(type(self.cfg.task)())
                old_task = {**default, **{k: {**default[k], **v} if isinstance(v, dict) and isinstance(default.get(k), dict) else v
                                          for k, v in old_task.items()}}  # ... in a nested section too (task.finetune)
            if old_task is not None and old_task != new_task:
                diffs = [f"task.{k}: {old_task.get(k)!r} -> {v!r}" for k, v in new_task.items() if old_task.get(k) != v]
                raise UserError(
                    f"run directory {self.root} was made with a different task config ({'; '.join(diffs) or 'keys differ'}); "
                    f"use --run NEW_DIR for the new task, or --force to rebuild this run from scratch"
                )
        text = config_to_yaml(self.cfg)
        # unchanged: no write, so that an up-to-date command works on a read-only run (and leaves its mtime alone)
        if not (saved.is_file() and saved.read_text() == text):
            write_text(saved, text)

    @contextmanager
    def saved_config(self, force: bool = False):
        """`check_and_save_config`, undone if the stages run inside refuse a value: a refused --set (edit.layers=[9] on
        2 layers) must not stay in RUN/config.yaml, where every later command without --set would meet it again."""
        saved = self.root / "config.yaml"
        before = saved.read_text() if saved.is_file() else None
        self.check_and_save_config(force=force)
        try:
            yield
        except UserError:
            if before is not None:
                if saved.read_text() != before:
                    write_text(saved, before)
            else:  # the run's first command failed: a config.yaml left here would refuse the corrected config
                saved.unlink(missing_ok=True)
            raise

    # stage bookkeeping (sae_ooc.pipeline decides; these only read and write RUN/stages.json) ---------
    def _stages(self) -> dict:
        if not self.stages_file.exists():
            return {}
        try:
            stages = read_json(self.stages_file)
        except (ValueError, OSError) as e:
            raise UserError(f"{self.stages_file} is corrupt ({e.__class__.__name__}); delete it and rerun "
                            f"`sae-ooc pipeline --run {self.root}` (stages whose outputs are intact are recomputed once)")
        # a record that is not an object (hand-edited, another program's file) is as corrupt as broken JSON
        if not isinstance(stages, dict) or not all(isinstance(r, dict) for r in stages.values()):
            raise UserError(f"{self.stages_file} is corrupt (not a JSON object of stage records); delete it and rerun `sae-ooc pipeline --run {self.root}`")
        return stages

    def stage_record(self, stage: str) -> dict | None:
        """What RUN/stages.json says of a finished stage: fingerprint, outputs, digest, info; None if not done."""
        return self._stages().get(stage)

    def record(self, stage: str, record: dict) -> None:
        stages = self._stages()
        stages[stage] = record
        write_json(self.stages_file, stages)

    def forget(self, stage: str) -> None:
        stages = self._stages()
        if stages.pop(stage, None) is not None:
            write_json(self.stages_file, stages)
