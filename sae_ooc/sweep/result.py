"""A sweep's files as typed objects: SWEEP_DIR/points/<point>/point.json (one finished point) and SWEEP_DIR/sweep.json
(every point, the smallest composing one). No torch here: the report reads them.

    sw = SweepResult.load(sweep_dir)
    sw.smallest_composed.unique_parameters, sw.points[0].accuracy["test_id"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_ooc.records import OMIT, Record, StageOutput, key

COMPOSED = 0.9  # test_id accuracy from which a point composed ...
ATOMIC = 0.99  # ... with atomic_test at least this


@dataclass(kw_only=True)
class SweepPoint(StageOutput):
    """One grid point's run, summarised when its data and train stages finished (`sae-ooc sweep`)."""

    FILE = "point.json"
    STAGE = "sweep"
    FORMAT_NAME = "sae_ooc.sweep_point"

    slug: str  # the point's folder name (key=value pairs)
    values: dict  # grid key -> this point's value
    seed: int | None = OMIT  # task.seed and train.seed of the run (a sweep with a seeds axis; older files lack it)
    config_hash: str  # hash of the point's resolved config (a finished point with another hash is rerun)
    unique_parameters: int  # distinct parameters (a tied block counts once)
    accuracy: dict[str, float]  # split -> final accuracy (TrainMetrics)
    majority_rate: dict[str, float]
    steps: int
    minutes: float
    stopped_early: bool
    test_id_0_9_step: int | None = key("test_id_0.9_step")  # first evaluation step with test_id >= 0.9
    valid_id_0_9_step: int | None = key("valid_id_0.9_step")
    max_steps: int  # train.steps of the point

    @classmethod
    def rebuild(cls, directory: Path) -> str:
        return "sae-ooc sweep SWEEP.yaml (the point reruns)"

    @property
    def composed(self) -> bool:
        return self.accuracy["test_id"] >= COMPOSED and self.accuracy["atomic_test"] >= ATOMIC


@dataclass(kw_only=True)
class SeedSpread(Record):
    """A number over a setting's seeds (sae_ooc.stats.spread)."""

    mean: float
    sd: float  # ddof=1; 0 for one value
    min: float
    max: float
    n: int  # runs that have the number


@dataclass(kw_only=True)
class SweepSetting(Record):
    """One grid setting over the seeds axis: its finished runs' spreads."""

    values: dict  # grid key -> the setting's value
    n_runs: int  # finished runs
    test_id: SeedSpread | None
    test_ood_sys: SeedSpread | None
    test_unanswerable: SeedSpread | None
    valid_id_0_9_step: SeedSpread | None = key("valid_id_0.9_step")  # the step valid_id reached 0.9 (None: no run did)
    n_composed: int  # runs that composed


@dataclass(kw_only=True)
class SweepResult(StageOutput):
    """Every finished point of a sweep and the smallest that composed (`sae-ooc sweep`, not a stage of one run)."""

    FILE = "sweep.json"
    STAGE = "sweep"
    FORMAT_NAME = "sae_ooc.sweep"

    name: str
    grid: dict[str, list]  # grid key -> its values
    axes: list[str | None]  # the phase diagram's x and y keys
    composed_threshold: float  # test_id accuracy that counts as composed (with atomic_test >= 0.99)
    points: list[SweepPoint]  # the finished points, in grid order
    smallest_composed: SweepPoint | None  # fewest distinct parameters among composing points (ties: fewer steps)
    n_points: int  # points in the grid, finished or not
    seeds: list[int] | None = OMIT  # the seeds axis (None: one seed per setting; older files lack it)
    seed_keys: list[str] = OMIT  # the config keys each seed sets ([] without a seeds axis)
    settings: list[SweepSetting] = OMIT  # per grid setting: its runs over the seeds

    @classmethod
    def rebuild(cls, directory: Path) -> str:
        return f"sae-ooc sweep configs/sweeps/{directory.name}.yaml"


