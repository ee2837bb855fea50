"""A sweep YAML: a base experiment config, fixed overrides and a grid of config keys; one run directory per point.

    name: simplest
    base: ../tiny.yaml                 # an experiment config (relative to this file; default: the built-in defaults)
    set: {train.steps: 3000}           # overrides every point shares
    grid:                              # every combination is a point
      model.n_layers: [1, 2]
      model.weight_sharing: [false, true]
    exclude:                           # points matching every key of an entry are dropped
      - {model.n_layers: 1, model.weight_sharing: true}
    plot: {x: model.n_layers, y: model.weight_sharing}   # phase-diagram axes (default: the first two grid keys)
    seeds: [0, 1, 2]                   # every point once per seed (task.seed and train.seed both set to it); the
                                       # phase diagram and table show the seeds' mean and range (default: the base's seeds, once)
    out: runs/sweeps/simplest          # sweep directory (default: runs/sweeps/<name>)

A family axis is a grid key like any other (`task.family: [twohop, comparison]`).

Every point's config goes through `load_config`, so a bad key or value is the usual one-line ConfigError naming it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sae_ooc.config import Config, ConfigError, load_config
from sae_ooc.errors import UserError
from sae_ooc.io import sha256_json
from sae_ooc.typed_yaml import load_yaml

SECTIONS = ("task", "model", "train")  # the config sections of the stages a point runs (runner.STAGES: data, train)
KEYS = ("name", "base", "set", "grid", "exclude", "plot", "seeds", "out")
SEED_KEYS = ("task.seed", "train.seed")  # what a sweep's seed sets: the data drawn and the model's initialisation and batches


@dataclass
class Point:
    slug: str  # its run directory's name under SWEEP_DIR/points/
    values: dict  # {grid key: value}
    overrides: list[str]  # --set strings: the sweep's `set`, then this point's values (and seed)
    cfg: Config
    seed: int | None = None  # the sweep's seed for this run (None: a sweep without `seeds`)

    @property
    def config_hash(self) -> str:
        """What the point's results depend on: the sections the data and train stages read (a new key elsewhere in
        the config, e.g. for a later stage, leaves finished points finished)."""
        return sha256_json(self.cfg.section(*SECTIONS))


@dataclass
class Sweep:
    name: str
    path: Path
    base: Path | None
    fixed: dict
    grid: dict[str, list]
    exclude: list[dict] = field(default_factory=list)
    plot: dict = field(default_factory=dict)
    out: Path | None = None
    seeds: list[int] | None = None

    def axes(self) -> tuple[str | None, str | None]:
        varying = [k for k, v in self.grid.items() if len(v) > 1] or list(self.grid)
        x = self.plot.get("x", varying[0] if varying else None)
        y = self.plot.get("y", next((k for k in varying if k != x), None))
        return x, y

    def points(self) -> list[Point]:
        keys = list(self.grid)
        out = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            if any(all(values.get(k) == v for k, v in ex.items()) for ex in self.exclude):
                continue
            for seed in (self.seeds or [None]):
                slug = "__".join(f"{k.split('.')[-1]}={_text(v)}" for k, v in values.items()) or "base"
                seeded = {} if seed is None else dict.fromkeys(SEED_KEYS, seed)
                if seed is not None:
                    slug += f"__seed={seed}"
                overrides = [f"{k}={_text(v)}" for k, v in {**self.fixed, **values, **seeded}.items()]
                try:
                    cfg = load_config(self.base, overrides)
                except ConfigError as e:
                    raise ConfigError(f"{self.path}, point {slug}: {e}") from None
                cfg.name = f"{self.name}-{slug}"
                out.append(Point(slug, values, overrides, cfg, seed))
        return out


def _text(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} not found; pass a sweep YAML, e.g. configs/sweeps/simplest.yaml")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path} is not valid YAML{at} ({getattr(e, 'problem', None) or str(e).splitlines()[0]}); fix it and rerun") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a sweep is a mapping with keys {', '.join(KEYS)}")
    bad = sorted(set(raw) - set(KEYS))
    if bad:
        raise UserError(f"{path}: unknown key(s) {', '.join(bad)}; valid keys: {', '.join(KEYS)}")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise UserError(f"{path}: 'grid' must map config keys to non-empty lists of values, e.g. model.n_layers: [1, 2]")
    for key, kind, example in (("set", dict, "{train.steps: 3000}"), ("exclude", list, "[{model.n_layers: 1, model.weight_sharing: true}]"),
                               ("plot", dict, "{x: model.n_layers, y: model.weight_sharing}")):
        v = raw.get(key)
        if v is not None and not (isinstance(v, kind) and (kind is not list or all(isinstance(x, dict) for x in v))):
            raise UserError(f"{path}: '{key}' must be {'a mapping' if kind is dict else 'a list of mappings'}, e.g. {key}: {example}")
    # a grid over a later stage's key would make every point the same run: a point runs only data and train
    other = [k for k in grid if str(k).split(".")[0] not in SECTIONS]
    if other:
        raise UserError(f"{path}: grid key {other[0]!r} is not in {', '.join(SECTIONS)}, the only sections a sweep point runs "
                        f"(data and train); grid keys look like model.n_layers")
    seeds = raw.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
                                  and len(set(seeds)) == len(seeds)):
        raise UserError(f"{path}: 'seeds' must be a non-empty list of distinct integers, e.g. seeds: [0, 1, 2]")
    clash = [k for k in grid if k in SEED_KEYS] if seeds is not None else []
    if clash:
        raise UserError(f"{path}: grid key {clash[0]!r} and 'seeds' both set it; drop one (seeds sets {' and '.join(SEED_KEYS)})")
    base = raw.get("base")
    base = (path.parent / base) if base is not None and not Path(base).is_absolute() else (Path(base) if base else None)
    if base is not None and not base.is_file():
        raise UserError(f"{path}: base {base} not found (a relative base is relative to the sweep file); point it at an experiment YAML, e.g. base: ../default.yaml")
    sw = Sweep(name=str(raw.get("name", path.stem)), path=path, base=base, fixed=dict(raw.get("set") or {}), grid=grid,
               exclude=list(raw.get("exclude") or []), plot=dict(raw.get("plot") or {}),
               out=Path(raw["out"]) if raw.get("out") else None, seeds=seeds)
    for axis in sw.axes():
        if axis is not None and axis not in grid:
            raise UserError(f"{path}: plot axis {axis!r} is not a grid key; grid keys: {', '.join(grid)}")
    if not sw.points():
        raise UserError(f"{path}: the grid has no points left after 'exclude'")
    return sw
