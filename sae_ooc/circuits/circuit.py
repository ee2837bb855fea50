"""Stage `circuit`: the important nodes, the edges between them, and how much of the behaviour they carry.

Nodes: the top `circuit.top_n` feature nodes by |mean effect| (or all above `circuit.node_threshold`),
plus error nodes (`circuit.errors`: those passing the same |effect| cut, all, or none).

Edges (Marks et al. 2024, "Sparse Feature Circuits"): the gradient weight of u -> d is
    (dm/dd) . (dd/du)_direct . (u_corrupted - u_clean),  averaged over the prompt pairs,
where dm/dd is d's total gradient and (dd/du)_direct is the Jacobian along paths that avoid every other
SAE layer (all nodes are leaves and no gradient passes through a spliced layer). Edges into the metric
are u's direct effect on it. Exact edge patching: u patched to its corrupted value along its direct
path only (every other SAE layer frozen at its clean value), the resulting d then patched into the
clean run. With `circuit.edge_weights: exact` (default) the gradient method proposes the edges and
exact patching weighs each of them; with `gradient` the gradient weights stand and a sample is checked.

Faithfulness (m(C) - m(∅)) / (m(M) - m(∅)): C is the model with every node outside the circuit ablated
(mean over the task's two-hop prompts by default; zero and resampling are options), ∅ ablates every
node, M is the model. Completeness ablates only the circuit: (m(M \\ C) - m(∅)) / (m(M) - m(∅)), low is good.
Edges are evaluated by ablating them: an ablated edge u -> d feeds d the ablated value of u along
u's direct path; the top edges by |weight| must hurt the metric more than random edges of the same count.

Outputs (RUN/circuit/): circuit.json (nodes with effects and descriptions, edges with weights),
circuit.safetensors (node masks per hook), faithfulness.json, faithfulness_curve.png/.svg.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_ooc.circuits.attribution import (
    EFFECTS_FILE,
    NodeEffects,
    Pairs,
    load_node_effects,
    load_spliced,
)
from sae_ooc.circuits.attribution import STAGE as ATTRIBUTE_STAGE
from sae_ooc.circuits.spliced import NodeValues, RowPatches, Spliced, node_id
from sae_ooc.errors import UserError
from sae_ooc.io import read_json, save_tensors, sha256_file, write_json
from sae_ooc.stats import pearson, spearman
from sae_ooc.tasks.data import POSITION_ROLES, SEQ_LEN, load_task

STAGE = "circuit"
CIRCUIT_FILE = "circuit.json"
FAITHFULNESS_FILE = "faithfulness.json"
PROMPT_CIRCUIT_FILE = "prompt_circuit.json"  # one pair's pruned circuit (the first attribution pair)
SINK = "metric"  # id of the metric node that edges into the output point to
TARGET_FAITHFULNESS = 0.8
TARGET_MAX_FEATURES = 50


@dataclass(frozen=True)
class Node:
    hook: str
    pos: int
    idx: int | None  # None: the SAE error node

    @property
    def id(self) -> str:
        return node_id(self.hook, self.pos, self.idx)

    @property
    def is_error(self) -> bool:
        return self.idx is None


# node selection -------------------------------------------------------------------------------------
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
        for p in range(SEQ_LEN):
            v = float(mean[h][p, -1])
            if errors == "all" or (errors == "threshold" and v != 0 and abs(v) >= cut):
                nodes.append(Node(h, p, None))
    return nodes


def keep_masks(sp: Spliced, nodes: list[Node], invert: bool = False) -> tuple[dict, dict]:
    """Boolean masks of the nodes to keep: {hook: [P, d_sae]} for features, {hook: [P]} for errors."""
    ka = {h: torch.zeros(SEQ_LEN, sp.d_sae[h], dtype=torch.bool) for h in sp.hooks}
    ke = {h: torch.zeros(SEQ_LEN, dtype=torch.bool) for h in sp.hooks}
    for n in nodes:
        if n.is_error:
            ke[n.hook][n.pos] = True
        else:
            ka[n.hook][n.pos, n.idx] = True
    if invert:
        ka, ke = {h: ~m for h, m in ka.items()}, {h: ~m for h, m in ke.items()}
    dev = sp.device
    return {h: m.to(dev) for h, m in ka.items()}, {h: m.to(dev) for h, m in ke.items()}


# ablation --------------------------------------------------------------------------------------------
@dataclass
class Ablation:
    """What an ablated node is set to: {hook: [P, d]} shared by all pairs, or [n_pairs, P, d] per pair."""

    acts: dict[str, torch.Tensor]
    errs: dict[str, torch.Tensor]

    def rows(self, sl: slice) -> "Ablation":
        return Ablation({h: a[sl] if a.dim() == 3 else a for h, a in self.acts.items()},
                        {h: e[sl] if e.dim() == 3 else e for h, e in self.errs.items()})

    def at(self, n: Node) -> torch.Tensor:
        t = self.errs[n.hook] if n.is_error else self.acts[n.hook]
        if n.is_error:
            return t[n.pos] if t.dim() == 2 else t[:, n.pos]
        return t[n.pos, n.idx] if t.dim() == 2 else t[:, n.pos, n.idx]


def task_prompts(ds) -> torch.Tensor:
    """The two-hop prompts of train (of every split if train has none): the task distribution."""
    for splits in (("train",), ("train", "test_id", "test_ood")):
        rows = [ids for s in splits for ids, hop in zip(ds[s]["input_ids"], ds[s]["hop"]) if hop == 2]
        if rows:
            return torch.tensor(rows, dtype=torch.long)
    raise UserError("the task has no two-hop prompts to ablate with; regenerate the data with task.phi > 0")


ABLATION_KINDS = ("mean", "zero", "resample", "corrupt")


@torch.no_grad()
def ablation_values(sp: Spliced, ds, kind: str, n_examples: int, seed: int, pairs: Pairs, batch: int = 2048) -> Ablation:
    """mean: each node's mean over the task's two-hop prompts (per position); zero; resample: its value on
    a random two-hop prompt (one per pair); corrupt: its value on the pair's corrupted prompt, so the
    ablation matches the clean/corrupted contrast the node effects measure."""
    if kind == "zero":
        return Ablation({h: torch.zeros(SEQ_LEN, sp.d_sae[h], device=sp.device) for h in sp.hooks},
                        {h: torch.zeros(SEQ_LEN, sp.d_in[h], device=sp.device) for h in sp.hooks})
    if kind == "corrupt":
        parts = [sp.cache(b.corrupt)[1] for b in pairs.batches(batch)]
        return Ablation({h: torch.cat([v.acts[h] for v in parts]) for h in sp.hooks}, {h: torch.cat([v.errs[h] for v in parts]) for h in sp.hooks})
    prompts = task_prompts(ds)
    g = torch.Generator().manual_seed(seed)
    if kind == "resample":
        idx = torch.randint(len(prompts), (len(pairs),), generator=g)
        parts = [sp.cache(prompts[idx[i : i + batch]])[1] for i in range(0, len(idx), batch)]
        return Ablation({h: torch.cat([v.acts[h] for v in parts]) for h in sp.hooks}, {h: torch.cat([v.errs[h] for v in parts]) for h in sp.hooks})
    if kind != "mean":
        raise UserError(f"unknown ablation '{kind}'; set circuit.ablation to one of {', '.join(ABLATION_KINDS)}")
    if len(prompts) > n_examples:
        prompts = prompts[torch.randperm(len(prompts), generator=g)[:n_examples]]
    sa = {h: torch.zeros(SEQ_LEN, sp.d_sae[h], device=sp.device, dtype=torch.float64) for h in sp.hooks}
    se = {h: torch.zeros(SEQ_LEN, sp.d_in[h], device=sp.device, dtype=torch.float64) for h in sp.hooks}
    for i in range(0, len(prompts), batch):
        _, v = sp.cache(prompts[i : i + batch])
        for h in sp.hooks:
            sa[h] += v.acts[h].double().sum(0)
            se[h] += v.errs[h].double().sum(0)
    n = len(prompts)
    return Ablation({h: (a / n).float() for h, a in sa.items()}, {h: (e / n).float() for h, e in se.items()})


@torch.no_grad()
def ablated_metric(sp: Spliced, pairs: Pairs, keep: tuple[dict, dict] | None, abl: Ablation, metric: str, batch: int = 1024) -> torch.Tensor:
    """Per-pair metric with every node outside `keep` set to its ablation value (keep=None: the model).
    Keep masks are shared ([P, d_sae] and [P]) or per pair ([n, P, d_sae] and [n, P])."""
    out = []
    for s in range(0, len(pairs), batch):
        b = pairs.subset(slice(s, s + batch))
        if keep is None:
            logits = sp.model(b.clean.to(sp.device))
        else:
            a = abl.rows(slice(s, s + batch))
            ka = {h: m[s : s + batch] if m.dim() == 3 else m for h, m in keep[0].items()}
            ke = {h: m[s : s + batch] if m.dim() == 2 else m for h, m in keep[1].items()}
            logits = sp.run_replaced(b.clean, a.acts, a.errs, ka, ke)
        out.append(b.metric(logits, metric).cpu())
    return torch.cat(out)


def faithfulness_of(m_c: torch.Tensor, m_full: torch.Tensor, m_empty: torch.Tensor) -> float:
    den = float(m_full.mean() - m_empty.mean())
    return float("nan") if den == 0 else float(m_c.mean() - m_empty.mean()) / den


@dataclass
class Faith:
    m_full: torch.Tensor
    m_empty: torch.Tensor

    def of(self, m: torch.Tensor) -> float:
        return faithfulness_of(m, self.m_full, self.m_empty)


def circuit_scores(sp: Spliced, pairs: Pairs, nodes: list[Node], abl: Ablation, metric: str, faith: Faith, batch: int = 1024) -> dict:
    m_c = ablated_metric(sp, pairs, keep_masks(sp, nodes), abl, metric, batch)
    m_rest = ablated_metric(sp, pairs, keep_masks(sp, nodes, invert=True), abl, metric, batch)
    return {"m_circuit": float(m_c.mean()), "m_complement": float(m_rest.mean()),
            "faithfulness": faith.of(m_c), "completeness": faith.of(m_rest)}


def faithfulness_curve(sp: Spliced, ne: NodeEffects, pairs: Pairs, abl: Ablation, metric: str, faith: Faith, sizes: list[int],
                       errors: str, batch: int = 1024) -> list[dict]:
    n_feats = len(ranked_features(ne))
    sizes = sorted({min(s, n_feats) for s in sizes})
    curve = []
    for n in tqdm(sizes, desc="faithfulness curve", unit="size", leave=False):
        nodes = select_nodes(ne, n, 0.0, errors)
        feats = [x for x in nodes if not x.is_error]
        row = {"n_features": len(feats), "n_errors": len(nodes) - len(feats)}
        row.update(circuit_scores(sp, pairs, nodes, abl, metric, faith, batch))
        if errors != "none":
            row["faithfulness_features_only"] = faith.of(ablated_metric(sp, pairs, keep_masks(sp, feats), abl, metric, batch))
        curve.append(row)
    return curve


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
    sizes = [SEQ_LEN * sp.d_sae[h] for h in sp.hooks]
    ka, ke = {}, {}
    for h, part in zip(sp.hooks, ka_flat.split(sizes, 1)):
        ka[h] = part.view(-1, SEQ_LEN, sp.d_sae[h]).to(sp.device)
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
    parts = [sp.cache(b.clean)[1] for b in pairs.batches(batch)]
    ka = {h: torch.cat([v.acts[h] for v in parts]) != 0 for h in sp.hooks}
    ke = {h: torch.ones(len(pairs), SEQ_LEN, dtype=torch.bool, device=sp.device) for h in sp.hooks}
    return ka, ke


def ablation_curves(sp: Spliced, ne: NodeEffects, pairs: Pairs, ds, c, metric: str, sizes: list[int]) -> dict[str, dict]:
    """For every ablation kind: m(M), m(∅), and faithfulness against circuit size for the aggregate
    circuit (top-n by |mean effect|) and for per-prompt circuits (each pair its own top-n)."""
    n_feats = len(ranked_features(ne))
    sizes = sorted({min(s, n_feats) for s in sizes})
    active = active_node_masks(sp, pairs)
    out = {}
    for kind in tqdm(ABLATION_KINDS, desc="ablations", unit="kind", leave=False):
        abl = ablation_values(sp, ds, kind, c.mean_examples, c.seed, pairs)
        m_full = ablated_metric(sp, pairs, None, abl, metric)
        faith = Faith(m_full, ablated_metric(sp, pairs, keep_masks(sp, []), abl, metric))
        complete = faith.of(ablated_metric(sp, pairs, active, abl, metric))
        agg, per = [], []
        for n in sizes:
            agg.append(faith.of(ablated_metric(sp, pairs, keep_masks(sp, select_nodes(ne, n, 0.0, c.errors)), abl, metric)))
            per.append(faith.of(ablated_metric(sp, pairs, prompt_keep_masks(sp, ne, n, c.errors), abl, metric)))
        out[kind] = {"m_full": float(m_full.mean()), "m_empty": float(faith.m_empty.mean()), "sizes": sizes,
                     "faithfulness_active_nodes": complete,
                     "faithfulness": agg, "faithfulness_per_prompt_circuits": per,
                     "min_features_reaching_target": next((n for n, f in zip(sizes, agg) if f >= TARGET_FAITHFULNESS), None),
                     "min_features_reaching_target_per_prompt": next((n for n, f in zip(sizes, per) if f >= TARGET_FAITHFULNESS), None)}
    return out


def pruned_circuits(sp: Spliced, pairs: Pairs, ds, c, metric: str) -> dict | None:
    """Backward elimination (sae_ooc.circuits.prune) on the first `circuit.prune_pairs` pairs under `circuit.prune_ablation`."""
    if c.prune_ablation == "none":
        return None
    from sae_ooc.circuits.prune import prune_circuits, summarize

    sub = pairs.subset(slice(0, c.prune_pairs))
    abl = ablation_values(sp, ds, c.prune_ablation, c.mean_examples, c.seed, sub)
    faith = Faith(ablated_metric(sp, sub, None, abl, metric), ablated_metric(sp, sub, keep_masks(sp, []), abl, metric))
    res = prune_circuits(sp, sub, abl, metric, faith, c.prune_step, snapshot_max_features=TARGET_MAX_FEATURES)
    res.update(summarize(res, TARGET_FAITHFULNESS, TARGET_MAX_FEATURES), ablation=c.prune_ablation)
    if res["snapshot"] is not None:
        res["snapshot"]["faith"] = faith
    return res


def prompt_circuit(sp: Spliced, pairs: Pairs, i: int, keep_row: torch.Tensor, m_circuit: float, faith: Faith, ne: NodeEffects,
                   ds, vocab, saes_dir: Path, metric: str, ablation: str, config: str) -> dict:
    """One pair's pruned circuit in circuit.json's format: its nodes (with that pair's patching effects), and
    the edges the gradient method proposes among them, weighed by exact edge patching on that pair."""
    from sae_ooc.circuits.prune import NodeLayout
    from sae_ooc.saes.features import describe_nodes

    layout = NodeLayout(sp)
    nodes = [Node(*layout.node_of(j)) for j in keep_row.nonzero(as_tuple=True)[0].tolist()]
    one = pairs.subset([i])
    gradient = edge_weights(sp, one, nodes, metric)
    edges = dict(zip(gradient, exact_edges(sp, one, list(gradient), metric)))
    _, clean = sp.cache(one.clean)
    records = []
    desc = describe_nodes(sp, ds, vocab, saes_dir, nodes)
    for n in nodes:
        col = sp.d_sae[n.hook] if n.is_error else n.idx
        act = clean.errs[n.hook][0, n.pos].norm() if n.is_error else clean.acts[n.hook][0, n.pos, n.idx]
        r = {**_node_fields(n, sp.hooks, float(ne.per_prompt[n.hook][i, n.pos, col]), 0.0), "activation": float(act)}
        r.update(desc.get(n.id, {}))
        records.append(r)
    ranked = sorted(edges, key=lambda e: -abs(edges[e]))
    f = float((m_circuit - faith.m_empty[i]) / (faith.m_full[i] - faith.m_empty[i])) if faith.m_full[i] != faith.m_empty[i] else float("nan")
    return {
        "metadata": {
            "config": config, "prompt": vocab.decode(pairs.clean[i]), "answer": vocab.name(int(pairs.answer[i])),
            "corrupted_prompt": vocab.decode(pairs.corrupt[i]), "corrupted_answer": vocab.name(int(pairs.answer_corrupt[i])),
            "bridge": vocab.name(int(pairs.bridge[i])), "metric": metric, "n_pairs": 1, "hooks": sp.hooks, "d_sae": sp.d_sae,
            "positions": list(POSITION_ROLES), "ablation": ablation, "edge_weights": "exact", "method": ne.method,
            "example_prompt": vocab.decode(pairs.clean[i]),
            "selection": "backward elimination (sae_ooc.circuits.prune), first round with at most "
                         f"{TARGET_MAX_FEATURES} feature nodes per prompt",
            "sink": {"id": SINK, "description": _metric_text(metric)},
        },
        "scores": {"m_full": float(faith.m_full[i]), "m_empty": float(faith.m_empty[i]), "m_circuit": float(m_circuit), "faithfulness": f},
        "nodes": records,
        "edges": [{"source": u, "target": d, "weight": edges[(u, d)], "gradient": gradient[(u, d)]} for u, d in ranked],
    }


def plot_curve(curve: list[dict], curves: dict[str, dict], main: str, stem: Path, title: str, pruned: dict | None = None) -> None:
    from sae_ooc.viz.plots import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    x = [r["n_features"] for r in curve]
    ax.plot(x, [r["faithfulness"] for r in curve], marker="o", ms=3, label="faithfulness (circuit kept)")
    if "faithfulness_features_only" in curve[0]:
        ax.plot(x, [r["faithfulness_features_only"] for r in curve], marker="s", ms=3, ls="--", label="faithfulness, no error nodes")
    ax.plot(x, [r["completeness"] for r in curve], marker="^", ms=3, ls=":", label="circuit ablated (completeness; low is good)")
    ax.set_title(f"{main} ablation: aggregate circuit", fontsize=9)
    ax = axes[1]
    for k, (kind, cv) in enumerate(curves.items()):
        color = f"C{k}"
        ax.plot(cv["sizes"], cv["faithfulness"], color=color, marker="o", ms=2, label=f"{kind}: aggregate circuit")
        ax.plot(cv["sizes"], cv["faithfulness_per_prompt_circuits"], color=color, ls="--", label=f"{kind}: per-prompt circuits")
    if pruned:
        r = pruned["rounds"]
        ax.plot([x["max_features"] for x in r], [x["faithfulness"] for x in r], color="k", lw=1.5,
                label=f"{pruned['ablation']}: per-prompt circuits by backward elimination ({pruned['n_pairs']} pairs)")
    ax.set_title("faithfulness by ablation; dashed: each pair keeps its own top nodes", fontsize=9)
    for ax in axes:
        ax.axhline(TARGET_FAITHFULNESS, color="grey", lw=0.8, ls="--")
        ax.axvline(TARGET_MAX_FEATURES, color="grey", lw=0.8, ls=":")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.set_xlabel("feature nodes in the circuit (top by |effect|)")
        ax.set_ylabel("(m(C) - m(∅)) / (m(M) - m(∅))")
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, stem)


# edges -----------------------------------------------------------------------------------------------
def edge_weights(sp: Spliced, pairs: Pairs, nodes: list[Node], metric: str, batch: int = 256) -> dict[tuple[str, str], float]:
    """{(source id, target id): weight} for every circuit node pair with a direct path, and every node -> metric."""
    hooks_with = [h for h in sp.hooks if any(n.hook == h for n in nodes)]
    order = {h: i for i, h in enumerate(sp.hooks)}
    acc: dict[tuple[str, str], float] = {}
    for b in pairs.batches(batch):
        logits, leaves, _ = sp.run_leaves(b.clean)
        b.metric(logits, metric).sum().backward()
        grad = NodeValues({h: leaves.acts[h].grad for h in sp.hooks}, {h: leaves.errs[h].grad for h in sp.hooks})
        _, corr = sp.cache(b.corrupt)
        delta = NodeValues({h: corr.acts[h] - leaves.acts[h].detach() for h in sp.hooks}, {h: corr.errs[h] - leaves.errs[h].detach() for h in sp.hooks})
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
                gu = g.errs[u.hook] if u.is_error else g.acts[u.hook]
                if gu is None:
                    continue
                w = float(_dot(g, delta, u))
                key = (u.id, SINK if d == SINK else d.id)
                acc[key] = acc.get(key, 0.0) + w
    n = len(pairs)
    return {k: v / n for k, v in acc.items() if v != 0.0}


def _dot(left: NodeValues, right: NodeValues, n: Node) -> torch.Tensor:
    """Sum over pairs of left[n] . right[n] (a feature's scalar, or an error vector's dot product)."""
    if n.is_error:
        return (left.errs[n.hook][:, n.pos] * right.errs[n.hook][:, n.pos]).sum()
    return (left.acts[n.hook][:, n.pos, n.idx] * right.acts[n.hook][:, n.pos, n.idx]).sum()


def _node(nid: str) -> Node | str:
    if nid == SINK:
        return SINK
    from sae_ooc.circuits.spliced import parse_node_id

    return Node(*parse_node_id(nid))


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
    us = [_node(u) for u, _ in edges]
    ds = [_node(d) for _, d in edges]
    frozen = NodeValues({h: a.repeat(E, 1, 1) for h, a in clean.acts.items()}, {h: e.repeat(E, 1, 1) for h, e in clean.errs.items()})
    for k, u in enumerate(us):
        rows = slice(k * B, (k + 1) * B)
        if u.is_error:
            frozen.errs[u.hook][rows, u.pos] = corr.errs[u.hook][:, u.pos]
        else:
            frozen.acts[u.hook][rows, u.pos, u.idx] = corr.acts[u.hook][:, u.pos, u.idx]
    record = NodeValues()
    logits1 = sp.run_replaced(rep.clean, frozen.acts, frozen.errs, record=record)
    m1 = rep.metric(logits1, metric).cpu()
    patches = RowPatches()
    rows_all = torch.arange(B)
    for k, d in enumerate(ds):
        if d == SINK:
            continue
        rows = slice(k * B, (k + 1) * B)
        if d.is_error:
            patches.add_errs(d.hook, rows_all + k * B, torch.full((B,), d.pos), record.errs[d.hook][rows, d.pos].cpu())
        else:
            patches.add_feats(d.hook, rows_all + k * B, torch.full((B,), d.pos), torch.full((B,), d.idx), record.acts[d.hook][rows, d.pos, d.idx].cpu())
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
        into.setdefault(_node(d), []).append(_node(u))
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
                rows = slice((k + 1) * B, (k + 2) * B)
                if d.is_error:
                    state.errs[hj][:, d.pos] = rec.errs[hj][rows, d.pos]
                else:
                    state.acts[hj][:, d.pos, d.idx] = rec.acts[hj][rows, d.pos, d.idx]
        acts_fn, err_fn = _frozen_fns(state, [(0, into.get(SINK, []))], a, B, 1)
        out.append(b.metric(sp.run(b.clean, acts_fn=acts_fn, err_fn=err_fn), metric).cpu())
    return torch.cat(out)


def _frozen_fns(state: NodeValues, blocks: list[tuple[int, list[Node]]], abl: Ablation, B: int, nb: int, record: NodeValues | None = None, stop: str | None = None):
    """Hook functions that replace every hook in `state` by its state value (repeated for `nb` row
    blocks), with block k's source nodes set to their ablation value; the hook `stop` is recorded."""

    def acts_fn(h, f):
        if h == stop and record is not None:
            record.acts[h] = f
        if h not in state.acts:
            return None
        v = state.acts[h].repeat(nb, 1, 1)
        for k, srcs in blocks:
            for u in srcs:
                if u.hook == h and not u.is_error:
                    v[k * B : (k + 1) * B, u.pos, u.idx] = abl.at(u)
        return v

    def err_fn(h, e):
        if h == stop and record is not None:
            record.errs[h] = e
        if h not in state.errs:
            return None
        v = state.errs[h].repeat(nb, 1, 1)
        for k, srcs in blocks:
            for u in srcs:
                if u.hook == h and u.is_error:
                    v[k * B : (k + 1) * B, u.pos] = abl.at(u)
        return v

    return acts_fn, err_fn


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


# the stage -------------------------------------------------------------------------------------------
def labels_fingerprint(saes_root: Path) -> dict[str, str]:
    root = Path(saes_root)
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.glob("*/metrics.json"))} if root.is_dir() else {}


