"""RUN/variables/variables.json as a typed object: what stage `variables` measured (sae_ooc/records.py; no torch here).

Rows are one (variable, position, hook) each: the bridge at r1 per hook, then every other planted variable at its
position (`causal.variables`, sae_ooc.causal.planted). A row's `units` maps a unit name (resid_patch, labelled_features,
top<n>_features, sae_opt<n> (Makelov et al.'s greedy edit), sae_code_swap, supervised, supervised_rank<r>, das_rank<r>,
random_rank<r>, random_features<n>) to its control on the held-out prefixes (a `ControlUnit`); `curves` lists the unit
names of each kind by size, `das` the validation switch rates DAS's rank is chosen on, `erase` the necessity results.
`circuit` is section 2, the circuit of causal variables (sae_ooc.causal.circuit_result).

    v = VariablesResult.load(run.variables_dir)
    v.row("bridge", "r1", hook).units["das_rank16"].switch
    v.circuit.nodes["bridge@r1"].unit.switch
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_ooc.causal.circuit_result import CausalCircuit, ControlUnit
from sae_ooc.records import OMIT, Record, StageOutput, opt, rest

VARIABLES_FILE = "variables.json"
__all__ = ["VARIABLES_FILE", "ControlUnit", "VariableRow", "VariablesResult"]


@dataclass(kw_only=True)
class RowDas(Record):
    """DAS at the row: the fit-valid switch rates its rank is chosen on."""

    valid_switch: dict[str, float | None]  # rank -> switch rate on fit-valid pairs
    valid_resid_patch: float | None  # the residual patch's switch rate on fit-valid pairs
    n_train_pairs: int  # fit pairs DAS is trained on
    n_valid_pairs: int  # fit-valid pairs
    min_rank_80: int | None = OMIT  # the bridge at r1: the smallest rank reaching 80% of the patch on fit-valid pairs
    chosen_on: str  # what the rank was chosen on
    skipped: str = OMIT  # why no DAS was trained here (the patch switches too few fit-valid pairs)


@dataclass(kw_only=True)
class Erased(Record):
    """Held-out accuracy and a refitted held-out probe of b with one unit erased."""

    acc: float | None  # held-out questions answered right
    probe: float | None  # a probe of b fitted on the erased fit prefixes, scored on the erased held-out ones
    acc_range: list[float] | None = OMIT  # random subspaces: accuracy's range over draws


@dataclass(kw_only=True)
class Erasure(Record):
    """Necessity of the bridge at r1 (empty for the other variables)."""

    rank: int = OMIT  # the erased units' rank
    n_questions: int = OMIT  # held-out questions
    measured_on: str = OMIT
    erased: dict[str, Erased] = rest()  # none, leace_rank<k>, leace_full, mean_proj_supervised_rank<k>, mean_proj_das_rank<k>, random_rank<k>

    def get(self, name: str) -> Erased | None:
        return self.erased.get(name)


@dataclass(kw_only=True)
class ClassMeans(Record):
    """The fit class means of the variable at the row."""

    variance_share: list[float]  # variance share of their principal directions (first 32)
    n_classes: int  # values with a fit class mean
    skipped: str = OMIT  # why no class-mean unit was scored


@dataclass(kw_only=True)
class Isolation(Record):
    """RAVEL's isolation: the share of held-out pairs whose r2 a probe still reads at the answer position (empty when no
    probe could be fitted)."""

    read_at: str = OMIT  # the hook the probe reads (answer position)
    clean: float | None = OMIT  # on the clean held-out questions
    units: dict[str, float | None] = rest()  # after each unit's interchange


@dataclass(kw_only=True)
class RowPairs(Record):
    """How a variable other than the bridge at r1 drew its donors (sae_ooc.causal.planted); empty for the bridge."""

    donor: str = OMIT  # what the donor differs in and shares
    counterfactual: str = OMIT  # the answer the interchange should give
    n_fit: int = OMIT
    n_valid: int = OMIT
    name: str = OMIT  # the variable's name in causal.variables
    role: str = OMIT  # the role whose position holds it
    pos: int = OMIT  # that position's index


@dataclass(kw_only=True)
class VariableRow(Record):
    """One (variable, position, hook)."""

    variable: str
    position: str
    hook: str
    n_heldout: int  # interchange pairs scored (held-out prefixes)
    n_heads: int  # distinct head entities among them (what intervals resample)
    units: dict[str, ControlUnit] = field(default_factory=dict)  # unit name -> its control on the held-out pairs
    curves: dict[str, list[str]] = field(default_factory=dict)  # kind -> unit names by increasing size
    das: RowDas = OMIT
    erase: Erasure = field(default_factory=Erasure)
    class_means: ClassMeans = OMIT  # variance shares of the class means' principal directions
    isolation: Isolation = field(default_factory=Isolation)
    pairs: RowPairs = OMIT  # a variable other than the bridge at r1: how its donors were drawn (`{}` for the bridge; absent in format 2)

    def switch(self, unit: str) -> float | None:
        u = self.units.get(unit)
        return None if u is None else opt(u.switch)


@dataclass(kw_only=True)
class NPerGroup(Record):
    """A count per prefix group."""

    fit: int
    valid: int
    heldout: int


@dataclass(kw_only=True)
class VariableSettings(Record):
    """One planted variable's pairs."""

    position: str
    n_pairs: NPerGroup
    class_means: bool  # whether its held-out values have fit class means


@dataclass(kw_only=True)
class VariablesSettings(Record):
    """What stage `variables` measured on (the causal config section and the pairs drawn)."""

    hooks: list[str]  # the bridge at r1's hooks
    position: str
    heldout_splits: list[str]
    fit_splits: list[str]
    only_correct: bool
    n_prefixes: NPerGroup
    n_pairs: NPerGroup
    n_heldout_questions: int
    n_heldout_correct: int
    variables: dict[str, VariableSettings] = OMIT  # format 3: every other planted variable
    variable_hooks: list[str] = OMIT
    variable_ranks: list[int] = OMIT
    variable_patch_min: float = OMIT
    feature_counts: list[int]
    ranks: list[int]
    erase_rank: int
    random_draws: int
    bootstrap: int
    das_steps: int
    seed: int
    heldout_prefixes: str  # what the held-out prefixes are
    note: str = OMIT  # why nothing was measured (a question with no bridge: the reversal family's); then rows is empty


@dataclass(kw_only=True)
class VariablesResult(StageOutput):
    """Where each planted variable lives: every candidate unit judged by interchange on held-out prefixes (stage
    `variables`); format 1 has no circuit (section 2), format 2 the bridge at r1 alone."""

    FILE = VARIABLES_FILE
    STAGE = "variables"
    FORMAT_NAME = "sae_ooc.variables"
    FORMAT_VERSION = 3
    FORMAT_FIELD = True
    READS = (1, 2)

    settings: VariablesSettings
    rows: list[VariableRow]
    # the held-out interchange pairs every unit was scored on: [h, r1, r2, b, b', h', r1'] (planted ids), donor (h', r1')
    heldout_pairs: list[list[int]] = field(default_factory=list)
    circuit: CausalCircuit = OMIT  # section 2, the circuit of causal variables: IIA per node, faithfulness with no remainder
    format: str = "sae_ooc.variables/3"  # the file's format version

    def row(self, variable: str, position: str, hook: str) -> VariableRow | None:
        return next((r for r in self.rows if (r.variable, r.position, r.hook) == (variable, position, hook)), None)
