"""The records of stage `variables`' measurements (sae_ooc/records.py): a unit's control (`ControlUnit`, every row's
units) and section 2, the circuit of causal variables (`CausalCircuit`, variables.json's `circuit`, built by
sae_ooc.causal.circuit): IIA per node beside its references, the bridge@answer search and faithfulness with no remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, Record, opt


@dataclass(kw_only=True)
class ControlUnit(Record):
    """A unit's control on a set of interchange pairs (sae_ooc.causal.control.score), or a random reference over its draws
    (`spread`: the mean of each number, the switch rate's sd and range). Every key is optional: a node without a random
    reference has `{}`."""

    kind: str = OMIT  # resid_patch, labelled_features, top_features, sae_opt, sae_code_swap, supervised, das, random_subspace, random_features
    size: int | None = OMIT  # features or rank; None for whole-stream units
    n: int = OMIT  # pairs scored
    n_draws: int = OMIT  # random references: draws
    switch: float | None = OMIT  # share of pairs answering the counterfactual t(b', r2)
    ci95: list[float] | None = OMIT  # 95% bootstrap interval of switch, resampling head entities
    sd: float = OMIT  # random references: switch's sample sd over draws
    min: float = OMIT
    max: float = OMIT
    logit_change: float | None = OMIT  # the counterfactual answer's first-token logit, minus the clean one
    edit_norm: float | None = OMIT  # mean |delta|
    rel_norm: float | None = OMIT  # mean |delta| / |x|
    n_features: float | None = OMIT  # SAE units: mean features exchanged per pair
    covered: int = OMIT  # labelled features: pairs with a labelled feature of the value or the donor's
    n_bridge_features: int = OMIT  # labelled features of the bridge at the hook
    n_labelled_features: int = OMIT  # labelled features of another variable at the hook
    reference: str = OMIT  # `random`: which random reference it is

    @property
    def share(self) -> float | None:
        """The switch rate, None where not measured."""
        return opt(self.switch)


@dataclass(kw_only=True)
class SmallestUnit(Record):
    """An input's smallest unit: section 1's DAS subspace that carries it."""

    hook: str
    rank: int
    kind: str
    unit: ControlUnit  # its IIA
    resid_patch: ControlUnit  # the residual patch at the same (hook, position)
    random: ControlUnit  # random subspaces of its rank
    chosen_on: str


@dataclass(kw_only=True)
class OtherR2(Record):
    """bridge@answer interchanged from a donor asking another relation r2'' (a bridge, not an answer, should still give
    t(b', r2))."""

    n: int  # held-out pairs with such a donor
    unit: ControlUnit | None  # share answering t(b', r2)
    resid_patch: float | None  # the residual patch's share answering t(b', r2) (it carries r2'' too)
    resid_patch_donor_answer: float | None  # ... answering the donor's own t(b', r2'')
    unit_donor_answer: float | None = OMIT  # the unit's share answering t(b', r2'')


@dataclass(kw_only=True)
class CausalNode(Record):
    """A node of the high-level model as a unit of the model, at (hook, position), with its held-out IIA."""

    hook: str
    position: int  # token index
    rank: int  # the unit's rank (d_model for an input token)
    kind: str = OMIT  # what the unit is (a DAS subspace where absent)
    unit: ControlUnit  # IIA: the unit interchanged from the donor
    resid_patch: ControlUnit  # the residual patch at the same (hook, position)
    random: ControlUnit  # random subspaces of the rank (`{}` where section 1 has none)
    n: int = OMIT  # inputs and r2: held-out pairs of that variable's rows
    chosen_on: str = OMIT
    smallest_unit: SmallestUnit = OMIT  # inputs: the smallest unit of section 1 that carries it
    other_r2: OtherR2 = OMIT  # bridge@answer: from a donor asking another r2

    @property
    def iia(self) -> float | None:
        return self.unit.share


@dataclass(kw_only=True)
class AnswerDas(Record):
    """The bridge@answer search at one hook: the fit-valid residual patch there and, where it reaches
    causal.circuit_patch_min, a DAS subspace per rank."""

    valid_resid_patch: float | None
    valid_switch: dict[str, float | None]  # rank -> fit-valid switch
    heldout_switch: dict[str, float | None]  # rank -> held-out switch
    chosen_rank: int = OMIT  # chosen on fit-valid pairs


@dataclass(kw_only=True)
class AblationScore(Record):
    """Answers with part of the stream ablated (sae_ooc.causal.ablate.faithfulness)."""

    kept_ci95: list[float] | None = OMIT  # 95% interval of kept, resampling head entities
    kept: float | None  # share of answers still right
    logit_diff: float | None  # mean logit difference right answer - t(b', r2) (first tokens)
    faithfulness: float | None  # (ablated - fully ablated) / (clean - fully ablated) of logit_diff
    max_abs_logit_change: float = OMIT


@dataclass(kw_only=True)
class RandomAblation(Record):
    """Random subspaces of the same ranks kept instead, mean over draws."""

    kept: float | None
    faithfulness: float | None
    kept_range: list[float]  # kept's range over draws


@dataclass(kw_only=True)
class Cut(Record):
    """One ablation: what is kept at each hook, its score and its controls."""

    units: dict[str, dict[str, int]]  # hook -> {position: rank kept}
    unit: AblationScore
    random: RandomAblation
    full_mean_ablation: AblationScore  # the zero point
    identity: AblationScore  # the whole space kept (validity)
    valid: bool  # identity changes nothing and the full mean ablation keeps at most 10%


@dataclass(kw_only=True)
class CircuitFaithfulness(Record):
    """Faithfulness of the circuit with no remainder nodes (sae_ooc.causal.circuit.no_remainder)."""

    status: str = OMIT  # why it was not measured
    n: int = OMIT  # held-out base questions
    measured_on: str = OMIT
    metric: str = OMIT
    r2_rank: dict[str, int] = OMIT  # hook -> rank of the r2 unit kept there
    hooks: dict[str, str | None] = OMIT  # bridge@r1 / bridge@answer -> its hook
    cut_r1: Cut = OMIT  # the bridge@r1 hook only
    cut_answer: Cut = OMIT  # the bridge@answer hook only
    circuit: Cut = OMIT  # both
    validity_check: str = OMIT


@dataclass(kw_only=True)
class CausalCircuit(Record):
    """Section 2 of stage `variables`: the circuit of causal variables scored as a causal model (only `status` when it was
    not built)."""

    status: str = OMIT  # "ok", or why it was not built (absent: a file without section 2)
    high_level_model: str = OMIT
    answer_position: int = OMIT
    r1_position: int = OMIT
    n_heldout: int = OMIT  # held-out pairs (section 1's)
    n_heads: int = OMIT  # distinct head entities among them
    answer_das: dict[str, AnswerDas] = OMIT  # hook -> the bridge@answer search there
    patch_min: float = OMIT  # causal.circuit_patch_min
    chosen_on: str = OMIT
    nodes: dict[str, CausalNode] = OMIT  # bridge@r1, bridge@answer, r2@answer
    inputs: dict[str, CausalNode] = OMIT  # head, r1, r2: each its token
    iia: float | None = OMIT  # the weaker bridge node's IIA
    iia_every_node: float | None = OMIT  # the weakest node's IIA, inputs and r2 included
    faithfulness: CircuitFaithfulness = OMIT

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def every_node(self) -> dict[str, CausalNode]:
        """Inputs first, then the nodes."""
        return {**(opt(self.inputs, {})), **(opt(self.nodes, {}))}
