"""RUN/variable_circuit/faithfulness.json as a typed object: the circuit of variable nodes (features grouped by the
variable eval-sae labels them with), chosen on selection pairs, scored on held-out pairs beside random groups (no torch).

    f = VariableCircuitFaithfulness.load(run.variable_circuit_dir)
    f.by_ablation[f.selection.ablation].heldout.faithfulness, f.verdict.text
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.circuits.faithfulness_result import ValidFor
from sae_ooc.records import OMIT, Record, StageOutput


@dataclass(kw_only=True)
class GroupCounts(Record):
    variable: int  # labelled variable groups (variable@position@hook)
    remainder: int  # the rest of a (hook, position)'s features
    error: int  # SAE error terms
    total: int


@dataclass(kw_only=True)
class GroupSelection(Record):
    """How the circuit's size was chosen (on the selection pairs)."""

    ablation: str
    intervention: str
    target: float  # faithfulness the size should reach
    max_groups: int
    kinds: list[str]
    n_groups: int  # chosen
    reached_target_on_selection: bool
    n_candidates: int
    rule: str


@dataclass(kw_only=True)
class VariableCircuitNodes(Record):
    groups: list[str]  # the chosen groups' ids
    n_feature_nodes: int
    n_labelled_features: int
    n_error_nodes: int
    n_edges: int
    top_features_same_size: list[str]  # the individual features of the same-size control


@dataclass(kw_only=True)
class SetScores(Record):
    """The circuit on one pair set."""

    faithfulness: float | None
    m_full: float
    m_empty: float
    m_circuit: float
    n_pairs: int
    completeness: float | None
    ci95: list[float | None] | None  # over head entities
    in_sample: bool  # True on the selection pairs


@dataclass(kw_only=True)
class RandomStats(Record):
    """Faithfulness of the random draws."""

    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    n_at_least_circuit: int  # draws at least as faithful as the circuit
    p_value: float | None
    values: list[float]


@dataclass(kw_only=True)
class RandomGroups(Record):
    """As many random features as the circuit's, drawn from outside it."""

    n_draws: int
    group_sizes: list[int]
    drawn_from: str
    mean_overlap_with_circuit: float
    share_at_same_places: float | None  # draws at the circuit's (hook, position)s
    note: str = OMIT  # why there are fewer draws than asked
    heldout: RandomStats
    selection: RandomStats


@dataclass(kw_only=True)
class BothSets(Record):
    heldout: float | None
    selection: float | None


@dataclass(kw_only=True)
class VariablesOnly(BothSets):
    """The circuit's labelled variable groups alone."""

    n_groups: int
    random_groups: RandomGroups = OMIT  # under the chosen ablation only


@dataclass(kw_only=True)
class TopFeatures(BothSets):
    """The same number of individual features with the largest effects."""

    n_features: int
    ranked_by: str


@dataclass(kw_only=True)
class GroupCurve(Record):
    sizes: list[int]
    heldout: list[float | None]
    selection: list[float | None]


@dataclass(kw_only=True)
class KindScores(Record):
    """The circuit and its controls under one ablation kind."""

    heldout: SetScores
    selection: SetScores
    variables_only: VariablesOnly
    top_features_same_size: TopFeatures
    curve: GroupCurve  # the top k groups, by size
    valid_for: ValidFor | None  # whether this ablation is valid for features and for error terms
    random_groups: RandomGroups


@dataclass(kw_only=True)
class Verdict(Record):
    ablation: str
    target: float
    faithful: bool  # held-out faithfulness >= target
    above_every_random_draw: bool
    control_share_at_same_places: float | None
    faithful_under: list[str]  # ablation kinds under which it is faithful
    text: str  # the verdict in one sentence


@dataclass(kw_only=True)
class VariableCircuitFaithfulness(StageOutput):
    """The circuit of variable nodes: its choice, its scores per ablation and its controls (stage `variable-circuit`)."""

    FILE = "faithfulness.json"
    STAGE = "variable-circuit"
    FORMAT_NAME = "sae_ooc.variable_circuit_faithfulness"

    metric: str
    n_pairs: int
    n_selection: int
    n_heldout: int
    heldout_fraction: float
    ablation_rule: str
    groups: GroupCounts
    selection: GroupSelection
    circuit: VariableCircuitNodes
    by_ablation: dict[str, KindScores]
    verdict: Verdict


@dataclass(kw_only=True)
class GroupRecord(Record):
    """One group of the variable circuit's candidates: its members and each measure's mean and std over each pair set."""

    id: str
    kind: str  # variable, remainder or error
    variable: str  # the labelled variable (or "rest" / "err")
    hook: str
    position: int
    role: str
    size: int  # members
    members: list[int]  # SAE feature indices (the error node: none)
    values: list[str]  # the labels' values
    rank: int | None  # by |mean effect| on the selection pairs
    in_circuit: bool
    active_per_prompt: float  # mean members active per prompt
    ablation_effect_heldout: float
    ablation_effect_heldout_std: float
    ablation_effect_selection: float
    ablation_effect_selection_std: float
    patching_effect_heldout: float
    patching_effect_heldout_std: float
    patching_effect_selection: float
    patching_effect_selection_std: float
    effect_heldout: float  # the effect the groups are ranked by (the chosen intervention's)
    effect_heldout_std: float
    effect_selection: float
    effect_selection_std: float


@dataclass(kw_only=True)
class VariableGroups(StageOutput):
    """Every candidate group of the variable circuit (stage `variable-circuit`; what the browser's feature pages link to)."""

    FILE = "groups.json"
    STAGE = "variable-circuit"
    FORMAT_NAME = "sae_ooc.variable_groups"

    n_pairs: int
    ablation_rule: str
    groups: list[GroupRecord]
