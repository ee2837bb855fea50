"""Attribution methods compared by what they are used for: the circuit each one selects.

Each registered method estimates the node effects of the selection pairs; the circuit it selects (the same
`circuit.top_n` / `node_threshold` / `errors` rule) is scored on the held-out pairs, beside the circuit of the
method the attribute stage ran (whose effects on the selection pairs are reused). Agreement with exact patching
node by node (RUN/attribution/validation.json) says how close an estimate is; this says whether the difference
matters for the circuit.
"""

from __future__ import annotations

import time

from sae_ooc.circuits.ablation import Ablation
from sae_ooc.circuits.effects import NodeEffects
from sae_ooc.circuits.faithfulness import Faith, circuit_scores
from sae_ooc.circuits.methods import ATTRIBUTION_METHODS, node_effects
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.selection import select_nodes
from sae_ooc.circuits.spliced import Spliced


def method_circuits(sp: Spliced, ne: NodeEffects, held: Pairs, abl: Ablation, faith: Faith, c, a) -> dict[str, dict]:
    """{method: held-out faithfulness and completeness (with 95% bootstrap intervals) of the circuit it selects on the
    selection pairs (`ne`), its size, the feature nodes it shares with the attribute stage's circuit, and the
    seconds its effects took on the selection pairs (None: reused from the attribute stage)}. `a`: the attribution config."""
    main = set(select_nodes(ne, c.top_n, c.node_threshold, c.errors))
    out = {}
    for m in ATTRIBUTION_METHODS.names():
        seconds = None
        if m == ne.method:
            ne_m = ne
        else:
            t0 = time.perf_counter()
            eff = node_effects(sp, ne.pairs, m, ne.metric, a.batch_size, a.ig_steps, a.exact_batch_size, progress=False, verify_top=a.verify_top)
            seconds = time.perf_counter() - t0
            ne_m = NodeEffects(ne.hooks, ne.d_sae, m, ne.metric, eff, ne.pairs, ne.metric_clean, ne.metric_corrupt, ne.positions)
        nodes = select_nodes(ne_m, c.top_n, c.node_threshold, c.errors)
        feats = [n for n in nodes if not n.is_error]
        out[m] = {**circuit_scores(sp, held, nodes, abl, ne.metric, faith, ci_seed=c.seed), "n_feature_nodes": len(feats),
                  "n_error_nodes": len(nodes) - len(feats), "shared_feature_nodes": sum(n in main for n in feats),
                  "seconds_on_selection_pairs": seconds, "effects_from": "attribute stage" if seconds is None else "computed here"}
    return out
