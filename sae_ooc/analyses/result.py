"""RUN/analyze/<name>.json as typed objects, one class per analysis (no torch here).

    r = AnalysisResult.load_named(run.analyze_dir, "probes")     # or ProbesResult.load(run.analyze_dir)
    r.bridge.heldout_acc[i][j], r.roles

Every file starts with the same header (which analysis, the model it ran on, the prompts); `roles` names the token
positions of the task's layout (the toy's head, r1, r2), and `role_index` finds one, `answer_role` the position that
predicts the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_ooc.records import OMIT, Record, StageOutput, rest

TOY_ROLES = ["head", "r1", "r2"]


@dataclass(kw_only=True)
class AnalysisResult(StageOutput):
    """The header every analysis file starts with."""

    STAGE = "analyze"
    NAME = ""  # the analysis (its registry name, the file's stem)

    analysis: str  # the analysis's name
    model_hash: str  # the model it ran on (a file of another model is removed by the next analyze)
    prompts: str  # which prompts (a seeded held-out test_id sample)
    n_sample: int
    seed: int
    seconds: float  # wall-clock seconds here

    @classmethod
    def rebuild(cls, directory: Path) -> str:
        return f"sae-ooc analyze {cls.NAME} --force --run {directory.parent}"

    @staticmethod
    def named(name: str) -> type[AnalysisResult]:
        return next(c for c in ANALYSIS_RESULTS if c.NAME == name)

    @staticmethod
    def load_named(directory: Path, name: str) -> AnalysisResult | None:
        """The analysis `name`'s result in `directory`, None where it was not run."""
        return AnalysisResult.named(name).load_if(directory)

    def role_index(self, role: str) -> int:
        """A role's position (`answer`: the position that predicts the answer, the toy's last role, `last` in a natural task)."""
        roles = getattr(self, "roles", None) or TOY_ROLES
        return roles.index(self.answer_role() if role == "answer" else role)

    def answer_role(self) -> str:
        roles = getattr(self, "roles", None) or TOY_ROLES
        return "last" if "last" in roles else roles[-1]  # the toy's last role: r2 (two-hop), r1 (a one-fact question)


@dataclass(kw_only=True)
class AttentionExample(Record):
    prompt: str
    answer: str
    bridge: str
    pattern: list  # [layer][head][query position][key position]


@dataclass(kw_only=True)
class HeadRecord(Record):
    head: str  # LxHy
    layer: int
    head_index: int
    attn_r2_to_r1: float  # mean attention from the answer position to r1
    attn_r2_to_r1_std: float
    attn_r2_to_head: float
    z_patch_at_r2_recovered: float | None  # share of the metric gap its output at the answer position recovers
    mover: bool


@dataclass(kw_only=True)
class AttentionResult(AnalysisResult):
    """Attention patterns by role, and which heads move the bridge (attention + patching of their output)."""

    FILE = "attention.json"
    NAME = "attention"
    FORMAT_NAME = "sae_ooc.analyze.attention"

    n_prompts: int
    roles: list[str]
    mean_pattern: list  # [layer][head][query][key]
    examples: list[AttentionExample]
    metric: str
    clean: float
    corrupt: float
    heads: list[HeadRecord]
    movers: list[str]
    movers_joint_recovered: float | None  # the movers' outputs patched together
    mover_rule: str


@dataclass(kw_only=True)
class LensStats(Record):
    """One token's logit lens, [state][position] each."""

    prob: list
    prob_std: list | None
    median_rank: list
    mean_rank: list
    top1: list  # share of prompts where it is the top token


@dataclass(kw_only=True)
class LogitLensResult(AnalysisResult):
    """Each layer's residual stream read through the final layer norm and unembedding."""

    FILE = "logit-lens.json"
    NAME = "logit-lens"
    FORMAT_NAME = "sae_ooc.analyze.logit_lens"

    n_prompts: int
    states: list[str]
    roles: list[str]
    caveat: str
    bridge: LensStats
    answer: LensStats
    final_accuracy: float  # the model's accuracy on these prompts


@dataclass(kw_only=True)
class PatchGrid(Record):
    raw: list  # [layer][position] (or [layer][position][head])
    normalised: list  # 0 = corrupted run, 1 = clean run
    sem: list


@dataclass(kw_only=True)
class PatchingResult(AnalysisResult):
    """Clean -> corrupted activation patching of every kind (analyses.patching.patch_all)."""

    FILE = "patching.json"
    NAME = "patching"
    FORMAT_NAME = "sae_ooc.analyze.patching"

    metric: str
    n_prompts: int
    clean: float
    corrupt: float
    clean_std: float
    corrupt_std: float
    kinds: dict[str, PatchGrid] = rest()  # resid_pre, attn_out, mlp_out, z, pattern
    roles: list[str]


