"""RUN/sae_eval/<hook_name>/standard_metrics.json as a typed object (written by `sae_ooc.saes.standard_metrics`; read by
the report without torch): per (variable, position), SAEBench's k-sparse probing and absorption and sae_lens.synthetic's
matching, every number measured on held-out prefixes. Per-latent tensors (matched value, precision, recall) are in
standard_metrics.safetensors beside it, keyed `<variable>@<position>/<name>`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.io import write_json
from sae_ooc.records import read_or_rerun

FORMAT = "sae_ooc.standard_metrics/1"
STANDARD_FILE = "standard_metrics.json"
PER_LATENT_FILE = "standard_metrics.safetensors"


@dataclass
class StandardRow:
    variable: str
    position: str
    n_select: int  # labelled selection prefixes (what probes and directions are fitted on)
    n_heldout: int  # labelled held-out prefixes (what every number here is measured on)
    sparse_probing: dict = field(default_factory=dict)  # sae_top_k / llm_top_k {k: mean accuracy}, llm, n_classes
    absorption: dict = field(default_factory=dict)  # mean_absorption_fraction, mean_full_absorption, per value
    matching: dict = field(default_factory=dict)  # mcc_decoder, mcc_activation, precision, recall, f1 (+ live-only)


@dataclass
class StandardMetrics:
    hook_name: str
    rows: list[StandardRow]
    settings: dict = field(default_factory=dict)
    format: str = FORMAT

    def save(self, path: str | Path) -> None:
        write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "StandardMetrics":
        path = Path(path)
        rebuild = f"sae-ooc eval-sae --force --run {path.parent.parent.parent}"
        d = read_or_rerun(path, rebuild)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(f"{path} is not a {FORMAT} file; rerun `{rebuild}`")
        return cls(d["hook_name"], [StandardRow(**r) for r in d["rows"]], d.get("settings", {}), d["format"])

    def row(self, variable: str, position: str) -> StandardRow | None:
        return next((r for r in self.rows if (r.variable, r.position) == (variable, position)), None)
