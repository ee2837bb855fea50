"""Edges between circuit nodes (Marks et al. 2024, "Sparse Feature Circuits"), and edge ablation.

The gradient weight of u -> d is
    (dm/dd) . (dd/du)_direct . (u_corrupted - u_clean),  averaged over the prompt pairs,
where dm/dd is d's total gradient and (dd/du)_direct is the Jacobian along paths that avoid every other
SAE layer (all nodes are leaves and no gradient passes through a spliced layer). Edges into the metric
are u's direct effect on it. Exact edge patching: u patched to its corrupted value along its direct
path only (every other SAE layer frozen at its clean value), the resulting d then patched into the
clean run. With `circuit.edge_weights: exact` (default) the gradient method proposes the edges and
exact patching weighs each of them; with `gradient` the gradient weights stand and a sample is checked.

Edges are evaluated by ablating them: an ablated edge u -> d feeds d the ablated value of u along
u's direct path; the top edges by |weight| must hurt the metric more than random edges of the same count.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_ooc.circuits.ablation import Ablation
from sae_ooc.circuits.nodes import SINK, Node, node_or_sink
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import NodeValues, RowPatches, Spliced
from sae_ooc.stats import pearson, spearman


def edge_weights(sp: Spliced, pairs: Pairs, nodes: list[Node], metric: str, batch: int = 256) -> dict[tuple[str, str], float]:
    """{(source id, target id): weight} for every circuit node pair with a direct path, and every node -> metric."""
    hooks_with = [h for h in sp.hooks if any(n.hook == h for n in nodes)]
    order = {h: i for i, h in enumerate(sp.hooks)}
    acc: dict[tuple[str, str], float] = {}
    for b in pairs.batches(batch):
        logits, leaves, _ = sp.run_leaves(b.clean)
        b.metric(logits, metric).sum().backward()
        grad = leaves.grads()
        _, corr = sp.cache(b.corrupt)
        delta = corr.minus(leaves)
        logits, leaves, lives = sp.run_leaves(b.clean, straight_through=False, live=True)
        inputs = [t for h in hooks_with for t in (leaves.acts[h], leaves.errs[h])]
        targets = [(d, _dot(grad, lives, d)) for d in nodes] + [(SINK, b.metric(logits, metric).sum())]
        for d, s in targets:
            if not s.requires_grad:
                continue
            gs = torch.autograd.grad(s, inputs, retain_graph=True, allow_unused=True)
            g = NodeValues({h: gs[2 * k] for k, h in enumerate(hooks_with)}, {h: gs[2 * k + 1] for k, h in enumerate(hooks_with)})
            for u in nodes:
                if d != SINK and (order[u.hook] >= order[d.hook] or u.pos > d.pos):
                    continue
                if g.tensor(u) is None:
                    continue
                w = float(_dot(g, delta, u))
                key = (u.id, SINK if d == SINK else d.id)
                acc[key] = acc.get(key, 0.0) + w
    n = len(pairs)
    return {k: v / n for k, v in acc.items() if v != 0.0}


def _dot(left: NodeValues, right: NodeValues, n: Node) -> torch.Tensor:
    """Sum over pairs of left[n] . right[n] (a feature's scalar, or an error vector's dot product)."""
    return (left.get(n) * right.get(n)).sum()


def exact_edges(sp: Spliced, pairs: Pairs, edges: list[tuple[str, str]], metric: str, max_rows: int = 8192) -> list[float]:
    """Exact edge patching: u set to its corrupted value with every SAE layer frozen at its clean value
    (so u reaches d only along its direct path), then the d this produces patched into the clean run.
    Mean over `pairs` of m - m(clean); edges run `max_rows` patched rows at a time."""
    step = max(1, max_rows // max(len(pairs), 1))
    return [w for i in range(0, len(edges), step) for w in _exact_edges(sp, pairs, edges[i : i + step], metric)]


@torch.no_grad()
def _exact_edges(sp: Spliced, pairs: Pairs, edges: list[tuple[str, str]], metric: str) -> list[float]:
    if not edges:
        return []
    B, E = len(pairs), len(edges)
    logits, clean = sp.cache(pairs.clean)
    _, corr = sp.cache(pairs.corrupt)
    m_clean = pairs.metric(logits, metric).cpu()
    rep = pairs.subset(torch.arange(B).repeat(E))
    us = [node_or_sink(u) for u, _ in edges]
    ds = [node_or_sink(d) for _, d in edges]
    frozen = NodeValues({h: a.repeat(E, 1, 1) for h, a in clean.acts.items()}, {h: e.repeat(E, 1, 1) for h, e in clean.errs.items()})
    for k, u in enumerate(us):
        frozen.set(u, corr.get(u), rows=slice(k * B, (k + 1) * B))
    record = NodeValues()
    logits1 = sp.run_replaced(rep.clean, frozen.acts, frozen.errs, record=record)
    m1 = rep.metric(logits1, metric).cpu()
    patches = RowPatches()
    rows_all = torch.arange(B)
    for k, d in enumerate(ds):
        if d == SINK:
            continue
        patches.add_node(d, rows_all + k * B, record.get(d, rows=slice(k * B, (k + 1) * B)).cpu())
    m2 = rep.metric(sp.run_patched(rep.clean, patches), metric).cpu() if (patches.feat or patches.err) else m1
    out = []
    for k, d in enumerate(ds):
        m = (m1 if d == SINK else m2)[k * B : (k + 1) * B]
        out.append(float((m - m_clean).mean()))
    return out


@torch.no_grad()
def ablate_edges(sp: Spliced, pairs: Pairs, edges: list[tuple[str, str]], abl: Ablation, metric: str, batch: int = 512) -> torch.Tensor:
    """Per-pair metric with `edges` ablated: each target node is recomputed with its ablated sources
    set to their ablation value and every other SAE layer frozen, hook by hook in forward order."""
    into: dict[object, list[Node]] = {}
    for u, d in edges:
        into.setdefault(node_or_sink(d), []).append(node_or_sink(u))
    out = []
    for s in range(0, len(pairs), batch):
        b, a = pairs.subset(slice(s, s + batch)), abl.rows(slice(s, s + batch))
        B = len(b)
        state = NodeValues()
        for hj in sp.hooks:
            targets = [d for d in into if d != SINK and d.hook == hj]
            nb = 1 + len(targets)
            rec = NodeValues()
            blocks = [(k + 1, into[d]) for k, d in enumerate(targets)]
            acts_fn, err_fn = _frozen_fns(state, blocks, a, B, nb, record=rec, stop=hj)
            sp.run(b.clean.repeat(nb, 1), acts_fn=acts_fn, err_fn=err_fn)
            state.acts[hj], state.errs[hj] = rec.acts[hj][:B].clone(), rec.errs[hj][:B].clone()
            for k, d in enumerate(targets):
                state.set(d, rec.get(d, rows=slice((k + 1) * B, (k + 2) * B)))
        acts_fn, err_fn = _frozen_fns(state, [(0, into.get(SINK, []))], a, B, 1)
        out.append(b.metric(sp.run(b.clean, acts_fn=acts_fn, err_fn=err_fn), metric).cpu())
    return torch.cat(out)


def _frozen_fns(state: NodeValues, blocks: list[tuple[int, list[Node]]], abl: Ablation, B: int, nb: int, record: NodeValues | None = None, stop: str | None = None):
    """Hook functions that replace every hook in `state` by its state value (repeated for `nb` row
    blocks), with block k's source nodes set to their ablation value; the hook `stop` is recorded."""

    def fn(part: str):  # "acts" (features) or "errs" (error terms)
        def replace(h, t):
            if h == stop and record is not None:
                getattr(record, part)[h] = t
            if h not in getattr(state, part):
                return None
            v = getattr(state, part)[h].repeat(nb, 1, 1)
            view = NodeValues(**{part: {h: v}})
            for k, srcs in blocks:
                for u in srcs:
                    if view.tensor(u) is not None:  # a source at this hook, of this part
                        view.set(u, abl.get(u), rows=slice(k * B, (k + 1) * B))
            return v

        return replace

    return fn("acts"), fn("errs")