@dataclass(kw_only=True)
class TracingResult(AnalysisResult):
    """Causal tracing: noise on the head entity, one state restored at a time."""

    FILE = "causal-tracing.json"
    NAME = "causal-tracing"
    FORMAT_NAME = "sae_ooc.analyze.causal_tracing"

    n_prompts: int
    samples: int
    noise_scale: float
    sigma: float  # std of the entity embeddings
    noise_std: float
    window: int
    subject_pos: int | list[int]
    roles: list[str]
    p_clean: float
    p_corrupt: float
    total_effect: float
    resid: list  # [layer][position] indirect effect of restoring resid_pre
    mlp: list
    attn: list


@dataclass(kw_only=True)
class ProbeGrid(Record):
    """One variable's probes, [hook][position] each (None where the variable is undetermined there)."""

    heldout_acc: list
    heldout_ci95: list
    random_model_acc: list
    shuffled_acc: list
    step0_acc: list
    majority_acc: list
    chance: list
    above_controls: list
    n_heldout: list
    n_select: list
    n_classes: list
    control_max_acc: list


@dataclass(kw_only=True)
class ProbesResult(AnalysisResult):
    """Linear probes of the head, bridge and answer at every hook and position, fit on selection prefixes."""

    FILE = "probes.json"
    NAME = "probes"
    FORMAT_NAME = "sae_ooc.analyze.probes"

    hooks: list[str]
    positions: list[str]
    n_controls: int
    head: ProbeGrid
    bridge: ProbeGrid
    answer: ProbeGrid
    split: str  # the held-out prefixes the probes are scored on
    has_step0: bool  # the step-0 checkpoint was a control
    # a family that declares directions (reversal): each direction's answer probed at the head's and the answer position,
    # {method, hooks, positions, chance, directions: {name: {scored_on, n_fit, n_heldout, acc, shuffled_acc,
    # random_model_acc: {hook: {position: share}}}}} (sae_ooc.analyses.probes.answer_at_head); or {note} where not measured
    answer_at_head: dict = OMIT


@dataclass(kw_only=True)
class DlaComponent(Record):
    component: str  # LxHy or MLP L
    answer: float
    answer_std: float
    answer_minus_corrupt: float
    answer_minus_corrupt_std: float


@dataclass(kw_only=True)
class DlaCheck(Record):
    """The components (and b_O) sum to the logit minus b_U."""

    sum_answer: float
    logit_answer_minus_bU: float
    sum_diff: float
    logit_diff_minus_bU: float


@dataclass(kw_only=True)
class DlaResult(AnalysisResult):
    """Direct logit attribution of every head and MLP at the answer position."""

    FILE = "dla.json"
    NAME = "dla"
    FORMAT_NAME = "sae_ooc.analyze.dla"

    n_prompts: int
    components: list[DlaComponent]
    heads_answer: list  # [layer][head]
    heads_diff: list
    mlps_answer: list  # [layer]
    mlps_diff: list
    check: DlaCheck


@dataclass(kw_only=True)
class Patch(Record):
    position: str
    src: int  # the state copied (resid_pre of this layer)
    dst: int  # into this layer


@dataclass(kw_only=True)
class ChosenPatch(Record):
    index: int  # in `patches`
    position: str
    src: int
    dst: int
    chosen_on: str


@dataclass(kw_only=True)
class BackPatchSplit(Record):
    n_prompts: int
    n_failures: int
    accuracy: float
    fixed_by_patch: list  # share of failures each patch fixes
    fixed_by_any_patch_upper_bound: float | None
    chosen_fixed: float | None = OMIT
    chosen_breaks_correct: float | None = OMIT


@dataclass(kw_only=True)
class BackPatchingResult(AnalysisResult):
    """Back-patching (Biran et al. 2024): a later layer's state patched into an earlier one."""

    FILE = "back-patching.json"
    NAME = "back-patching"
    FORMAT_NAME = "sae_ooc.analyze.back_patching"

    patches: list[Patch]
    n_layers: int
    states: list[str]
    chosen: ChosenPatch | None  # chosen on the valid_id failures
    valid_id: BackPatchSplit | None
    test_id: BackPatchSplit | None
    test_ood_sys: BackPatchSplit | None  # Wang et al.'s systematic split
    test_unanswerable: BackPatchSplit | None


@dataclass(kw_only=True)
class AnswersResult(AnalysisResult):
    """What the model answers on each split's analysed prompts, by class of the task's facts (sae_ooc.analyses.answers)."""

    FILE = "answers.json"
    NAME = "answers"
    FORMAT_NAME = "sae_ooc.analyze.answers"

    classes: list[str]
    most_frequent_answer: str | None
    has_inverse: bool  # the task's relations have inverses (the class inverse_tail can occur)
    splits: dict  # split -> {n, share {class: x}, chance {class: x}, top_wrong [[token, count]]} or None


ANALYSIS_RESULTS = (AttentionResult, LogitLensResult, PatchingResult, TracingResult, ProbesResult, DlaResult, BackPatchingResult,
                    AnswersResult)
