"""RUN/edit/edit.json as a typed object: what stage `edit` measured (no torch here).

    e = EditResult.load(run.edit_dir)
    e.by_layer[0].propagation.share, e.localization.correlation["rewrite"].spearman.value
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, MeanCI, Record, Share, StageOutput


@dataclass(kw_only=True)
class EditPositions(Record):
    """Natural tasks: token indices of the edited prompts."""

    key: int  # the key's token in the atomic prompt (the last of edit.position's span)
    atomic_answer: int  # where the atomic prompt's answer is read
    two_hop_answer: int  # where the two-hop question's answer is read
    two_hop_shares_key: bool  # the two-hop question has the atomic prompt's tokens up to the key


@dataclass(kw_only=True)
class EditSettings(Record):
    """The edit section of the config and what it found."""

    n_edits: int  # facts edited (train atomic facts the model answers correctly)
    n_edits_asked: int
    layers: list[int]  # layers whose MLP W_out is edited, one at a time
    position: str  # the role whose last token is the key
    value_steps: int
    value_lr: float
    clamp_norm: float
    weight_decay: float
    ridge: float
    specificity_prompts: int  # unrelated prompts per edit and kind
    trace_samples: int
    trace_noise: float  # causal tracing's noise, in entity-embedding stds
    seed: int
    family: str  # the task family
    prompts: str = OMIT  # natural tasks: how facts are asked
    positions: EditPositions = OMIT  # natural tasks
    answers: str = OMIT  # natural tasks: how whole answers are judged


@dataclass(kw_only=True)
class BeforeEdit(Record):
    """The rates before any edit (what each judgement gives with nothing changed)."""

    efficacy: Share  # facts already giving b'
    propagation: Share  # two-hop prompts already giving t(b', r2)
    reverse: Share
    two_hop_correct_before: Share  # the edited facts' two-hop prompts the model answered correctly


@dataclass(kw_only=True)
class EditControl(Record):
    """The same edits with their value change in a random direction of the same norm."""

    efficacy: Share
    propagation: Share
    specificity_atomic: Share
    propagation_heldout: Share = OMIT


@dataclass(kw_only=True)
class EditLayer(Record):
    """Every edit written at one layer, pooled over the edits' prompts."""

    layer: int
    efficacy: Share  # the edited fact gives b' (the prompt the value was fitted on: in-sample)
    propagation: Share  # two-hop prompts answered correctly before now give t(b', r2)
    propagation_all_prompts: Share  # ... over every two-hop prompt of the edited facts
    reverse: Share  # the reversal family: (b', r1^-1) -> h
    specificity_same_head: Share  # the head's other facts keep their answer
    specificity_atomic: Share  # unrelated atomic facts keep theirs
    specificity_two_hop: Share  # unrelated two-hop prompts keep theirs
    kl_same_head: MeanCI  # KL(pre || post) at the answer position
    kl_atomic: MeanCI
    kl_two_hop: MeanCI
    p_new: MeanCI  # p(b') at the edited prompt (the rewrite score)
    random_direction_control: EditControl
    propagation_heldout: Share = OMIT  # two-hop facts held out of training (the answer must be composed)
    propagation_trained: Share = OMIT  # trained two-hop facts (the old answer memorised whole)
    value_change_norm: MeanCI  # |d| of the rank-one update's value change
    editable: int  # edits whose key is nonzero


@dataclass(kw_only=True)
class CorrValue(Record):
    """A correlation with its 95% interval from resampling facts."""

    value: float | None  # None where fewer than 3 finite points
    ci95: list[float] | None


@dataclass(kw_only=True)
class Correlation(Record):
    """Causal tracing's effect against an edit's success over (fact, layer) points."""

    n_points: int
    n_facts: int
    pearson: CorrValue
    spearman: CorrValue
    spearman_within_layer: list[float | None]  # per layer with >= 3 points (Hase et al.'s comparison)


@dataclass(kw_only=True)
class TracedLayer(Record):
    """Edit success at the layer causal tracing localizes each fact to, against the mean over layers."""

    layer_counts: dict[str, int]  # layer -> facts traced to it
    efficacy_at_traced_layer: float | None
    propagation_at_traced_layer: float | None
    rewrite_at_traced_layer: float | None
    efficacy_mean_over_layers: float
    propagation_mean_over_layers: float | None


@dataclass(kw_only=True)
class LocalizationPoints(Record):
    """One point per (fact, layer), facts major."""

    layer: list[int]
    trace: list[float]  # causal tracing's MLP effect
    rewrite: list[float]  # p(b') after the edit
    propagation: list[float | None]


@dataclass(kw_only=True)
class Localization(Record):
    """Causal tracing of the edited facts and its correlation with edit success (all OMIT but `correlation` when nothing
    was edited)."""

    p_clean: float = OMIT  # p(b) on the clean prompts
    p_corrupt: float = OMIT  # ... with the head corrupted
    mean_effect_by_layer: dict[str, list[float]] = OMIT  # "mlp" and "resid": restoring that state at the key, by layer
    traced_layer: TracedLayer = OMIT
    correlation: dict[str, Correlation]  # rewrite, propagation (MLP tracing), *_vs_resid_tracing (residual tracing)
    points: LocalizationPoints = OMIT


@dataclass(kw_only=True)
class EditResult(StageOutput):
    """Rank-one (ROME) edits of atomic facts at every layer, and whether causal tracing predicts where they work (stage `edit`)."""

    FILE = "edit.json"
    STAGE = "edit"
    FORMAT_NAME = "sae_ooc.edit"

    settings: EditSettings
    before_any_edit: BeforeEdit = OMIT
    by_layer: list[EditLayer]
    localization: Localization
    note: str = OMIT  # why nothing was edited (then by_layer is empty), or what was not measured (propagation)
