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
u's direct path, where u is in the ablation's scope on that pair (`sae_ooc.circuits.ablation`; elsewhere u keeps its value). The top edges by |weight| (weighed on the selection pairs) are ablated on the held-out pairs
beside at least 100 random sets of as many edges drawn from the candidate edges outside the top set (every edge
the gradient method proposes among a wider set of nodes, `candidate_edges`), and the top set's percentile among
them is reported.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_ooc.circuits.ablation import Ablation
from sae_ooc.circuits.effects import NodeEffects
from sae_ooc.circuits.nodes import SINK, Node, node_or_sink
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.selection import select_nodes
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


def ablate_edges(sp: Spliced, pairs: Pairs, edges: list[tuple[str, str]], abl: Ablation, metric: str, batch: int = 512) -> torch.Tensor:
    """Per-pair metric with `edges` ablated: each target node is recomputed with its ablated sources
    set to their ablation value and every other SAE layer frozen, hook by hook in forward order."""
    return ablate_edge_sets(sp, pairs, [edges], abl, metric, batch)[0]


@torch.no_grad()
def ablate_edge_sets(sp: Spliced, pairs: Pairs, edge_sets: list[list[tuple[str, str]]], abl: Ablation, metric: str, batch: int = 512,
                     max_rows: int = 4096) -> torch.Tensor:
    """[n_sets, n_pairs]: `ablate_edges` of every set, as many sets per forward pass as fit in `max_rows` rows."""
    intos = []
    for edges in edge_sets:
        into: dict[object, list[Node]] = {}
        for u, d in edges:
            into.setdefault(node_or_sink(d), []).append(node_or_sink(u))
        intos.append(into)
    out = torch.zeros(len(edge_sets), len(pairs))
    for s in range(0, len(pairs), batch):
        b, a = pairs.subset(slice(s, s + batch)), abl.rows(slice(s, s + batch))
        chunk: list[int] = []
        for r in range(len(intos) + 1):
            rows = len(b) * sum(len(intos[i]) + 1 for i in chunk + ([r] if r < len(intos) else []))
            if chunk and (r == len(intos) or rows > max_rows):
                out[chunk, s : s + len(b)] = _ablate_chunk(sp, b, a, [intos[i] for i in chunk], metric)
                chunk = []
            if r < len(intos):
                chunk.append(r)
    return out


def _ablate_chunk(sp: Spliced, b: Pairs, a: Ablation, intos: list[dict], metric: str) -> torch.Tensor:
    """[n_sets, B]: the state of every set is one block of B rows (set-major); at each hook, every set's targets
    there are recomputed in blocks of their own, their sources ablated, and written into their set's state."""
    B, S = len(b), len(intos)
    state = NodeValues()
    for hj in sp.hooks:
        targets = [(r, d) for r, into in enumerate(intos) for d in into if d != SINK and d.hook == hj]
        blocks = [(r, []) for r in range(S)] + [(r, intos[r][d]) for r, d in targets]
        rec = NodeValues()
        acts_fn, err_fn = _frozen_fns(state, blocks, a, B, record=rec, stop=hj)
        sp.run(b.clean.repeat(len(blocks), 1), acts_fn=acts_fn, err_fn=err_fn, stop_after=hj)
        state.acts[hj], state.errs[hj] = rec.acts[hj][: S * B].clone(), rec.errs[hj][: S * B].clone()
        for k, (r, d) in enumerate(targets):
            state.set(d, rec.get(d, rows=slice((S + k) * B, (S + k + 1) * B)), rows=slice(r * B, (r + 1) * B))
    acts_fn, err_fn = _frozen_fns(state, [(r, into.get(SINK, [])) for r, into in enumerate(intos)], a, B)
    rep = b.subset(torch.arange(B).repeat(S))
    return rep.metric(sp.run(rep.clean, acts_fn=acts_fn, err_fn=err_fn), metric).cpu().view(S, B)


def _frozen_fns(state: NodeValues, blocks: list[tuple[int, list[Node]]], abl: Ablation, B: int, record: NodeValues | None = None,
                stop: str | None = None):
    """Hook functions that replace every hook in `state` ([n_sets * B, ...]) by its value, block k of B rows
    taking set blocks[k][0]'s, with the block's source nodes blocks[k][1] set to their ablation value; the hook
    `stop` is recorded."""
    sets = torch.tensor([r for r, _ in blocks], dtype=torch.long)
    rows = (sets[:, None] * B + torch.arange(B)).flatten()

    def fn(part: str):  # "acts" (features) or "errs" (error terms)
        def replace(h, t):
            if h == stop and record is not None:
                getattr(record, part)[h] = t
            if h not in getattr(state, part):
                return None
            v = getattr(state, part)[h]
            v = v[rows.to(v.device)]
            view = NodeValues(**{part: {h: v}})
            for k, (_, srcs) in enumerate(blocks):
                rows_k = slice(k * B, (k + 1) * B)
                for u in srcs:
                    if view.tensor(u) is not None:  # a source at this hook, of this part
                        value = abl.get(u)
                        if abl.scope is not None:  # outside the ablation's scope a source keeps its value
                            inside = abl.scope.get(u)
                            value = torch.where(inside if u.idx is not None else inside[:, None], value, view.get(u, rows=rows_k))
                        view.set(u, value, rows=rows_k)
            return v

        return replace

    return fn("acts"), fn("errs")


