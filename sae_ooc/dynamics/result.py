"""RUN/dynamics/dynamics.json as a typed object: the measures of every checkpoint (no torch here).

    d = DynamicsResult.load(run.dynamics_dir)
    d.checkpoints[-1].probes["blocks.1.hook_resid_pre"]["r1"].heldout_acc
    d.checkpoints[-1].logit_lens.series["bridge@r1"].top1        # keys named <variable>@<position>
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, Record, StageOutput, rest


@dataclass(kw_only=True)
class Rise(Record):
    """Where a split's accuracy rises in the periodic evaluations (sae_ooc.models.replay.accuracy_rise)."""

    split: str
    first_acc: float = OMIT  # its first evaluated accuracy a0 (absent without evaluations)
    best_acc: float = OMIT  # its best b
    found: bool  # it rose by at least 0.05
    moment: int = OMIT  # first step at or above half way (only when found)
    end: int = OMIT  # first step at or above dynamics.rise_high of the way
    start: int = OMIT  # last step below dynamics.rise_low of the way before end


@dataclass(kw_only=True)
class Readable(Record):
    """The earliest checkpoint, hook and position where a bridge probe reads the bridge above its controls."""

    step: int
    hook: str
    position: str
    heldout_acc: float


@dataclass(kw_only=True)
class Used(Record):
    """The earliest checkpoint whose DAS switch rate reaches `control.used_threshold` of its final value."""

    step: int
    hook: str  # the hook where the final rate is highest
    switch: float
    final_switch: float


@dataclass(kw_only=True)
class Answers(Record):
    """The stage's questions, answered from the checkpoints."""

    composition_step_test_id: int | None  # test_id's rise moment
    rise_step_valid_id: int | None
    bridge_first_readable: Readable | None
    bridge_readable_before_composition: bool | None
    bridge_first_used: Used | None = OMIT  # only with DAS control (dynamics.das_rank > 0)
    bridge_first_used_answer: Used | None = OMIT  # the same for the bridge@answer unit (control_answer)


@dataclass(kw_only=True)
class Probe(Record):
    """A bridge probe at one hook and position (fit on selection prefixes, scored on held-out ones)."""

    heldout_acc: float | None
    shuffled_acc: float | None  # the same probe fit on shuffled labels
    majority_acc: float | None
    n_heldout: int
    heldout_ci95: list[float] | None


@dataclass(kw_only=True)
class LensSeries(Record):
    """The logit lens of one token at one position, per layer (resid_pre of each block, then the final resid_post)."""

    median_rank: list[float]  # 0 = top token
    top1: list[float]  # share of prompts where it is the top token


@dataclass(kw_only=True)
class LogitLens(Record):
    """Logit lens at r1 and the answer position (analyses.logit_lens.lens_logits)."""

    labels: list[str]  # the layers read
    n_prompts: int
    series: dict[str, LensSeries] = rest()  # bridge@<r1>, bridge@<answer position>, answer@<answer position>


@dataclass(kw_only=True)
class Peak(Record):
    value: float
    layer: int
    position: str = OMIT  # the overall peak's position (per-position peaks have none)


@dataclass(kw_only=True)
class Patching(Record):
    """resid_pre activation patching, clean into corrupted, normalised (0 = corrupted, 1 = clean)."""

    clean_logit_diff: float
    corrupt_logit_diff: float
    n_pairs: int
    normalised: list[list[float]]  # [layer][position]
    peak: Peak = OMIT  # the largest, the head's span left out (absent when nothing is finite)
    by_position: dict[str, Peak] = rest()  # peak@<position> for r1 and the answer position


@dataclass(kw_only=True)
class Control(Record):
    """DAS control of the bridge at r1 at one hook: switch rates on the held-out interchange pairs."""

    n: int  # held-out pairs
    resid_patch: float  # the whole residual interchanged
    das: float | None  # the rank-r DAS subspace (None without fit pairs)
    random: float | None  # random subspaces of the same rank, mean over draws
    das_ci95: list[float] | None = OMIT  # over head entities
    das_logit_change: float | None = OMIT


@dataclass(kw_only=True)
class AnswerControl(Record):
    """DAS control of the bridge at the answer position at one hook (sae_ooc.dynamics.answer_control): switch rates on the
    held-out interchange pairs."""

    n: int  # held-out pairs
    das: float | None  # the rank-r DAS subspace (None where the variables stage's search fitted none)
    resid_patch: float  # the whole residual interchanged at the answer position
    valid_resid_patch: float | None  # the residual patch on the fit-valid pairs (the search's gate)


@dataclass(kw_only=True)
class SaeAlignment(Record):
    mean_auroc_features: float | None
    frac_detected_features: float | None
    shuffled_mean_auroc: float | None
    probe_accuracy: float | None
    n_values: int


@dataclass(kw_only=True)
class CheckpointSae(Record):
    """A small SAE trained on one checkpoint's activations at one hook."""

    explained_variance: float
    l0: float
    alignment: dict[str, SaeAlignment] = rest()  # <variable>@<position>


@dataclass(kw_only=True)
class Checkpoint(Record):
    """Every measure at one checkpoint."""

    step: int
    source: str  # "saved" by train, or "replayed" exactly from the nearest saved one
    accuracy: dict[str, float]  # split -> accuracy on every example
    probes: dict[str, dict[str, Probe]]  # hook -> position -> bridge probe
    logit_lens: LogitLens
    patching: Patching
    control: dict[str, Control] = OMIT  # hook -> DAS control (dynamics.das_rank > 0)
    control_answer: dict[str, AnswerControl] = OMIT  # hook -> DAS control of the bridge at the answer position
    saes: dict[str, CheckpointSae] = OMIT  # hook -> SAE (dynamics.sae_training_tokens > 0)


@dataclass(kw_only=True)
class ControlSettings(Record):
    hooks: list[str]
    position: str
    rank: int
    das_steps: int
    n_fit_pairs: int
    n_heldout_pairs: int
    n_random: int
    used_threshold: float  # share of the final DAS switch rate that counts as used
    measured_on: str
    answer_position: str | None = OMIT  # control_answer's position
    patch_min: float = OMIT  # causal.circuit_patch_min: the answer unit is fitted where the patch reaches this


@dataclass(kw_only=True)
class Targets(Record):
    """Multi-token names: what the logit lens and patching read."""

    bridge_and_answer: str  # the first token of each entity name
    n_patch_pairs_same_first_token: int  # pairs whose two answers share it (they add 0 to both runs)


@dataclass(kw_only=True)
class CheckpointCounts(Record):
    """The checkpoints measured."""

    saved: int  # saved by train (log-spaced, with step 0)
    replayed: int  # replayed exactly from the nearest saved one across the valid_id rise


@dataclass(kw_only=True)
class DynamicsResult(StageOutput):
    """The model's checkpoints, saved and replayed across the valid_id rise, each measured the same way (stage `dynamics`)."""

    FILE = "dynamics.json"
    STAGE = "dynamics"
    FORMAT_NAME = "sae_ooc.dynamics"

    rise: dict[str, Rise]  # valid_id, test_id
    readable_threshold: float  # held-out accuracy at which a probe reads the bridge
    hooks: list[str]  # probe and lens hooks
    sae_hooks: list[str]  # hooks with a small SAE per checkpoint ([] when none)
    n_checkpoints: CheckpointCounts
    answers: Answers
    n_prompts_logit_lens: int
    n_patch_pairs: int
    checkpoints: list[Checkpoint]
    control: ControlSettings = OMIT  # with DAS control
    targets: Targets = OMIT  # multi-token names only
