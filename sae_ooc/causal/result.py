"""RUN/variables/variables.json as a typed object: what stage `variables` measured, with a format version.

Rows are one (variable, position, hook) each: the bridge at r1 per hook, then every other planted variable at its
position (`causal.variables`, sae_ooc.causal.planted). A row's `units` maps a unit name (resid_patch, labelled_features,
top<n>_features, sae_opt<n> (Makelov et al.'s greedy
edit), sae_code_swap, supervised, supervised_rank<r>, das_rank<r>, random_rank<r>, random_features<n>) to its
control on the held-out prefixes: `switch` (share of interchanged questions answering t(b', r2)) with `ci95` (bootstrap
over head entities), `logit_change` (the counterfactual answer's first-token logit, minus the clean one), `edit_norm`
(mean |delta|), `rel_norm` (mean |delta| / |x|) and `size` (features or rank; None for whole-stream units); random
references add the spread over draws (`sd`, `min`, `max`). `curves` lists the unit names of each kind by size, `das` the
validation switch rates DAS's rank is chosen on, `erase` the necessity results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.io import write_json
from sae_ooc.records import read_or_rerun

FORMAT = "sae_ooc.variables/3"
READABLE = ("sae_ooc.variables/1", "sae_ooc.variables/2", FORMAT)  # /1 has no circuit (section 2); /2 the bridge at r1 alone
VARIABLES_FILE = "variables.json"


@dataclass
class VariableRow:
    variable: str
    position: str
    hook: str
    n_heldout: int  # interchange pairs scored (held-out prefixes)
    n_heads: int  # distinct head entities among them (what intervals resample)
    units: dict[str, dict] = field(default_factory=dict)
    curves: dict[str, list[str]] = field(default_factory=dict)  # kind -> unit names by increasing size
    das: dict = field(default_factory=dict)
    erase: dict = field(default_factory=dict)
    class_means: dict = field(default_factory=dict)  # variance shares of the class means' principal directions
    isolation: dict = field(default_factory=dict)  # share of pairs whose r2 is still read at the answer position, per unit
    pairs: dict = field(default_factory=dict)  # a variable other than the bridge at r1: how its donors were drawn (sae_ooc.causal.planted)

    def switch(self, unit: str) -> float | None:
        u = self.units.get(unit)
        return None if u is None else u.get("switch")


@dataclass
class VariablesResult:
    settings: dict
    rows: list[VariableRow]
    # the held-out interchange pairs every unit was scored on: [h, r1, r2, b, b', h', r1'] (planted ids), donor (h', r1')
    heldout_pairs: list[list[int]] = field(default_factory=list)
    # section 2, the circuit of causal variables (sae_ooc.causal.circuit): IIA per node, faithfulness with no remainder
    circuit: dict = field(default_factory=dict)
    format: str = FORMAT

    def save(self, path: str | Path) -> None:
        write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "VariablesResult":
        path = Path(path)
        rebuild = f"sae-ooc variables --force --run {path.parent.parent}"
        d = read_or_rerun(path, rebuild)
        if not isinstance(d, dict) or d.get("format") not in READABLE:
            raise UserError(f"{path} is not a {FORMAT} file (format {d.get('format') if isinstance(d, dict) else None!r}); "
                            f"rerun `{rebuild}`")
        return cls(d["settings"], [VariableRow(**r) for r in d["rows"]], d.get("heldout_pairs", []), d.get("circuit", {}),
                   d["format"])

    def row(self, variable: str, position: str, hook: str) -> VariableRow | None:
        return next((r for r in self.rows if (r.variable, r.position, r.hook) == (variable, position, hook)), None)
