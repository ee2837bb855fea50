"""The attribute stage's JSON files as typed objects (no torch here: the CLI's summary line and the report read them).

    RUN/attribution/node_effects.json   NodeEffectsSummary: the top nodes (the full effects: node_effects.safetensors,
                                        sae_ooc.circuits.effects.NodeEffects)
    RUN/attribution/validation.json     AttributionValidation: every approximation against exact patching

    v = AttributionValidation.load(run.attribution_dir)
    v.methods["atp"].recall_top50, v.methods["atp"].mean_effects.spearman_all
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, Record, StageOutput


@dataclass(kw_only=True)
class EffectNode(Record):
    """One node among the largest |mean effect|."""

    rank: int
    node: str  # its id, hook:position:feature (or :error)
    hook: str
    position: int
    role: str  # the position's role
    feature: int | str  # the SAE feature, or "error"
    mean_effect: float  # over the pairs
    std_effect: float
    per_prompt: list[float]  # each pair's effect (6 decimals)


@dataclass(kw_only=True)
class EffectPair(Record):
    clean: str
    corrupt: str
    answer: str
    answer_corrupt: str


@dataclass(kw_only=True)
class NodeEffectsSummary(StageOutput):
    """The attribute stage's node effects, summarised: metric values and the top nodes (stage `attribute`)."""

    FILE = "node_effects.json"
    STAGE = "attribute"
    FORMAT_NAME = "sae_ooc.node_effects"

    method: str  # attribution.method
    metric: str
    n_pairs: int
    hooks: list[str]
    positions: list[str]  # the layout's position names
    metric_clean_mean: float
    metric_corrupt_mean: float
    total_effect_mean: float  # corrupt minus clean
    sum_of_node_effects_mean: float  # (linear methods: close to the total effect)
    n_nonzero_nodes: int
    pairs: list[EffectPair]
    nodes: list[EffectNode]  # the top attribution.top_json by |mean effect|
    seconds: float  # wall-clock seconds of the effects


@dataclass(kw_only=True)
class MeanEffectsAgreement(Record):
    """The method's mean effects against exact's, over the active nodes (sae_ooc.circuits.validation.compare_effects)."""

    spearman_all: float | None
    pearson_all: float | None
    spearman_top50: float | None  # over exact's top 50
    max_abs_error: float | None
    top10_overlap: float | None
    top50_overlap: float | None
    includes_exactly_computed_nodes: bool  # the method patched its shortlist exactly (atp_verified)


@dataclass(kw_only=True)
class MethodValidation(Record):
    """One approximation against exact patching, per pair (mean, std and min over pairs)."""

    recall_top10: float | None  # share of exact's top 10 among the method's top 10
    recall_top10_std: float | None
    recall_top10_min: float | None
    recall_top50: float | None
    recall_top50_std: float | None
    recall_top50_min: float | None
    shortlist_recall_top10: float | None = OMIT  # a shortlist method: exact's top 10 inside its shortlist
    shortlist_recall_top10_std: float | None = OMIT
    shortlist_recall_top10_min: float | None = OMIT
    shortlist_recall_top50: float | None = OMIT
    shortlist_recall_top50_std: float | None = OMIT
    shortlist_recall_top50_min: float | None = OMIT
    spearman_not_exact: float | None  # Spearman over the changed nodes the method did not patch exactly
    spearman_not_exact_std: float | None
    spearman_not_exact_min: float | None
    n_not_exact_mean: float
    per_pair: dict[str, list]  # each measure per pair
    trusted: bool  # recall@50 and that Spearman above the trust thresholds
    seconds: float
    speedup_vs_batched_exact: float
    speedup_vs_one_pass_per_node_estimate: float
    mean_effects: MeanEffectsAgreement


@dataclass(kw_only=True)
class TrustThresholds(Record):
    """When an attribution method is trusted."""

    recall_top50: float  # recall of exact's top-50 nodes in the method's ranking
    spearman_not_exact: float  # Spearman over the nodes the method did not patch exactly


@dataclass(kw_only=True)
class AttributionValidation(StageOutput):
    """Every estimated attribution method against exact patching on attribution.validate_pairs pairs (stage `attribute`
    with validation)."""

    FILE = "validation.json"
    STAGE = "attribute"
    FORMAT_NAME = "sae_ooc.attribution_validation"

    n_pairs: int
    n_active_nodes: int
    n_changed_nodes: int  # (pair, node) effects some patch changes
    tops: list[int]
    verify_top: int  # atp_verified's shortlist per pair
    trust: TrustThresholds  # the thresholds a method must reach to be trusted
    timing_s: dict[str, float]  # method -> seconds on these pairs
    speed: dict  # what the speedups are against
    methods: dict[str, MethodValidation]
