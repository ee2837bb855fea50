"""Plain data for the side-by-side figures, read from one run's outputs; None where the run lacks the file (a figure
then leaves that run out and says so). Torch-free."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.analyses.result import PatchingResult, ProbesResult
from sae_ooc.causal.result import VariablesResult
from sae_ooc.errors import UserError
from sae_ooc.models.metrics import read_train_log


def _typed(cls, directory: Path):
    """A typed output of another run, None where it is missing or unreadable (that run is left out of the figure)."""
    try:
        return cls.load_if(directory)
    except UserError:
        return None


def accuracy(run: Path) -> dict[str, tuple[list, list]] | None:
    """{split: (steps, accuracy)} from model/metrics.jsonl (the evaluation rows)."""
    try:
        rows = read_train_log(Path(run) / "model")
    except UserError:  # unreadable: that run is left out of the figure
        return None
    out: dict[str, tuple[list, list]] = {}
    for row in rows or []:
        for split, v in row.accuracy.items():
            steps, accs = out.setdefault(split, ([], []))
            steps.append(row.step)
            accs.append(v)
    return out or None


def probes(run: Path, variable: str = "bridge") -> dict | None:
    """{"hooks", "positions", "acc": [hook][position] held-out accuracy (None: not measured), "control": the largest
    control's} of `variable` from analyze/probes.json."""
    p = _typed(ProbesResult, Path(run) / "analyze")
    g = getattr(p, variable, None) if p else None
    if g is None:
        return None
    return {"hooks": p.hooks, "positions": p.positions, "acc": g.heldout_acc, "control": g.control_max_acc}


def patching(run: Path, component: str = "resid_pre") -> dict | None:
    """{"matrix": [layer][position] normalised patching effect, "roles"} from analyze/patching.json."""
    p = _typed(PatchingResult, Path(run) / "analyze")
    if not p or component not in p.kinds:
        return None
    return {"matrix": p.kinds[component].normalised, "roles": p.roles, "metric": p.metric}


def control_curves(run: Path) -> dict | None:
    """{"hook@position": {kind: (sizes, switch rates)}, plus "resid_patch": its switch rate} from variables/variables.json,
    for the bridge's rows measured on held-out prefixes."""
    try:
        v = VariablesResult.load_if(Path(run) / "variables")
    except UserError:
        v = None
    if not v:
        return None
    out = {}
    for row in v.rows:
        if not row.n_heldout or row.variable != "bridge" or row.pairs:  # the bridge at r1 (the other variables: the run's report)
            continue
        units, panel = row.units, {}
        for kind, names in row.curves.items():
            pts = [units[u] for u in names if u in units and units[u].share is not None]
            if pts:
                panel[kind] = ([u.size for u in pts], [u.switch for u in pts])
        panel["resid_patch"] = row.switch("resid_patch")
        out[f"{row.hook}@{row.position}"] = panel
    return out or None