def _node_fields(n: Node, hooks: list[str], effect: float, effect_std: float) -> dict:
    return {"id": n.id, "hook": n.hook, "hook_index": hooks.index(n.hook), "position": n.pos, "role": POSITION_ROLES[n.pos],
            "type": "error" if n.is_error else "feature", "feature": n.idx, "effect": effect, "effect_std": effect_std}


def _node_record(n: Node, ne_mean: dict, per_prompt: dict, d_sae: dict, hooks: list[str], rank: dict) -> dict:
    col = d_sae[n.hook] if n.is_error else n.idx
    pp = per_prompt[n.hook][:, n.pos, col]
    return {**_node_fields(n, hooks, float(ne_mean[n.hook][n.pos, col]), float(pp.std()) if len(pp) > 1 else 0.0), "rank": rank.get(n.id)}


def run_circuit(run, force: bool = False, device: str | None = None) -> bool:
    """Stage `circuit`. Returns False when skipped (inputs unchanged)."""
    c = run.cfg.circuit
    fp = run.stage_fingerprint(("circuit",), (ATTRIBUTE_STAGE,), extra={"labels": labels_fingerprint(run.saes_dir)})
    out = run.circuit_dir
    if not force and run.is_done(STAGE, fp) and (out / CIRCUIT_FILE).exists():
        return False
    t0 = time.perf_counter()
    ne = load_node_effects(run.attribution_dir / EFFECTS_FILE)
    sp = load_spliced(run, device)
    if sp.hooks != ne.hooks:
        raise UserError(f"the SAEs in {run.saes_dir} ({', '.join(sp.hooks)}) differ from those the node effects were computed with; rerun `sae-ooc attribute --run {run.root}`")
    ds, vocab = load_task(run.data_dir)
    metric = ne.metric
    pairs = ne.pairs
    abl = ablation_values(sp, ds, c.ablation, c.mean_examples, c.seed, pairs)
    m_full = ablated_metric(sp, pairs, None, abl, metric)
    m_empty = ablated_metric(sp, pairs, keep_masks(sp, []), abl, metric)
    faith = Faith(m_full, m_empty)
    nodes = select_nodes(ne, c.top_n, c.node_threshold, c.errors)
    scores = circuit_scores(sp, pairs, nodes, abl, metric, faith)
    sizes = sorted(set(c.curve_sizes) | {0, c.top_n})
    curve = faithfulness_curve(sp, ne, pairs, abl, metric, faith, sizes, c.errors)
    reach = [r for r in curve if r["faithfulness"] >= TARGET_FAITHFULNESS]
    min_feats = min((r["n_features"] for r in reach), default=None)
    coarse = [n for n in sizes if n < 5 or n % 5 == 0 or n == c.top_n]
    curves = ablation_curves(sp, ne, pairs, ds, c, metric, coarse)
    pruned = pruned_circuits(sp, pairs, ds, c, metric)
    snap = pruned.pop("snapshot") if pruned else None
    example = None
    if snap is not None:
        example = prompt_circuit(sp, pairs, 0, snap["keep"][0], float(snap["metric"][0]), snap["faith"], ne, ds, vocab, run.saes_dir,
                                 metric, c.prune_ablation, run.cfg.name)
        save_tensors(out / "prompt_circuits.safetensors", {"keep": snap["keep"], "metric": snap["metric"]})
    plot_curve(curve, curves, c.ablation, out / "faithfulness_curve", f"{run.cfg.name}: {len(pairs)} pairs ({ne.method} effects), metric {metric}",
               pruned)

    edges, gradient, edge_check = weigh_edges(sp, pairs, nodes, metric, c, run.cfg.attribution.batch_size)
    ranked_edges = sorted(edges, key=lambda e: -abs(edges[e]))
    edge_abl = edge_ablation_test(sp, pairs, edges, abl, metric, list(c.edge_counts), c.random_edge_sets, c.seed)
    # zero ablation too: an ablated edge from a feature silent on the prompt then changes nothing, while under mean
    # ablation it feeds the prompt the feature's mean, which the completeness check shows moves the answer
    edge_abl_by = {c.ablation: edge_abl}
    if c.ablation != "zero":
        zero = ablation_values(sp, ds, "zero", c.mean_examples, c.seed, pairs)
        edge_abl_by["zero"] = edge_ablation_test(sp, pairs, edges, zero, metric, list(c.edge_counts), c.random_edge_sets, c.seed)

    from sae_ooc.saes.features import describe_nodes

    rank = {node_id(h, p, i): r + 1 for r, (h, p, i, _) in enumerate(ne.ranked())}
    mean = ne.mean
    records = [_node_record(n, mean, ne.per_prompt, ne.d_sae, sp.hooks, rank) for n in nodes]
    desc = describe_nodes(sp, ds, vocab, run.saes_dir, nodes)
    for r in records:
        r.update(desc.get(r["id"], {}))
    n_feat = sum(1 for n in nodes if not n.is_error)
    target = {"faithfulness": TARGET_FAITHFULNESS, "max_feature_nodes": TARGET_MAX_FEATURES, "min_feature_nodes_reaching": min_feats,
              "met": min_feats is not None and min_feats <= TARGET_MAX_FEATURES}
    faith_json = {
        "metric": metric, "ablation": c.ablation, "n_pairs": len(pairs), "m_full": float(m_full.mean()), "m_empty": float(m_empty.mean()),
        **scores, "n_feature_nodes": n_feat, "n_error_nodes": len(nodes) - n_feat, "target": target, "curve": curve, "by_ablation": curves,
        "pruned_per_prompt": pruned,
        "edges": {"n_edges": len(edges), "weights": c.edge_weights, "exact_check": edge_check, "ablation": edge_abl, "ablation_by_kind": edge_abl_by},
    }
    circuit = {
        "metadata": {
            "run": str(run.root), "config": run.cfg.name, "method": ne.method, "metric": metric, "n_pairs": len(pairs), "hooks": sp.hooks,
            "d_sae": sp.d_sae, "positions": list(POSITION_ROLES), "selection": {"top_n": c.top_n, "node_threshold": c.node_threshold, "errors": c.errors},
            "ablation": c.ablation, "edge_weights": c.edge_weights, "sink": {"id": SINK, "description": _metric_text(metric)},
            "example_prompt": vocab.decode(pairs.clean[0]), "example_answer": vocab.name(int(pairs.answer[0])),
        },
        "scores": {k: faith_json[k] for k in ("m_full", "m_empty", "m_circuit", "m_complement", "faithfulness", "completeness")},
        "nodes": records,
        "edges": [{"source": u, "target": d, "weight": edges[(u, d)], "gradient": gradient[(u, d)]} for u, d in ranked_edges],
    }
    ka, ke = keep_masks(sp, nodes)
    save_tensors(out / "circuit.safetensors", {**{f"features.{h}": m for h, m in ka.items()}, **{f"errors.{h}": m for h, m in ke.items()}})
    write_json(out / FAITHFULNESS_FILE, faith_json)
    write_json(out / CIRCUIT_FILE, circuit)
    if example is not None:
        write_json(out / PROMPT_CIRCUIT_FILE, example)
    elif (out / PROMPT_CIRCUIT_FILE).exists():
        (out / PROMPT_CIRCUIT_FILE).unlink()
    run.mark_done(STAGE, fp, faithfulness=scores["faithfulness"], completeness=scores["completeness"], n_feature_nodes=n_feat,
                  n_error_nodes=len(nodes) - n_feat, n_edges=len(edges), min_feature_nodes_for_target=min_feats,
                  seconds=round(time.perf_counter() - t0, 2))
    return True


def _metric_text(metric: str) -> str:
    return {"logit_diff": "logit(t2) - logit(t2')", "logprob": "log p(t2)", "ce": "-log p(t2)"}[metric]


def load_circuit(run) -> dict:
    path = run.circuit_dir / CIRCUIT_FILE
    if not path.exists():
        raise UserError(f"no circuit in {run.circuit_dir}; run `sae-ooc circuit --run {run.root}` first")
    return read_json(path)