def edge_ablation_test(sp: Spliced, pairs: Pairs, edges: dict[tuple[str, str], float], abl: Ablation, metric: str,
                       counts: list[int], n_random: int, seed: int) -> list[dict]:
    """Metric drop from ablating the top-K edges by |weight| vs K random circuit edges: drawn from the other
    edges while at least K remain, else from all edges (then they overlap the top K). K below the number of
    edges only: ablating every edge leaves nothing random to compare with."""
    ranked = sorted(edges, key=lambda e: -abs(edges[e]))
    m_base = ablate_edges(sp, pairs, [], abl, metric)
    rng = np.random.default_rng(seed)
    rows = []
    for K in tqdm([k for k in counts if k < len(ranked)], desc="edge ablation", unit="size", leave=False):
        top, rest = ranked[:K], ranked[K:]
        pool = rest if len(rest) >= K else ranked
        drop_top = float((m_base - ablate_edges(sp, pairs, top, abl, metric)).mean())
        drops = []
        for _ in range(n_random):
            pick = rng.choice(len(pool), size=K, replace=False)
            drops.append(float((m_base - ablate_edges(sp, pairs, [pool[i] for i in pick], abl, metric)).mean()))
        rows.append({
            "k": K, "top_edges_drop": drop_top, "random_edges_drop_mean": float(np.mean(drops)),
            "random_edges_drop_std": float(np.std(drops)), "random_edges_drops": drops,
            "random_pool": "other edges" if pool is rest else "all edges", "top_hurts_more": drop_top > float(np.mean(drops)),
        })
    return rows


