"""Is the mechanism the same across runs? Per run: the hook and position where the bridge is read best by held-out
probes (carried), the layer and position whose residual patch moves the answer most (used; the head entity's
positions are left out, as the dynamics' patching peak does: patching the head restores the whole prompt), and the
variable circuit's shape (its nodes as variable@role@hook and its edges). Torch-free."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sae_ooc.circuits.graph import CircuitGraph
from sae_ooc.compare import curves
from sae_ooc.errors import UserError
from sae_ooc.records import opt


def bridge_carried(run: Path) -> dict | None:
    """The (hook, position) of the highest held-out bridge probe accuracy (earliest on ties)."""
    p = curves.probes(run)
    if p is None:
        return None
    best = None
    for i, hook in enumerate(p["hooks"]):
        for j, pos in enumerate(p["positions"]):
            a = p["acc"][i][j]
            if a is not None and (best is None or a > best["acc"]):
                best = {"hook": hook, "position": pos, "acc": a}
    return best


def bridge_used(run: Path) -> dict | None:
    """The (layer, position) of the largest normalised resid_pre patching effect, head positions left out."""
    p = curves.patching(run)
    if p is None:
        return None
    m = np.array(p["matrix"], dtype=float)
    roles = p["roles"] or [str(j) for j in range(m.shape[1])]
    keep = [j for j, r in enumerate(roles) if r != "head"]
    if not keep or not np.isfinite(m[:, keep]).any():
        return None
    sub = np.where(np.isfinite(m[:, keep]), m[:, keep], -np.inf)
    i, k = np.unravel_index(int(np.argmax(sub)), sub.shape)
    return {"layer": int(i), "position": roles[keep[k]], "effect": float(m[i, keep[k]])}


def circuit_shape(run: Path) -> dict | None:
    """The variable circuit's nodes and edges (ids variable@role@hook), from variable_circuit/variable_circuit.json."""
    path = Path(run) / "variable_circuit" / "variable_circuit.json"
    try:
        g = CircuitGraph.load(path) if path.exists() else None
    except UserError:  # unreadable: that run is left out
        return None
    if g is None:
        return None
    nodes = sorted(n.id for n in g.nodes)
    edges = sorted(f"{e.source} -> {e.target}" for e in g.edges)
    return {"nodes": nodes, "edges": edges, "faithfulness": opt(g.scores.faithfulness)}


def _jaccard(a: list, b: list) -> float | None:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else None


def same_mechanism(runs: list[Path]) -> dict:
    """Per run the three readings, and per reading whether every run agrees (None: some run lacks it)."""
    carried = [bridge_carried(r) for r in runs]
    used = [bridge_used(r) for r in runs]
    shapes = [circuit_shape(r) for r in runs]

    def agree(items, key):
        if any(x is None for x in items):
            return None
        return len({key(x) for x in items}) == 1

    pairs = [(i, j) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    return {
        "bridge_carried": carried, "bridge_carried_same": agree(carried, lambda x: (x["hook"], x["position"])),
        "bridge_used": used, "bridge_used_same": agree(used, lambda x: (x["layer"], x["position"])),
        "variable_circuit": shapes,
        "variable_circuit_same": agree(shapes, lambda x: (tuple(x["nodes"]), tuple(x["edges"]))),
        "variable_circuit_node_jaccard": {f"{i}-{j}": _jaccard(shapes[i]["nodes"], shapes[j]["nodes"])
                                          for i, j in pairs if shapes[i] is not None and shapes[j] is not None},
    }
