"""Section 2 of stage `variables` for a three-hop question (the threehop family): the circuit of causal variables of the
chain (h, r1, r2, r3) -> t3 through two bridges.

High-level model: head, r1 -> bridge@r1 (b1 = t(h, r1)); bridge, r2 -> bridge2@r2 (b2 = t(b1, r2), at r2's position);
bridge2@answer (b2 at the answer position), r3 -> answer = t(b2, r3). Its nodes are units of the model:
- bridge@r1: section 1's DAS subspace of the bridge at r1, chosen as for two hops (sae_ooc.causal.circuit), its IIA
  measured here on section 1's held-out pairs (donor (h', r1', r2, r3) with bridge b'; counterfactual t(t(b', r2), r3));
- bridge2@r2 and bridge2@answer: section 1's rows of those variables (donor with another second bridge, sharing r3), each
  its smallest DAS unit (sae_ooc.causal.circuit.section1_node: hook by the fit-valid residual patch, rank by the
  fit-valid switch), scored on that row's held-out pairs;
- the inputs head, r1, r2, r3: each its token (the whole stream at the first hook), beside its smallest DAS unit.
No new DAS is trained here (section 1's units are the nodes), and the circuit's faithfulness with no remainder (an
ablation built on the two-hop model's two bridge nodes, sae_ooc.causal.circuit.no_remainder) is not measured.
"""

from __future__ import annotations

import torch

from sae_ooc.causal.circuit import PairStates, bridge_r1_unit, input_nodes, node_iia, section1_node
from sae_ooc.causal.pairs import HELD

HIGH_LEVEL_MODEL = ("head, r1 -> bridge@r1 -> bridge2@r2 (with r2) -> bridge2@answer; bridge2@answer, r3 -> answer = "
                    "t(t(bridge, r2), r3)")
BRIDGES = ("bridge@r1", "bridge2@r2", "bridge2@answer")  # the bridge nodes, in the high-level model's order


def chain_circuit(ctx, rows, v_rows) -> tuple[dict, dict[str, torch.Tensor]]:
    """The record of section 2 for three hops (see the module docstring) and the units' bases it fitted ({bridge@r1: W})."""
    unit = bridge_r1_unit(ctx, rows)
    if unit is None or len(ctx.pairs[HELD]) == 0:
        return {"status": "no bridge@r1 unit (no hook with a DAS subspace and fit-valid pairs)"}, {}
    H1, W1 = unit
    seed = ctx.cfg.seed + 7
    g = torch.Generator().manual_seed(seed)
    H = PairStates(ctx, ctx.pairs[HELD], [H1])
    nodes = {"bridge@r1": node_iia(ctx, H.scored(H1, ctx.pos), H1, ctx.pos, W1, g, seed)}
    nodes["bridge@r1"]["chosen_on"] = "section 1's DAS: hook by its fit-valid residual patch at r1, rank by fit-valid switch"
    for name in BRIDGES[1:]:
        node = section1_node([r for r in v_rows if r.pairs.get("name") == name and r.n_heldout > 0])
        if node:
            nodes[name] = node
    inputs = input_nodes(v_rows, int(ctx.model.cfg.d_model), ("head", "r1", "r2", "r3"))
    bridge_iia = [nodes[k]["unit"].get("switch") for k in BRIDGES if k in nodes]
    iia = min(bridge_iia) if len(bridge_iia) == len(BRIDGES) and None not in bridge_iia else None
    every = bridge_iia + [nd["unit"].get("switch") for nd in inputs.values()]
    out = {"status": "ok", "high_level_model": HIGH_LEVEL_MODEL, "answer_position": int(ctx.q_pos[0]), "r1_position": ctx.pos,
           "n_heldout": len(H.P), "n_heads": int(H.P.head.unique().numel()),
           "chosen_on": "fit-valid pairs (hooks and ranks); DAS trained on fit pairs (section 1); every score on held-out pairs",
           "nodes": nodes, "inputs": inputs, "iia": iia,
           "iia_every_node": min(every) if iia is not None and len(inputs) == 4 and None not in every else None,
           "faithfulness": {"status": "not measured for three hops (the no-remainder ablation is built on the two-hop "
                                      "model's bridge@r1 and bridge@answer nodes)"}}
    return out, {"bridge@r1": W1}