def weigh_edges(sp: Spliced, pairs: Pairs, nodes: list[Node], metric: str, c, batch: int) -> tuple[dict, dict, dict]:
    """(edge weights, gradient weights, check of the gradient weights against exact edge patching).

    `c.edge_weights` exact: the gradient method proposes the edges (every node pair with a direct path) and exact
    edge patching weighs every one, so the check covers all edges and pairs; gradient: the gradient weights stand
    and `c.edge_check` of them are checked on 32 pairs."""
    gradient = edge_weights(sp, pairs, nodes, metric, batch)
    rng = np.random.default_rng(c.seed)
    if c.edge_weights == "exact":
        edges = dict(zip(gradient, exact_edges(sp, pairs, list(gradient), metric)))
        check_pairs, checked = pairs, sorted(edges, key=lambda e: -abs(edges[e]))
        approx, exact = [gradient[e] for e in checked], [edges[e] for e in checked]
    else:
        edges = gradient
        ranked = sorted(edges, key=lambda e: -abs(edges[e]))
        check_idx = sorted(rng.choice(len(ranked), size=min(c.edge_check, len(ranked)), replace=False).tolist()) if ranked else []
        check_pairs = pairs.subset(slice(0, 32))
        grad_check = edge_weights(sp, check_pairs, nodes, metric) if len(check_pairs) < len(pairs) else edges
        checked = [ranked[i] for i in check_idx]
        exact = exact_edges(sp, check_pairs, checked, metric)
        approx = [grad_check.get(e, 0.0) for e in checked]
    shown = sorted(rng.choice(len(checked), size=min(c.edge_check, len(checked)), replace=False).tolist()) if checked else []
    check = {
        "n_edges": len(checked), "n_pairs": len(check_pairs), "pearson": pearson(approx, exact), "spearman": spearman(approx, exact),
        "max_abs_diff": float(np.max(np.abs(np.subtract(approx, exact)))) if checked else 0.0,
        "edges": [{"source": checked[i][0], "target": checked[i][1], "gradient": approx[i], "exact": exact[i]} for i in shown],
    }
    return edges, gradient, check
