"""Plain data for the side-by-side figures, read from one run's outputs; None where the run lacks the file (a figure
then leaves that run out and says so). Torch-free."""

from __future__ import annotations

import json
from pathlib import Path


def _json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def accuracy(run: Path) -> dict[str, tuple[list, list]] | None:
    """{split: (steps, accuracy)} from model/metrics.jsonl (the evaluation rows)."""
    try:
        lines = [json.loads(x) for x in (Path(run) / "model" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return None
    out: dict[str, tuple[list, list]] = {}
    for row in lines:
        for key, v in row.items():
            if key.endswith("_acc") and isinstance(v, (int, float)) and "step" in row:
                steps, accs = out.setdefault(key[:-4], ([], []))
                steps.append(row["step"])
                accs.append(v)
    return out or None


def probes(run: Path, variable: str = "bridge") -> dict | None:
    """{"hooks", "positions", "acc": [hook][position] held-out accuracy (None: not measured), "control": the largest
    control's} of `variable` from analyze/probes.json."""
    p = _json(Path(run) / "analyze" / "probes.json")
    if not p or variable not in p:
        return None
    return {"hooks": p["hooks"], "positions": p["positions"], "acc": p[variable]["heldout_acc"],
            "control": p[variable].get("control_max_acc")}


def patching(run: Path, component: str = "resid_pre") -> dict | None:
    """{"matrix": [layer][position] normalised patching effect, "roles"} from analyze/patching.json."""
    p = _json(Path(run) / "analyze" / "patching.json")
    if not p or component not in p:
        return None
    return {"matrix": p[component]["normalised"], "roles": p.get("roles"), "metric": p.get("metric")}


def control_curves(run: Path) -> dict | None:
    """{"hook@position": {kind: (sizes, switch rates)}, plus "resid_patch": its switch rate} from variables/variables.json,
    for the bridge's rows measured on held-out prefixes."""
    v = _json(Path(run) / "variables" / "variables.json")
    if not v:
        return None
    out = {}
    for row in v.get("rows", []):
        if not row.get("n_heldout") or row.get("variable", "bridge") != "bridge":  # the bridge at r1 (the other variables: the run's report)
            continue
        units, panel = row.get("units", {}), {}
        for kind, names in row.get("curves", {}).items():
            pts = [units[u] for u in names if units.get(u, {}).get("switch") is not None]
            if pts:
                panel[kind] = ([u["size"] for u in pts], [u["switch"] for u in pts])
        panel["resid_patch"] = units.get("resid_patch", {}).get("switch")
        out[f"{row['hook']}@{row['position']}"] = panel
    return out or None
