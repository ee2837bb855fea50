"""One feature's data as typed records: what its page shows, what its JSON file holds under "sae_ooc"
(`<hook>/fNNNNN.json`, written by `to_json()` key for key) and what its index row sums up. Built by
sae_ooc.browse.record, read by attribute in render, dashboard and browse."""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import Record
from sae_ooc.saes.metrics_result import FeatureLabel


@dataclass(kw_only=True)
class PositionStat(Record):
    position: str  # the position's name
    n_tokens: int  # cached tokens at it
    frac_nonzero: float
    mean_activation: float | None  # over the tokens where it is active (None: never active there)


@dataclass(kw_only=True)
class HeldoutHistogram(Record):
    n_prefixes: int  # distinct held-out prefixes
    n_active: int
    max: float
    bar_heights: list[int]
    bar_values: list[float]  # bar centres
    bin_width: float


@dataclass(kw_only=True)
class Example(Record):
    """One cached token where the feature is active, with its whole prompt."""

    row: int  # cache row
    tokens: list[str]  # the prompt
    position: int  # where it fires
    activation: float
    values: list[float]  # its activation at every token of the prompt
    answer: str | None  # the true answer
    model_answer: str
    model_prob: float
    split: str


@dataclass(kw_only=True)
class LogitTable(Record):
    """Direct-path logit effects (sae-dashboard's pos_str/pos_values, neg_str/neg_values) and their histogram."""

    pos_str: list[str]
    pos_values: list[float]
    neg_str: list[str]
    neg_values: list[float]
    hist_heights: list[int]
    hist_values: list[float]


@dataclass(kw_only=True)
class PageLabel(FeatureLabel):
    """eval-sae's label with its text as the page shows it."""

    text: str


@dataclass(kw_only=True)
class AlignmentHit(Record):
    """A value of a variable for which eval-sae chose this feature as the best single detector."""

    variable: str
    position: str
    value: str
    auroc: float | None  # held-out AUROC of the feature
    auroc_probe: float | None
    shuffled_mean_auroc: float | None  # the shuffled-label search (control)
    n_heldout: int


@dataclass(kw_only=True)
class EffectAt(Record):
    position: str
    effect: float  # mean node effect (attribution)


@dataclass(kw_only=True)
class Appearance(Record):
    """A node of one of the run's circuits that is this feature."""

    circuit: str  # circuit, prompt_circuit or variable_circuit
    id: str  # node id
    role: str | None
    effect: float | None
    rank: int | None
    drawn: bool


@dataclass(kw_only=True)
class FeatureRecord(Record):
    hook: str
    feature: int
    n_tokens: int
    n_active: int
    frac_nonzero: float
    mean_activation: float
    mean_activation_all_tokens: float
    max_activation: float
    dead: bool
    dense: bool
    dense_threshold: float
    by_position: list[PositionStat]
    heldout_histogram: HeldoutHistogram
    top_activations: list[Example]
    random_activations: list[Example]
    logits: LogitTable | None  # None: the hook has no linear route to the logits
    labels: list[PageLabel]  # best first
    alignment: list[AlignmentHit]
    node_effects: list[EffectAt] | None  # None: attribution has not run
    effects_metric: str | None
    effects_method: str | None
    circuits: list[Appearance]
    variable_nodes: list[str]  # ids of the variable nodes that hold it
