"""Which nodes make a circuit: selection by node effect, and circuits as keep masks over every node.

Nodes: the top `circuit.top_n` feature nodes by |mean effect| (or all above `circuit.node_threshold`),
plus error nodes (`circuit.errors`: those passing the same |effect| cut, all, or none). A keep mask is the
pair (features {hook: [P, d_sae]}, errors {hook: [P]}), shared by every pair or per pair ([n, ...]).
"""

from __future__ import annotations

import torch

from sae_ooc.circuits.effects import NodeEffects
from sae_ooc.circuits.nodes import Node
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import NodeMask, NodeValues, Spliced


def ranked_features(ne: NodeEffects) -> list[tuple[Node, float]]:
    return [(Node(h, p, i), v) for h, p, i, v in ne.ranked() if i is not None]


def select_nodes(ne: NodeEffects, top_n: int, node_threshold: float = 0.0, errors: str = "threshold") -> list[Node]:
    """Feature nodes by |mean effect| (top N, or above a threshold) plus the error nodes `errors` asks for."""
    feats = ranked_features(ne)
    if node_threshold > 0:
        chosen = [(n, v) for n, v in feats if abs(v) >= node_threshold]
        cut = node_threshold
    else:
        chosen = feats[:top_n]
        cut = abs(chosen[-1][1]) if chosen else float("inf")
    nodes = [n for n, _ in chosen]
    mean = ne.mean
    for h in ne.hooks:
        for p in range(mean[h].shape[0]):
            v = float(mean[h][p, -1])
            if errors == "all" or (errors == "threshold" and v != 0 and abs(v) >= cut):
                nodes.append(Node(h, p, None))
    return nodes


def keep_masks(sp: Spliced, nodes: list[Node], invert: bool = False) -> tuple[dict, dict]:
    """Boolean masks of the nodes to keep: {hook: [P, d_sae]} for features, {hook: [P]} for errors."""
    mask = NodeMask({h: torch.zeros(sp.n_pos, sp.d_sae[h], dtype=torch.bool) for h in sp.hooks},
                    {h: torch.zeros(sp.n_pos, dtype=torch.bool) for h in sp.hooks})
    for n in nodes:
        mask.set(n, True)
    ka, ke = mask.acts, mask.errs
    if invert:
        ka, ke = {h: ~m for h, m in ka.items()}, {h: ~m for h, m in ke.items()}
    dev = sp.device
    return {h: m.to(dev) for h, m in ka.items()}, {h: m.to(dev) for h, m in ke.items()}


def prompt_keep_masks(sp: Spliced, ne: NodeEffects, n: int, errors: str) -> tuple[dict, dict]:
    """Per-pair circuits: each pair keeps its own top-n feature nodes by |per-prompt effect| (and error
    nodes by the same rule as select_nodes, with that pair's n-th |effect| as the cut)."""
    feats = torch.cat([ne.per_prompt[h][..., :-1].flatten(1) for h in sp.hooks], 1).abs()
    ka_flat = torch.zeros_like(feats, dtype=torch.bool)
    cut = torch.full((feats.shape[0],), float("inf"))
    if n > 0:
        v, i = feats.topk(min(n, feats.shape[1]), dim=1)
        keep = v > 0
        ka_flat.scatter_(1, i, keep)
        cut = torch.where(keep.any(1), v.masked_fill(~keep, float("inf")).min(1).values, cut)
    sizes = [sp.n_pos * sp.d_sae[h] for h in sp.hooks]
    ka, ke = {}, {}
    for h, part in zip(sp.hooks, ka_flat.split(sizes, 1)):
        ka[h] = part.view(-1, sp.n_pos, sp.d_sae[h]).to(sp.device)
        err = ne.per_prompt[h][..., -1].abs()
        keep_err = torch.ones_like(err, dtype=torch.bool) if errors == "all" else (err >= cut[:, None]) & (err > 0) if errors == "threshold" else torch.zeros_like(err, dtype=torch.bool)
        ke[h] = keep_err.to(sp.device)
    return ka, ke


@torch.no_grad()
def active_node_masks(sp: Spliced, pairs: Pairs, batch: int = 2048) -> tuple[dict, dict]:
    """Per-pair keep masks of every node active on the clean prompt: features with a nonzero activation
    and every error node. Kept whole, this circuit is the model; an ablation under which it falls far
    below faithfulness 1 injects signal through the features the prompt does not use (mean ablation of
    value-specific features does), so circuits measured under it say little."""
    clean = NodeValues.cat([sp.cache(b.clean)[1] for b in pairs.batches(batch)])
    ka = {h: clean.acts[h] != 0 for h in sp.hooks}
    ke = {h: torch.ones(len(pairs), sp.n_pos, dtype=torch.bool, device=sp.device) for h in sp.hooks}
    return ka, ke
