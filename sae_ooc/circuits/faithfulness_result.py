"""RUN/circuit/faithfulness.json as a typed object: how faithful the feature circuit is, chosen on the selection pairs and
scored on the held-out pairs (no torch here: the CLI's summary line and the report read it). The circuit itself is
RUN/circuit/circuit.json, a `sae_ooc.circuits.graph.CircuitGraph`.

    f = CircuitFaithfulness.load(run.circuit_dir)
    f.heldout.faithfulness, f.by_ablation["mean"].inactive_check.passes, f.edges.ablation_by_kind["mean"][0].percentile
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, Record, StageOutput


@dataclass(kw_only=True)
class PairSplit(Record):
    heldout_fraction: float
    seed: int
    selection: list[int]  # indices into the attribute stage's pairs
    heldout: list[int]
    chosen_on_selection: str  # what the selection pairs chose
    reported_on_heldout: str  # which numbers are on the held-out pairs


@dataclass(kw_only=True)
class CurvePoint(Record):
    n_features: int  # feature nodes kept (top by |effect| on the selection pairs)
    n_errors: int
    m_circuit: float
    m_complement: float
    faithfulness: float | None
    completeness: float | None
    faithfulness_features_only: float | None = OMIT  # the same features, no error node


@dataclass(kw_only=True)
class Target(Record):
    faithfulness: float
    max_feature_nodes: int
    min_feature_nodes_reaching: int | None  # the smallest curve size reaching it (None: none)
    met: bool


@dataclass(kw_only=True)
class Scores(Record):
    """The circuit on one set of pairs: the metric with everything kept, nothing kept, the circuit, its complement."""

    m_full: float
    m_empty: float
    m_circuit: float
    m_complement: float
    faithfulness: float | None  # (m(C) - m(empty)) / (m(M) - m(empty))
    completeness: float | None  # the circuit ablated, the rest kept (low is good)
    faithfulness_ci95: list[float] | None  # over head entities
    completeness_ci95: list[float] | None
    curve: list[CurvePoint]
    target: Target = OMIT  # held-out pairs only
    in_sample: bool = OMIT  # selection pairs only: True


@dataclass(kw_only=True)
class InactiveCheck(Record):
    """Ablating only the features outside an ablation's scope must leave the metric unchanged."""

    rule: str
    metric_change_mean: float
    metric_change_std: float
    max_abs_change: float
    relative_change: float | None  # of the metric's range
    tolerance: float
    passes: bool
    can_fail: bool  # False where a pass is guaranteed
    n_pairs: int
    circuits_restricted_to_scope: bool


@dataclass(kw_only=True)
class ValidFor(Record):
    """Whether an ablation's value is one the model can see, per kind of node."""

    feature: str
    error: str


@dataclass(kw_only=True)
class AblationCurve(Record):
    """Faithfulness against circuit size under one ablation (held-out pairs)."""

    m_full: float
    m_empty: float
    sizes: list[int]
    valid_for: ValidFor  # whether this ablation is valid for features and for error terms
    inactive_check: InactiveCheck
    faithfulness: list[float | None]  # per size: the circuit chosen on the selection pairs
    faithfulness_per_prompt_circuits_in_sample: list[float | None]  # per size: each pair its own top nodes
    min_features_reaching_target: int | None
    min_features_reaching_target_per_prompt_in_sample: int | None


@dataclass(kw_only=True)
class MethodCircuit(Record):
    """The circuit another attribution method's effects would choose (same size), scored on the held-out pairs."""

    m_circuit: float
    m_complement: float
    faithfulness: float | None
    completeness: float | None
    faithfulness_ci95: list[float] | None
    completeness_ci95: list[float] | None
    n_feature_nodes: int
    n_error_nodes: int
    shared_feature_nodes: int  # with the stage's circuit
    seconds_on_selection_pairs: float | None
    effects_from: str


@dataclass(kw_only=True)
class PruneRound(Record):
    budget: int
    max_nodes: int
    mean_features: float
    max_features: int
    mean_errors: float
    faithfulness: float | None
    metric_mean: float


@dataclass(kw_only=True)
class TransferSet(Record):
    faithfulness: float | None
    n_rows: int
    per_source: dict


@dataclass(kw_only=True)
class Transfer(Record):
    """Each prompt's pruned circuit (as node types) applied to other prompts."""

    round: int
    max_features: int
    in_sample_faithfulness: float | None
    same_relations: TransferSet  # prompts with the same (r1, r2)
    other_relations: TransferSet  # the control


@dataclass(kw_only=True)
class PrunedPerPrompt(Record):
    """Per-prompt circuits by backward elimination on selection pairs (in-sample: each fitted to its own prompt)."""

    rounds: list[PruneRound]
    n_pairs: int
    step: float
    candidates_max: int
    candidates_mean: float
    faithfulness_within_max: float | None
    max_features: int
    min_features_reaching_target: int | None
    target: float
    ablation: str
    in_sample: bool
    source_pairs: list[int]
    transfer: Transfer | None = OMIT


@dataclass(kw_only=True)
class EdgeCheck(Record):
    """Gradient edge weights against exact edge patching."""

    n_edges: int
    n_pairs: int
    pearson: float | None
    spearman: float | None
    max_abs_diff: float | None
    edges: list[dict]  # source, target, gradient, exact


@dataclass(kw_only=True)
class EdgeAblation(Record):
    """The top k edges ablated against random sets of k candidate edges (held-out pairs)."""

    k: int
    top_edges_drop: float
    top_edges_drop_std: float
    random_edges_drop_mean: float | None
    random_edges_drop_std: float | None
    random_edges_drop_quantiles: dict[str, float]  # percent -> drop
    random_edges_drops: list[float]
    n_random: int  # random sets drawn (sequential rounds stop early once decided)
    n_random_max: int = OMIT  # the most that would be drawn (files before the sequential rule lack it)
    pool_size: int
    random_pool: str
    percentile: float | None  # of the top set's drop among the random draws
    stopping: str = OMIT  # the sequential stopping rule


@dataclass(kw_only=True)
class EdgeReport(Record):
    n_edges: int
    weights: str  # circuit.edge_weights
    weighed_on: str
    exact_check: EdgeCheck | None
    n_candidate_edges: int
    candidate_pool_nodes: int
    ablated_on: str
    ablation_by_kind: dict[str, list[EdgeAblation]]


@dataclass(kw_only=True)
class CircuitFaithfulness(StageOutput):
    """The feature circuit's faithfulness, completeness, curves, per-method and per-prompt circuits and edge tests (stage
    `circuit`)."""

    FILE = "faithfulness.json"
    STAGE = "circuit"
    FORMAT_NAME = "sae_ooc.circuit_faithfulness"

    metric: str
    ablation: str  # circuit.ablation
    n_selection_pairs: int
    n_heldout_pairs: int
    pairs: PairSplit
    n_feature_nodes: int
    n_error_nodes: int
    heldout: Scores  # the headline numbers
    selection: Scores  # in-sample
    by_ablation: dict[str, AblationCurve]
    by_method: dict[str, MethodCircuit]
    pruned_per_prompt: PrunedPerPrompt | None
    edges: EdgeReport
