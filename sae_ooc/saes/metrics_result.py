"""The SAE stages' per-hook metrics files as typed objects (no torch here).

    RUN/saes/<hook>/metrics.json       SaeTrainMetrics (train-sae): settings, training log, reconstruction on held-out prefixes
    RUN/sae_eval/<hook>/metrics.json   SaeEvalMetrics (eval-sae): reconstruction, task metrics with the SAE spliced in,
                                       alignment (probes and single features per variable@position), feature labels

    m = SaeEvalMetrics.load(run.sae_eval_dir / hook)
    m.alignment["bridge@r1"].probe.heldout_acc, m.task.splits["test_id"].acc_sae
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_ooc.records import OMIT, Record, StageOutput


@dataclass(kw_only=True)
class PositionReconstruction(Record):
    explained_variance: float | None
    fvu: float | None
    mse: float | None
    l0: float | None
    n_tokens: int


@dataclass(kw_only=True)
class Reconstruction(Record):
    """The SAE on held-out prefixes (each distinct prefix once), pooled and per position."""

    explained_variance: float | None
    fvu: float | None  # 1 - explained variance
    mse: float | None
    l0: float | None  # mean active features per token
    n_tokens: int  # held-out prefixes
    mse_per_token: float | None
    dead_fraction: float | None
    n_dead: int = OMIT  # never active on the held-out prefixes (sae_ooc.saes.dead)
    dead_on: str = OMIT
    dense_fraction: float | None = OMIT  # active on more than sae_eval.dense_threshold of tokens
    n_dense: int = OMIT
    by_position: dict[str, PositionReconstruction] = OMIT  # role -> the same on its tokens


class _HookOutput(StageOutput):
    @classmethod
    def rebuild(cls, directory: Path) -> str:
        return f"sae-ooc {cls.STAGE} --force --run {directory.parent.parent}"  # RUN/<stage folder>/<hook>/


@dataclass(kw_only=True)
class SaeCache(Record):
    root: str  # the activation cache trained on
    model_hash: str
    n_tokens: int
    n_train_tokens: int
    n_eval_tokens: int  # held-out prefixes
    split: str


@dataclass(kw_only=True)
class SaeTraining(Record):
    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    final_log: dict  # the last train_log.jsonl row
    sae_lens_window_l0: float | None
    sae_lens_num_dead_features: int | None


@dataclass(kw_only=True)
class SaeTrainMetrics(_HookOutput):
    """One SAE as trained (stage `train-sae`; SAELens's cfg.json and weights beside it)."""

    FILE = "metrics.json"
    STAGE = "train-sae"
    FORMAT_NAME = "sae_ooc.sae_train"

    hook_name: str
    architecture: str  # sae.architecture as trained
    inference_architecture: str  # as saved for inference (BatchTopK -> JumpReLU, ...)
    d_in: int
    d_sae: int
    params: dict  # the SaeConfig it was trained with
    settings: str  # hash of those settings (a finished SAE with the same hash is reused)
    cache: SaeCache
    training: SaeTraining
    reconstruction: Reconstruction
    task: TaskMetrics = OMIT  # SAE sweep points (sae_ooc.saes.sweep): the task with the SAE spliced in


@dataclass(kw_only=True)
class TaskSplit(Record):
    """The task on one split with the SAE spliced in, beside the clean model and the activation zeroed."""

    n: int
    acc_clean: float | None
    acc_sae: float | None
    acc_zero: float | None
    loss_clean: float | None
    loss_sae: float | None
    loss_zero: float | None
    loss_recovered: float | None  # (CE_zero - CE_sae) / (CE_zero - CE_clean)


@dataclass(kw_only=True)
class TaskMetrics(Record):
    splits: dict[str, TaskSplit]
    loss_recovered: float | None  # on test_id (most of its prompts are SAE training rows: in-sample)
    acc_drop_test_id: float | None
    loss_recovered_valid_id: float | None
    heldout_prefixes: dict[str, TaskSplit] = OMIT  # the same, on prompts whose prefixes the SAE did not see


@dataclass(kw_only=True)
class ProbeStats(Record):
    """A linear probe fit on selection prefixes, scored on held-out ones, beside its controls."""

    n_select: int
    n_heldout: int
    n_classes: int
    selection_acc_in_sample: float | None
    majority_acc: float | None
    heldout_acc: float | None
    heldout_acc_known: float | None = OMIT  # prefixes whose first-hop fact was trained
    n_heldout_known: int | None = OMIT
    heldout_acc_unknown: float | None = OMIT
    n_heldout_unknown: int | None = OMIT
    heldout_ci95: list[float] | None
    random_model_accs: list = OMIT  # the same probe on a random-init model, per control
    random_model_acc: float | None = OMIT
    random_model_acc_known: float | None = OMIT
    random_model_acc_unknown: float | None = OMIT
    step0_accs: list = OMIT  # on the step-0 checkpoint, when saved
    step0_acc: float | None = OMIT
    step0_acc_known: float | None = OMIT
    step0_acc_unknown: float | None = OMIT
    shuffled_accs: list  # with shuffled labels
    shuffled_acc: float | None
    shuffled_acc_known: float | None = OMIT
    shuffled_acc_unknown: float | None = OMIT
    control_max_acc: float | None
    above_controls: bool | None  # the 95% interval clears the best control's


@dataclass(kw_only=True)
class FeatureStats(Record):
    """The single best SAE feature per value of the variable."""

    mean_auroc: float | None
    sd_auroc_over_values: float | None
    frac_detected: float | None  # share of values one feature detects (AUROC >= sae_eval.auroc_threshold)
    shuffled_mean_auroc: float | None
    shuffled_mean_auroc_runs: list
    shuffled_frac_detected: float | None
    shuffled_frac_detected_runs: list
    above_controls: bool | None


@dataclass(kw_only=True)
class ValueAlignment(Record):
    value: str  # the value's name
    id: int
    feature: int | None  # its best feature
    auroc_feature: float | None
    auroc_probe: float | None


@dataclass(kw_only=True)
class Alignment(Record):
    """One variable at one position: how well the stream (probe) and single features (AUROC) read it."""

    variable: str
    position: str
    n_values: int
    n_select: int
    n_heldout: int
    probe_accuracy: float | None
    probe: ProbeStats | None
    frac_detected_features: float | None
    frac_detected_probe: float | None
    mean_auroc_features: float | None
    mean_auroc_probe: float | None
    features: FeatureStats | None
    values: list[ValueAlignment]


@dataclass(kw_only=True)
class FeatureLabel(Record):
    """A feature labelled with the value it detects."""

    feature: int
    variable: str
    position: str
    value: str
    auroc: float
    precision: float | None


@dataclass(kw_only=True)
class SaeEvalMetrics(_HookOutput):
    """One SAE evaluated (stage `eval-sae`)."""

    FILE = "metrics.json"
    STAGE = "eval-sae"
    FORMAT_NAME = "sae_ooc.sae_eval"

    hook_name: str
    architecture: str
    inference_architecture: str
    d_in: int
    d_sae: int
    reconstruction: Reconstruction
    task: TaskMetrics
    alignment: dict[str, Alignment]  # variable@position -> alignment
    feature_labels: list[FeatureLabel]
