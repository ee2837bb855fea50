"""The circuit of causal variables (sae_ooc.causal.circuit's record) as plain circuit-graph data, so that the export stage's
own drawing code (sae_ooc.viz.circuit_files.export_circuit) writes it in every format it writes: PNG and SVG (the layered
diagram), DOT, the self-contained HTML page, circuit-tracer's graph.json and the full JSON.

Nodes are the high-level model's variables as units of the model, each at its hook and position: the inputs head, r1 and
r2 (each its token, with the smallest unit of section 1 that carries it in its text), bridge@r1, bridge@answer and r2 at the answer position
(three hops: the inputs and r3, bridge@r1, bridge2@r2 and bridge2@answer). A node's `effect` is
its held-out IIA (the share of held-out pairs answering the high-level model's counterfactual when the unit is
interchanged from the donor); an edge's weight is its source node's IIA (how much of the answer follows the value it
passes on); the sink is the answer.
"""

from __future__ import annotations

from sae_ooc.hooks import hook_sort_key
from sae_ooc.causal.circuit_result import CausalCircuit
from sae_ooc.circuits.graph import CircuitGraph, GraphEdge, GraphNode
from sae_ooc.circuits.nodes import SINK
from sae_ooc.records import opt

EDGES = (("head", "bridge@r1"), ("r1", "bridge@r1"), ("bridge@r1", "bridge@answer"), ("r2", "r2@answer"),
         ("bridge@answer", SINK), ("r2@answer", SINK),
         # three hops (sae_ooc.causal.chain): the second bridge is computed at r2 and carried to the answer position
         ("bridge@r1", "bridge2@r2"), ("r2", "bridge2@r2"), ("bridge2@r2", "bridge2@answer"), ("bridge2@answer", SINK), ("r3", SINK))


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def causal_graph(circuit: CausalCircuit, positions: list[str], config: str = "") -> CircuitGraph | None:
    """The circuit as a CircuitGraph (None when it was not built)."""
    if not circuit or not circuit.ok:
        return None
    nodes = circuit.every_node()
    hooks = sorted({nd.hook for nd in nodes.values()}, key=hook_sort_key)
    gnodes = []
    for key, nd in nodes.items():
        u, rnd = nd.unit, nd.random
        kind = opt(nd.kind, "DAS subspace")
        desc = (f"{kind} of rank {nd.rank}: IIA {_pct(u.share)} (residual patch {_pct(nd.resid_patch.share)}, "
                f"random subspace {_pct(rnd.share)})")
        if sm := nd.smallest_unit:
            desc += f"; smallest unit: DAS rank {sm.rank} at {sm.hook}, IIA {_pct(sm.unit.share)}"
        gnodes.append(GraphNode(id=key, hook=nd.hook, hook_index=hooks.index(nd.hook), position=int(nd.position),
                                role=positions[int(nd.position)], type="variable", feature=None, effect=float(u.share or 0.0),
                                effect_std=0.0, label=key, description=desc, extra={"name": key, "rank": nd.rank, "iia": u.share,
                                                                                     "ci95": opt(u.ci95)}))
    ids = {n.id for n in gnodes}
    iia = {n.id: n.effect for n in gnodes}
    edges = [GraphEdge(a, b, iia[a]) for a, b in EDGES if a in ids and (b in ids or b == SINK)]
    cut = circuit.faithfulness.circuit if circuit.faithfulness else None
    scores = {"faithfulness": cut.unit.faithfulness if cut else None, "kept": cut.unit.kept if cut else None, "pairs": "heldout",
              "n_pairs": opt(circuit.n_heldout), "random_subspaces_kept": cut.random.kept if cut else None}
    metadata = {"config": f"{config} circuit of causal variables".strip(), "method": "interchange interventions (IIA per node)",
                "metric": "the high-level model's counterfactual answer", "n_pairs": opt(circuit.n_heldout), "hooks": hooks, "positions": list(positions),
                "node_kind": "causal variables (units of the model)", "effects_over": "held-out pairs (IIA)",
                "effect": "IIA: share of held-out pairs answering the high-level model's counterfactual",
                "edge_weights": "the source node's IIA", "values_on": "held-out pairs",
                "high_level_model": opt(circuit.high_level_model),
                "sink": {"id": SINK, "description": "answer = " + opt(circuit.high_level_model, "answer = t(bridge, r2)").rpartition("answer = ")[2]}}
    return CircuitGraph(metadata, scores, gnodes, edges)