EDGE_ROUND = 20  # random edge sets drawn per batched forward pass of the sequential draw
EDGE_LEVEL = 95.0  # the decision the draw serves: is the top set's drop above this percentile of random sets' drops?


def draws_needed(n_max: int, level: float = EDGE_LEVEL, alpha: float = 0.05) -> int:
    """Random draws, all below the top set, after which the draw stops: if a share 1 - level/100 or more of random
    sets reached the top set's drop, so long a run of draws below it would have probability under `alpha`."""
    q = 1 - level / 100
    return min(n_max, int(np.ceil(np.log(alpha) / np.log(1 - q)))) if q > 0 else n_max


def decided(drops: np.ndarray, top: float, n_max: int, level: float = EDGE_LEVEL) -> bool:
    """The sequential rule: stop drawing random edge sets once `drops` (those drawn so far) decide whether the top
    set's percentile among `n_max` draws reaches `level`. Not above: more draws at or above the top set's drop
    (ties half) than the full draw could leave below `level` - the full draw's decision, exactly. Above: no draw at
    or above it in `draws_needed(n_max)` draws (59 for the 95th percentile: 0.95^59 < 0.05)."""
    n = len(drops)
    at_or_above = float((drops > top).sum() + 0.5 * (drops == top).sum())
    return n >= n_max or at_or_above > n_max * (1 - level / 100) or (at_or_above == 0 and n >= draws_needed(n_max, level))


def edge_ablation_test(sp: Spliced, pairs: Pairs, edges: dict[tuple[str, str], float], candidates: list[tuple[str, str]], abl: Ablation,
                       metric: str, counts: list[int], n_random: int, seed: int, label: str = "") -> list[dict]:
    """Metric drop on `pairs` from ablating the top-K edges by |weight| against up to `n_random` sets of K edges
    drawn (without replacement within a set) from the `candidates` outside those top K, in rounds of `EDGE_ROUND`
    sets per forward pass until `decided`; the top set's percentile among the random drops drawn (ties count half).
    K up to the number of edges, where K candidates remain outside."""
    ranked = sorted(edges, key=lambda e: -abs(edges[e]))
    m_base = ablate_edges(sp, pairs, [], abl, metric)
    rng = np.random.default_rng(seed)
    rows = []
    sizes = [k for k in counts if k <= len(ranked)]
    for K in tqdm(sizes, desc=f"edge ablation ({label})" if label else "edge ablation", unit="size", leave=False):
        top = ranked[:K]
        pool = sorted(set(candidates) - set(top))
        if len(pool) < K:
            continue
        # the same draws, in the same order, as drawing all n_random at once: the rule only decides where to stop
        draws = [[pool[i] for i in rng.choice(len(pool), size=K, replace=False)] for _ in range(n_random)]
        m = ablate_edge_sets(sp, pairs, [top] + draws[:EDGE_ROUND], abl, metric)
        drop = m_base - m[0]
        drop_top = float(drop.mean())
        drops = (m_base - m[1:]).mean(1).double().numpy()
        while not decided(drops, drop_top, n_random):
            more = ablate_edge_sets(sp, pairs, draws[len(drops) : len(drops) + EDGE_ROUND], abl, metric)
            drops = np.concatenate([drops, (m_base - more).mean(1).double().numpy()])
        rows.append({
            "k": K, "top_edges_drop": drop_top, "top_edges_drop_std": float(drop.std()) if len(drop) > 1 else 0.0,
            "random_edges_drop_mean": float(drops.mean()), "random_edges_drop_std": float(drops.std()),
            "random_edges_drop_quantiles": {q: float(np.quantile(drops, p)) for q, p in (("5", 0.05), ("50", 0.5), ("95", 0.95))},
            "random_edges_drops": drops.tolist(), "n_random": len(drops), "n_random_max": n_random, "pool_size": len(pool),
            "random_pool": "candidate edges outside the top K", "percentile": percentile(drop_top, drops),
            "stopping": f"sequential: rounds of {EDGE_ROUND} sets until the draws decide whether the top set is above the "
                        f"{EDGE_LEVEL:g}th percentile (sae_ooc.circuits.edges.decided)",
        })
    return rows


def candidate_edges(sp: Spliced, pairs: Pairs, ne: NodeEffects, c, circuit_edges, batch: int = 256) -> list[tuple[str, str]]:
    """Every edge the gradient method proposes on `pairs` among the top `circuit.edge_pool_nodes` feature nodes of
    `ne` (plus error nodes by `circuit.errors`), and the circuit's own edges: where random edges are drawn from."""
    pool = select_nodes(ne, c.edge_pool_nodes, 0.0, c.errors)
    return sorted(set(edge_weights(sp, pairs, pool, ne.metric, batch)) | set(circuit_edges))


def percentile(x: float, draws: np.ndarray) -> float:
    """Share of `draws` below `x` in percent, ties counted half."""
    return float(100.0 * ((draws < x).sum() + 0.5 * (draws == x).sum()) / len(draws)) if len(draws) else float("nan")


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
