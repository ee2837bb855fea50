"""RUN/browse/browse.json as a typed object: what the feature browser was built from (stage `browse`; the report's
"Feature browser" section reads it). Its presence also tells a site folder from any other folder (paths.MARKER)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.browse.paths import MARKER
from sae_ooc.records import OMIT, Record, StageOutput


@dataclass(kw_only=True)
class BrowseHook(Record):
    """One SAE's pages."""

    hook: str
    d_sae: int
    n_dead: int  # never active on the held-out prefixes (saes.dead.DEAD_ON)
    n_dense: int  # active on more than sae_eval.dense_threshold of the cached tokens
    n_labelled: int  # features eval-sae labelled
    explained_variance: float | None  # eval-sae's, on the held-out rows
    mean_density: float  # mean share of cached tokens a feature fires on
    most_active: int  # the feature active on the most tokens


@dataclass(kw_only=True)
class BrowseInfo(StageOutput):
    """The offline feature browser: its SAEs, circuits and coverage (stage `browse`)."""

    FILE = MARKER
    STAGE = "browse"
    FORMAT_NAME = "sae_ooc.browse"

    run: str  # the run directory it was built from
    hooks: list[BrowseHook]
    circuits: list[str]  # the circuit pages written (browse/circuits/<name>.html)
    n_features: int
    n_tokens: int  # cached tokens the pages' numbers are over
    n_heldout_prefixes: int = OMIT  # the held-out prefixes densities and histograms use (absent in sites built before)
    attribution: bool  # whether attribution's node effects are on the pages
    screenshot: str = OMIT  # a headless Chromium screenshot of one page, when taken
