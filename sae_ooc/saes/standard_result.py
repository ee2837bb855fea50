"""RUN/sae_eval/<hook_name>/standard_metrics.json as a typed object (written by `sae_ooc.saes.standard_metrics`; read by
the report without torch): per (variable, position), SAEBench's k-sparse probing and absorption and sae_lens.synthetic's
matching, every number measured on held-out prefixes. Per-latent tensors (matched value, precision, recall) are in
standard_metrics.safetensors beside it, keyed `<variable>@<position>/<name>`.

    StandardMetrics.load(run.sae_eval_dir / hook).row("bridge", "r1").sparse_probing.sae_top_k["1"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sae_ooc.records import OMIT, Record, StageOutput

STANDARD_FILE = "standard_metrics.json"
PER_LATENT_FILE = "standard_metrics.safetensors"


@dataclass(kw_only=True)
class SparseProbing(Record):
    """SAEBench's k-sparse probing (sae_ooc.saes.sparse_probing): per value a balanced one-vs-rest probe."""

    n_classes: int  # values with enough selection and held-out examples
    n_test_rows: int  # held-out rows of those values
    ks: list[int]
    sae_top_k: dict[str, float]  # k -> mean accuracy of a probe on the k SAE latents of largest class-mean difference
    llm_top_k: dict[str, float]  # k -> the same on the raw residual's dimensions
    llm: float | None  # a probe on the whole raw residual
    per_class: dict[str, list[float]]  # "<sae|llm>_top_<k>" / "llm" -> each class's accuracy
    classes: list[int] = OMIT  # the values probed (absent when fewer than two)


@dataclass(kw_only=True)
class AbsorbedValue(Record):
    """One value's absorption (SAEBench's absorption eval with a value in place of a first letter)."""

    value: int
    probe_f1: float
    split_feats: list[int]  # its k-sparse main latents
    sparse_f1: list[float]
    num_probe_true_positives: int
    mean_absorption_fraction: float | None
    full_absorption_rate: float | None


@dataclass(kw_only=True)
class Absorption(Record):
    """SAEBench's feature absorption (sae_ooc.saes.absorption); `{}` where sae_eval.absorption is off."""

    n_values: int = OMIT
    n_heldout: int = OMIT
    evaluable: bool = OMIT  # enough values whose probe reaches SAEBench's F1 threshold
    n_values_probe_f1_ok: int = OMIT
    mean_absorption_fraction: float | None = OMIT
    mean_full_absorption: float | None = OMIT
    mean_num_split_features: float | None = OMIT
    values: list[AbsorbedValue] = OMIT
    probe_f1: list[float] = OMIT  # each value's probe F1


@dataclass(kw_only=True)
class Matching(Record):
    """Feature-to-variable matching with sae_lens.synthetic's calculators (sae_ooc.saes.synthetic_match)."""

    n_values: int
    n_heldout: int
    mcc_decoder: float | None  # decoder vs class-mean directions (both fitted on the selection prefixes)
    mcc_activation: float | None  # latents' activations vs the value's indicator on held-out prefixes
    precision: float | None
    recall: float | None
    f1: float | None
    n_live: int | None  # latents firing on these held-out prefixes
    precision_live: float | None  # the live latents' mean precision
    recall_live: float | None


@dataclass(kw_only=True)
class StandardRow(Record):
    """One (variable, position)."""

    variable: str
    position: str
    n_select: int  # labelled selection prefixes (what probes and directions are fitted on)
    n_heldout: int  # labelled held-out prefixes (what every number here is measured on)
    sparse_probing: SparseProbing
    absorption: Absorption = field(default_factory=Absorption)
    matching: Matching


@dataclass(kw_only=True)
class StandardSettings(Record):
    """The sae_eval settings the metrics were computed with."""

    sparse_probing_k: list[int]
    absorption: bool
    min_positives: int
    seed: int
    fitted_on: str
    measured_on: str


@dataclass(kw_only=True)
class StandardMetrics(StageOutput):
    """The field's standard SAE metrics on the planted variables, per hook (stage `eval-sae`)."""

    FILE = STANDARD_FILE
    STAGE = "eval-sae"
    FORMAT_NAME = "sae_ooc.standard_metrics"
    FORMAT_FIELD = True

    hook_name: str
    rows: list[StandardRow]
    settings: StandardSettings
    format: str = "sae_ooc.standard_metrics/1"  # the file's format version

    @classmethod
    def rebuild(cls, directory: Path) -> str:
        return f"sae-ooc {cls.STAGE} --force --run {directory.parent.parent}"  # RUN/sae_eval/<hook>/

    def row(self, variable: str, position: str) -> StandardRow | None:
        return next((r for r in self.rows if (r.variable, r.position) == (variable, position)), None)
