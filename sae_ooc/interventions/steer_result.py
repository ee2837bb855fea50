"""RUN/steer/steer.json as a typed object: what stage `steer` measured (no torch here: the CLI's summary line reads it).

    s = SteerResult.load(run.steer_dir)
    s.rows[0].methods.features.consistent.share      # None-safe: methods.features is OMIT (falsy) where no feature is labelled
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, MeanCI, Record, Share, Spread, StageOutput

METHOD_NAMES = ("features", "features_same_bridge", "resid_patch", "resid_patch_same_bridge", "random")


@dataclass(kw_only=True)
class SteerOutcome(Record):
    """One intervention's answers on a row's prompts (sae_ooc.interventions.steering.outcome)."""

    consistent: Share  # prompts answering t(b', r2)
    unchanged: Share  # prompts still answering t(b, r2)
    other: Share  # anything else
    consistent_logit: MeanCI  # the consistent answer's first-token logit
    consistent_logit_change: MeanCI  # ... minus the unsteered model's
    max_abs_logit_change: float  # largest change of any answer-position logit
    consistent_logprob: MeanCI = OMIT  # multi-token answers: the consistent name's log-probability, teacher forced
    consistent_logprob_change: MeanCI = OMIT  # ... minus the unsteered model's
    delta_norm: float | None = OMIT  # mean |delta| added at the hook (not in a random draw)
    n_switched_off: float = OMIT  # feature steering: mean bridge=b features switched off per prompt
    n_switched_on: float = OMIT  # feature steering: mean bridge=b' features switched on per prompt


@dataclass(kw_only=True)
class RandomControl(Record):
    """Random unlabelled features of the steered features' size at matched norm, over draws."""

    n_draws: int
    draws: list[SteerOutcome]  # every draw's outcome
    consistent: Spread  # share answering t(b', r2) over draws
    unchanged: Spread
    other: Spread
    consistent_logit: Spread  # mean consistent logit over draws


@dataclass(kw_only=True)
class SteerMethods(Record):
    """Every intervention of a row; feature steering and its random control only where some feature is labelled bridge=b'."""

    features: SteerOutcome = OMIT  # bridge=b features off, bridge=b' on at their typical activation
    features_same_bridge: SteerOutcome = OMIT  # the identity: b' = b
    resid_patch: SteerOutcome  # the whole residual from a prompt whose bridge is b'
    resid_patch_same_bridge: SteerOutcome  # the whole residual from another prompt whose bridge is b
    random: RandomControl = OMIT

    def get(self, name: str) -> SteerOutcome | RandomControl | None:
        """The intervention called `name` (METHOD_NAMES), None where it did not run."""
        if name not in METHOD_NAMES:
            raise KeyError(name)
        return getattr(self, name) or None


@dataclass(kw_only=True)
class SteerRow(Record):
    """One (hook, position)."""

    hook: str
    position: str  # the role whose last token is steered
    n_prompts: int  # prompts steered (covered by features, or all when none are)
    covered_by_features: int  # prompts with some bridge=b' feature at the row
    n_labelled_bridges: int  # entities with a labelled bridge feature here
    n_bridge_features: int  # features labelled bridge=<some entity> here
    methods: SteerMethods

    @property
    def name(self) -> str:
        return f"{self.hook}@{self.position}"


@dataclass(kw_only=True)
class SteerSettings(Record):
    """What was steered."""

    split: str  # the prompts' split (held out of model training)
    only_correct: bool  # only prompts the model answers correctly
    n_split_two_hop: int  # two-hop prompts in the (sampled) split
    n_correct: int  # ... answered correctly
    n_prompts: int  # prompts steered (with a counterfactual bridge)
    random_draws: int
    seed: int
    hooks: list[str]
    positions: list[str]
    answers: str = OMIT  # natural tasks: how whole answers are judged
    position_index: dict[str, int] = OMIT  # natural tasks: each position's token index in the question


@dataclass(kw_only=True)
class SteerResult(StageOutput):
    """Feature steering of the bridge beside its baselines, per hook and position (stage `steer`)."""

    FILE = "steer.json"
    STAGE = "steer"
    FORMAT_NAME = "sae_ooc.steer"

    settings: SteerSettings
    rows: list[SteerRow]
    note: str = OMIT  # why nothing was steered (then rows is empty)

    def best(self) -> SteerRow | None:
        """The row whose feature steering is most consistent (among rows with a random control)."""
        return max((r for r in self.rows if r.methods.random), key=lambda r: r.methods.features.consistent.share or 0, default=None)
