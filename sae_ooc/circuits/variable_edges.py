"""Edges between variable nodes (groups of SAE features, `sae_ooc.circuits.variables`) by exact edge patching.

The weight of U -> D on a pair, as `sae_ooc.circuits.edges.exact_edges` defines it for single nodes: every member
of U is set to its corrupted value (or, for edges by ablation, every member active on the clean prompt to its
ablation value) while every SAE layer strictly between U's hook and D's is frozen at its clean
value (so U reaches D only along its direct path); D's members take the values this produces, and are patched to
them in the clean run; the weight is m(that run) - m(clean run). U -> metric: U patched with every later SAE layer
frozen. Weights are returned per pair, so they can be averaged over the selection and the held-out pairs apart.

Which group pairs are edges at all: U's hook before D's with no residual-stream hook in between (a hooked residual
stream is a cut: freezing it blocks every path, so a longer edge is zero by construction), and U's position at or
before D's (attention is causal). Into the metric: groups at hooks with no residual-stream hook after them, at a
position at or before the answer's (only at the answer position after the last block).
"""

from __future__ import annotations

import torch

from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import NodeMask, NodeValues, Spliced
from sae_ooc.circuits.variables import Group, group_masks, patched_run

SINK_INDEX = -1  # the target of an edge into the metric
CUTS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")


def is_cut(hook: str) -> bool:
    """A hook on the residual stream itself: everything later in the forward pass reads it."""
    return hook.split(".")[-1] in CUTS


def candidate_edges(hooks: list[str], groups: list[Group], answer_pos: int, n_layers: int) -> list[tuple[int, int]]:
    """(source, target) indices into `groups` (target SINK_INDEX: the metric) of every edge with a direct path."""
    order = {h: i for i, h in enumerate(hooks)}
    final = f"blocks.{n_layers - 1}.hook_resid_post"

    def direct(i: int, j: int) -> bool:  # hook i reaches hook j (j = len(hooks): the output) without a cut between
        return i < j and not any(is_cut(h) for h in hooks[i + 1 : j])

    out = []
    for u, gu in enumerate(groups):
        for d, gd in enumerate(groups):
            if direct(order[gu.hook], order[gd.hook]) and gu.pos <= gd.pos:
                out.append((u, d))
        if direct(order[gu.hook], len(hooks)) and (gu.pos == answer_pos if gu.hook == final else gu.pos <= answer_pos):
            out.append((u, SINK_INDEX))
    return out


@torch.no_grad()
def group_edges(sp: Spliced, pairs: Pairs, groups: list[Group], edges: list[tuple[int, int]], metric: str, source: NodeValues | None = None,
                restrict: tuple[dict, dict] | None = None, max_rows: int = 2048) -> torch.Tensor:
    """[n_pairs, n_edges]: each edge's weight on each pair (see the module docstring). The source group's members take
    `source` (per pair [n, P, ...] or shared [P, ...]; default: their values on the corrupted prompt), only where
    `restrict` (per-pair node masks, e.g. the nodes active on the clean prompt) allows."""
    logits, clean = sp.cache(pairs.clean)
    if source is None:
        _, source = sp.cache(pairs.corrupt)
    m_clean = pairs.metric(logits, metric).cpu()
    masks = group_masks(sp, groups)
    order = {h: i for i, h in enumerate(sp.hooks)}
    out = torch.zeros(len(pairs), len(edges))
    blocks: dict[tuple[str, str | None], list[int]] = {}
    for k, (u, d) in enumerate(edges):
        blocks.setdefault((groups[u].hook, None if d == SINK_INDEX else groups[d].hook), []).append(k)
    n = len(pairs)
    for (hu, hd), ks in blocks.items():
        frozen = sp.hooks[order[hu] + 1 : len(sp.hooks) if hd is None else order[hd]]
        job_k = torch.tensor(ks).repeat_interleave(n)
        job_b = torch.arange(n).repeat(len(ks))
        for s in range(0, len(job_k), max_rows):
            k, b = job_k[s : s + max_rows], job_b[s : s + max_rows]
            u = torch.tensor([edges[i][0] for i in k.tolist()], device=sp.device)
            bd = b.to(sp.device)
            sub = pairs.subset(b)
            # step 1: U's members set to the source values, the SAE layers between frozen at their clean values; D's hook recorded
            src = masks.rows(u)
            if restrict is not None:
                src = NodeMask({hu: src.acts[hu] & restrict[0][hu][bd]}, {hu: src.errs[hu] & restrict[1][hu][bd]})
            vals = source.rows(bd)
            mask = NodeMask({hu: src.acts[hu], **{h: torch.ones_like(clean.acts[h][bd], dtype=torch.bool) for h in frozen}},
                            {hu: src.errs[hu], **{h: torch.ones(len(b), clean.errs[h].shape[1], dtype=torch.bool, device=sp.device) for h in frozen}})
            values = NodeValues({hu: vals.acts[hu], **{h: clean.acts[h][bd] for h in frozen}},
                                {hu: vals.errs[hu], **{h: clean.errs[h][bd] for h in frozen}})
            record = NodeValues({hd: None}, {hd: None}) if hd is not None else None
            m = sub.metric(patched_run(sp, sub.clean, mask, values, record), metric).cpu()
            if hd is not None:  # step 2: D's members set to what they became, in the clean run
                d = torch.tensor([edges[i][1] for i in k.tolist()], device=sp.device)
                dst = masks.rows(d)
                m = sub.metric(patched_run(sp, sub.clean, NodeMask({hd: dst.acts[hd]}, {hd: dst.errs[hd]}), record), metric).cpu()
            out[b, k] = m - m_clean[b]
    return out
