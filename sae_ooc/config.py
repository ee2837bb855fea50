"""Typed experiment configs: one YAML file per experiment, loaded into dataclasses with defaults.

Every section is a dataclass; unknown keys, wrong types and impossible values are one-line errors that
name the file and the key. `--set a.b=value` overrides go through the same checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# the sections live in sae_ooc/sections/ (one module per concern); every name is re-exported here
from sae_ooc.sections.model import (  # noqa: F401
    TASK_FAMILIES,
    TASK_SPLITS,
    MODEL_SOURCES,
    TRAINABLE,
    STOP_SPLITS,
    TaskConfig,
    ModelConfig,
    TrainConfig,
    check_model_source,
)
from sae_ooc.sections.saes import (  # noqa: F401
    HARVEST_DTYPES,
    SAE_ARCHITECTURES,
    HarvestConfig,
    SaeConfig,
    SaeEvalConfig,
    per_hook_yields,
)
from sae_ooc.sections.circuits import (  # noqa: F401
    ATTRIBUTION_METHODS,
    ATTRIBUTION_METRICS,
    ATTRIBUTION_SPLITS,
    ABLATIONS,
    AttributionConfig,
    CircuitConfig,
    VARIABLE_KINDS,
    VARIABLE_INTERVENTIONS,
    VariablesConfig,
)
from sae_ooc.sections.interventions import (  # noqa: F401
    EDIT_POSITIONS,
    STEER_POSITIONS,
    STEER_SPLITS,
    EditConfig,
    SteerConfig,
)
from sae_ooc.sections.analyze import (  # noqa: F401
    ANALYSIS_NAMES,
    AnalyzeConfig,
)
from sae_ooc.sections.dynamics import DynamicsConfig  # noqa: F401
from sae_ooc.sections.causal import CAUSAL_SPLITS, CausalConfig  # noqa: F401
from sae_ooc.sections.check import hashed
from sae_ooc.typed_yaml import ConfigError, apply_overrides, build_dataclass, dump_yaml, load_yaml


@dataclass
class Config:
    name: str = "default"
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    sae: SaeConfig = field(default_factory=SaeConfig)
    sae_eval: SaeEvalConfig = field(default_factory=SaeEvalConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    variables: VariablesConfig = field(default_factory=VariablesConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    steer: SteerConfig = field(default_factory=SteerConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    causal: CausalConfig = field(default_factory=CausalConfig)

    def validate(self, where: str = "config") -> "Config":
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "validate"):
                section.validate(where)
        check_model_source(self.task, self.model, where)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def section(self, *names: str) -> dict:
        """The named sections as a plain dict: what a stage hashes to decide whether to rerun."""
        return {n: hashed(getattr(self, n)) for n in names}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, overrides_from: str = "--set") -> Config:
    """Load a YAML config (or the defaults when `path` is None), apply `--set` overrides, validate. `overrides_from`:
    where the overrides came from, for messages (train_sae.py's options are overrides of the `sae` section)."""
    data: dict = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.exists():
            raise ConfigError(f"config file {path} not found; pass an existing YAML file, e.g. --config configs/default.yaml")
        if path.is_dir():
            inside = sorted(path.glob("*.yaml"))
            raise ConfigError(f"--config {path} is a folder; pass a YAML file" + (f" in it, e.g. --config {inside[0]}" if inside else ""))
        try:
            loaded = load_yaml(path.read_text())
        except OSError as e:  # unreadable (permissions, a FIFO gone away): one line, not a traceback
            raise ConfigError(f"config file {path} cannot be read ({e.strerror or e}); pass a readable YAML file") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{path}: malformed YAML{at}: {getattr(e, 'problem', e)}; fix the syntax") from None
        if loaded is None or loaded == {}:
            # an empty file is a mistake (a file not yet written, the wrong one): running the 100-entity default experiment
            # from it without a word would cost an hour for nothing
            raise ConfigError(f"config file {path} is empty; write the sections to change (task:, model:, train:, ...), or leave out "
                              f"--config to run the built-in defaults (configs/default.yaml)")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (task:, model:, train:, ...)")
        data = loaded
        per_hook_yields(data, data)
        data.setdefault("name", path.stem)
    if overrides:
        data = apply_overrides(data, overrides)
        per_hook_yields(apply_overrides({}, overrides), data)
        where = f"{where} (with --set)" if overrides_from == "--set" else overrides_from
    cfg = build_dataclass(Config, data, where)
    return cfg.validate(where)


def config_to_yaml(cfg: Config) -> str:
    return dump_yaml(cfg.to_dict(), sort_keys=False)
