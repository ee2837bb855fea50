"""Stage `circuit`: the important nodes, the edges between them, and how much of the behaviour they carry.

The pieces live beside this module: node selection (`selection`), ablation and faithfulness (`ablation`,
`faithfulness`), edges and edge ablation (`edges`), per-prompt circuits by backward elimination (`prune`)
and the saved graph (`graph`); this module runs them in order and writes the files.

The attribution pairs are split (`circuit.heldout_fraction`, `Pairs.split`): nodes, edges and their weights, the
candidate edges and the per-prompt pruning are chosen on the selection pairs; faithfulness, completeness, the
ablation comparison, the methods' circuits and edge ablation are reported on the held-out pairs, with the
in-sample numbers on the selection pairs beside them, labelled as such. Every ablation sets only the nodes in its
scope (`ablation`: features active on the clean prompt, or on either prompt for resample and corrupt; error terms),
and intervals resample head entities, the unit the pairs were split by.

Outputs (RUN/circuit/): circuit.json (nodes with their mean effects over the selection pairs and descriptions,
edges with weights, held-out scores: a `CircuitGraph`), circuit.safetensors (node masks per hook),
faithfulness.json ("heldout", "selection" (in-sample), "by_ablation", "by_method", "pruned_per_prompt", "edges",
the pair indices under "pairs"), faithfulness_curve.png/.svg, and with per-prompt pruning prompt_circuit.json
(the first selection pair's pruned circuit, also a `CircuitGraph`) and prompt_circuits.safetensors (each pruned pair's keep
mask `keep` [n, n_nodes] in `prune.NodeLayout` order, its metric, and its index among the attribution pairs `pairs`).
"""

from __future__ import annotations

import torch

from sae_ooc.circuits.ablation import ablation_values
from sae_ooc.circuits.by_method import method_circuits
from sae_ooc.circuits.edges import (
    candidate_edges,
    edge_ablation_test,
    edge_weights,
    exact_edges,
    weigh_edges,
)
from sae_ooc.circuits.effects import (
    NodeEffects,
    load_effects_and_model,
)
from sae_ooc.circuits.faithfulness import (
    TARGET_FAITHFULNESS,
    TARGET_MAX_FEATURES,
    Faith,
    ablation_curves,
    circuit_scores,
    end_points,
    faithfulness_curve,
)
from sae_ooc.circuits.faithfulness_result import AblationCurve, CircuitFaithfulness, PrunedPerPrompt, Scores
from sae_ooc.circuits.graph import (
    CIRCUIT_FILE,
    PROMPT_CIRCUIT_FILE,
    CircuitGraph,
    GraphEdge,
    GraphNode,
)
from sae_ooc.circuits.nodes import SINK, Node
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.prune import NodeLayout, pruned_circuits
from sae_ooc.circuits.selection import keep_masks, select_nodes
from sae_ooc.circuits.spliced import Spliced
from sae_ooc.errors import UserError
from sae_ooc.io import save_tensors
from sae_ooc.saes.features import describe_nodes
from sae_ooc.tasks.data import load_task
from sae_ooc.threads import cpu_workers, torch_threads, worker_pool
from sae_ooc.viz.circuit_plots import plot_curve

FAITHFULNESS_FILE = CircuitFaithfulness.FILE
METRIC_TEXT = {"logit_diff": "logit(t2) - logit(t2')", "logprob": "log p(t2)", "ce": "-log p(t2)"}
# with multi-token answers the same metrics score whole token sequences (circuits/pairs.py)
SEQUENCE_METRIC_TEXT = {"logit_diff": "log p(t2) - log p(t2'), whole names", "logprob": "log p(t2), whole name", "ce": "-log p(t2), whole name"}


def metric_text(metric: str, answer_len: int) -> str:
    return (SEQUENCE_METRIC_TEXT if answer_len > 1 else METRIC_TEXT)[metric]


def _edges(edges: dict, gradient: dict) -> list[GraphEdge]:
    """Graph edges, largest |weight| first, each with its gradient estimate beside it."""
    return [GraphEdge(u, d, edges[(u, d)], gradient[(u, d)]) for u, d in sorted(edges, key=lambda e: -abs(edges[e]))]


def _describe(graph_nodes: list[GraphNode], sp: Spliced, ds, vocab, labels_root, nodes: list[Node]) -> None:
    desc = describe_nodes(sp, ds, vocab, labels_root, nodes)
    for g in graph_nodes:
        g.describe(desc.get(g.id, {}))


def circuit_graph(sp: Spliced, ne: NodeEffects, nodes: list[Node], edges: dict, gradient: dict, metadata: dict, scores: dict,
                  ds, vocab, labels_root) -> CircuitGraph:
    """The aggregate circuit: `nodes` with their mean effects over the pairs and their rank among every node."""
    rank = {Node(h, p, i).id: r + 1 for r, (h, p, i, _) in enumerate(ne.ranked())}
    mean = ne.mean
    gnodes = [GraphNode.of(n, sp.hooks, sp.position_names, float(mean[n.hook][n.pos, ne.column(n)]), ne.std_of(n), rank=rank.get(n.id))
              for n in nodes]
    _describe(gnodes, sp, ds, vocab, labels_root, nodes)
    return CircuitGraph(metadata, scores, gnodes, _edges(edges, gradient))


def prompt_circuit(sp: Spliced, pairs: Pairs, i: int, keep_row: torch.Tensor, m_circuit: float, faith: Faith, ne: NodeEffects,
                   ds, vocab, labels_root, metric: str, ablation: str, config: str) -> CircuitGraph:
    """One pair's pruned circuit: its nodes (with that pair's patching effects), and the edges the gradient
    method proposes among them, weighed by exact edge patching on that pair."""
    layout = NodeLayout(sp)
    nodes = [layout.node_of(j) for j in keep_row.nonzero(as_tuple=True)[0].tolist()]
    one = pairs.subset([i])
    gradient = edge_weights(sp, one, nodes, metric)
    edges = dict(zip(gradient, exact_edges(sp, one, list(gradient), metric)))
    _, clean = sp.cache(one.clean)
    gnodes = []
    for n in nodes:
        v = clean.get(n, rows=0)
        act = v.norm() if n.is_error else v  # an error node's value is a vector: its norm
        gnodes.append(GraphNode.of(n, sp.hooks, sp.position_names, float(ne.of(n)[i]), 0.0, activation=float(act)))
    _describe(gnodes, sp, ds, vocab, labels_root, nodes)
    f = float((m_circuit - faith.m_empty[i]) / (faith.m_full[i] - faith.m_empty[i])) if faith.m_full[i] != faith.m_empty[i] else float("nan")
    metadata = {
        "config": config, "prompt": vocab.decode(pairs.clean[i]), "answer": vocab.entity_name(int(pairs.answer[i])),
        "corrupted_prompt": vocab.decode(pairs.corrupt[i]), "corrupted_answer": vocab.entity_name(int(pairs.answer_corrupt[i])),
        "bridge": vocab.entity_name(int(pairs.bridge[i])), "metric": metric, "n_pairs": 1, "hooks": sp.hooks, "d_sae": sp.d_sae,
        "positions": list(sp.position_names), "ablation": ablation, "edge_weights": "exact", "method": ne.method,
        "example_prompt": vocab.decode(pairs.clean[i]),
        "selection": "backward elimination (sae_ooc.circuits.prune), first round with at most "
                     f"{TARGET_MAX_FEATURES} feature nodes per prompt",
        "sink": {"id": SINK, "description": metric_text(metric, sp.layout.answer_len)},
    }
    # fitted to this prompt by backward elimination, so its faithfulness here is in-sample
    scores = {"m_full": float(faith.m_full[i]), "m_empty": float(faith.m_empty[i]), "m_circuit": float(m_circuit), "faithfulness": f,
              "in_sample": True}
    return CircuitGraph(metadata, scores, gnodes, _edges(edges, gradient))


def _score_sets(sp: Spliced, ne: NodeEffects, held: Pairs, nodes: list[Node], ds, c, metric: str, sizes: list[int]) -> tuple[dict, tuple]:
    """The circuit and its curve scored on the held-out pairs and, in-sample, on the selection pairs it was chosen
    on. Returns ({"heldout": ..., "selection": ...}, (held-out ablation, held-out Faith))."""
    scored = {}
    for name, pairs in (("heldout", held), ("selection", ne.pairs)):
        abl = ablation_values(sp, ds, c.ablation, c.mean_examples, c.seed, pairs)
        faith = Faith.measure(sp, pairs, abl, metric)
        scored[name] = {**end_points(faith), **circuit_scores(sp, pairs, nodes, abl, metric, faith, ci_seed=c.seed),
                        "curve": faithfulness_curve(sp, ne, pairs, abl, metric, faith, sizes, c.errors)}
        if name == "heldout":
            held_abl = (abl, faith)
    scored["selection"]["in_sample"] = True
    reach = [r for r in scored["heldout"]["curve"] if r["faithfulness"] >= TARGET_FAITHFULNESS]
    min_feats = min((r["n_features"] for r in reach), default=None)
    scored["heldout"]["target"] = {"faithfulness": TARGET_FAITHFULNESS, "max_feature_nodes": TARGET_MAX_FEATURES,
                                   "min_feature_nodes_reaching": min_feats, "met": min_feats is not None and min_feats <= TARGET_MAX_FEATURES}
    return scored, held_abl


def run_circuit(run, force: bool = False) -> dict:
    """Stage `circuit` (see the module docstring). Returns the headline numbers (held-out pairs)."""
    with torch_threads(run.cfg.circuit.threads):
        return _circuit(run)


def _circuit(run) -> dict:
    c = run.cfg.circuit
    ne_all, sp = load_effects_and_model(run, "the circuit")
    ds, vocab = load_task(run.data_dir)
    sel_idx, held_idx = ne_all.pairs.split_indices(c.heldout_fraction, c.seed)
    ne, ne_held = ne_all.subset(sel_idx), ne_all.subset(held_idx)  # chosen on ne's pairs, scored on ne_held's
    nodes = select_nodes(ne, c.top_n, c.node_threshold, c.errors)
    if not nodes:  # before anything is written: a circuit of nothing has no edges to weigh
        why = f"no feature has |mean effect| >= circuit.node_threshold {c.node_threshold}" if c.node_threshold > 0 else "circuit.top_n is 0"
        raise UserError(f"the circuit would have no nodes ({why}); use --set circuit.top_n=N with N >= 1 "
                        "(and circuit.node_threshold=0), or a smaller circuit.node_threshold")
    sizes = sorted(set(c.curve_sizes) | {0, c.top_n})
    pool = worker_pool(1) if c.prune_ablation != "none" and cpu_workers(c.workers, 2, run.device) > 1 else None
    try:
        pruning = pool.submit(_pruning, run, sel_idx) if pool is not None else None
        return _circuit_rest(run, ne_all, sp, ds, vocab, sel_idx, held_idx, ne, ne_held, nodes, sizes, pruning)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _pruning(run, sel_idx: torch.Tensor) -> dict | None:
    """`pruned_circuits` in a worker process, from the same files with the same settings as in the stage's process
    (every random draw in it is seeded), so it returns the same numbers."""
    c = run.cfg.circuit
    with torch_threads(c.threads):
        ne_all, sp = load_effects_and_model(run, "the circuit")
        ds, _ = load_task(run.data_dir)
        return pruned_circuits(sp, ne_all.pairs, sel_idx, ds, c, ne_all.metric)


def _circuit_rest(run, ne_all: NodeEffects, sp: Spliced, ds, vocab, sel_idx, held_idx, ne: NodeEffects, ne_held: NodeEffects,
                  nodes: list[Node], sizes: list[int], pruning) -> dict:
    c, a = run.cfg.circuit, run.cfg.attribution
    out, metric, held = run.circuit_dir, ne_all.metric, ne_held.pairs
    scored, (abl, faith) = _score_sets(sp, ne, held, nodes, ds, c, metric, sizes)
    scored = {k: Scores.from_json(v) for k, v in scored.items()}
    coarse = [n for n in sizes if n < 5 or n % 5 == 0 or n == c.top_n]
    curves = {k: AblationCurve.from_json(v) for k, v in ablation_curves(sp, ne, ne_held, ds, c, metric, coarse).items()}
    by_method = method_circuits(sp, ne, held, abl, faith, c, a)
    edges, gradient, edge_check = weigh_edges(sp, ne.pairs, nodes, metric, c, a.batch_size)
    candidates = candidate_edges(sp, ne.pairs, ne, c, edges, a.batch_size)
    # circuit.edge_extra_ablations too (each ablation sets a source only where it is in its scope on the pair)
    edge_abl_by = {}
    for kind in dict.fromkeys((c.ablation, *c.edge_extra_ablations)):
        kind_abl = abl if kind == c.ablation else ablation_values(sp, ds, kind, c.mean_examples, c.seed, held)
        edge_abl_by[kind] = edge_ablation_test(sp, held, edges, candidates, kind_abl, metric, list(c.edge_counts), c.random_edge_sets, c.seed,
                                               label=f"{kind} ablation")

    # the pruning ran beside everything above when a worker took it
    pruned = pruning.result() if pruning is not None else pruned_circuits(sp, ne_all.pairs, sel_idx, ds, c, metric)
    snap = pruned.pop("snapshot") if pruned else None
    pruned = PrunedPerPrompt.from_json(pruned) if pruned else pruned
    example = None
    if snap is not None:  # the first selection pair: source 0 of the pruning, pair 0 of `ne`
        example = prompt_circuit(sp, ne.pairs, 0, snap["keep"][0], float(snap["metric"][0]), snap["faith"], ne, ds, vocab, run.sae_eval_dir,
                                 metric, c.prune_ablation, run.cfg.name)
        save_tensors(out / "prompt_circuits.safetensors", {"keep": snap["keep"], "metric": snap["metric"], "pairs": sel_idx[: c.prune_pairs]})
    elif (out / "prompt_circuits.safetensors").exists():
        (out / "prompt_circuits.safetensors").unlink()
    plot_curve(scored, curves, c.ablation, out / "faithfulness_curve",
               f"{run.cfg.name}: chosen on {len(sel_idx)} pairs ({ne.method} effects), scored on {len(held_idx)} held-out pairs, metric {metric}",
               pruned, target=(TARGET_FAITHFULNESS, TARGET_MAX_FEATURES))

    n_feat = sum(1 for n in nodes if not n.is_error)
    faith_json = CircuitFaithfulness.from_json({
        "metric": metric, "ablation": c.ablation, "n_selection_pairs": len(sel_idx), "n_heldout_pairs": len(held_idx),
        "pairs": {"heldout_fraction": c.heldout_fraction, "seed": c.seed, "selection": sel_idx.tolist(), "heldout": held_idx.tolist(),
                  "chosen_on_selection": "nodes, edges and their weights, candidate edges, per-prompt pruning",
                  "reported_on_heldout": "heldout, by_ablation, by_method, edges.ablation_by_kind"},
        "n_feature_nodes": n_feat, "n_error_nodes": len(nodes) - n_feat, **scored,
        "by_ablation": curves, "by_method": by_method, "pruned_per_prompt": pruned,
        "edges": {"n_edges": len(edges), "weights": c.edge_weights, "weighed_on": "selection", "exact_check": edge_check,
                  "n_candidate_edges": len(candidates), "candidate_pool_nodes": c.edge_pool_nodes, "ablated_on": "heldout",
                  "ablation_by_kind": edge_abl_by},
    })
    metadata = {
        "run": str(run.root), "config": run.cfg.name, "method": ne.method, "metric": metric, "n_pairs": len(sel_idx),
        "effects_over": "selection pairs", "n_heldout_pairs": len(held_idx), "hooks": sp.hooks,
        "d_sae": sp.d_sae, "positions": list(sp.position_names), "selection": {"top_n": c.top_n, "node_threshold": c.node_threshold, "errors": c.errors},
        "ablation": c.ablation, "edge_weights": c.edge_weights, "sink": {"id": SINK, "description": metric_text(metric, sp.layout.answer_len)},
        "example_prompt": vocab.decode(ne.pairs.clean[0]), "example_answer": vocab.entity_name(int(ne.pairs.answer[0])),
    }
    score_keys = ("m_full", "m_empty", "m_circuit", "m_complement", "faithfulness", "faithfulness_ci95", "completeness")
    scores = {**{k: getattr(scored["heldout"], k) for k in score_keys}, "pairs": "heldout", "n_pairs": len(held_idx)}
    graph = circuit_graph(sp, ne, nodes, edges, gradient, metadata, scores, ds, vocab, run.sae_eval_dir)
    ka, ke = keep_masks(sp, nodes)
    save_tensors(out / "circuit.safetensors", {**{f"features.{h}": m for h, m in ka.items()}, **{f"errors.{h}": m for h, m in ke.items()}})
    faith_json.save(out)
    graph.save(out / CIRCUIT_FILE)
    if example is not None:
        example.save(out / PROMPT_CIRCUIT_FILE)
    elif (out / PROMPT_CIRCUIT_FILE).exists():
        (out / PROMPT_CIRCUIT_FILE).unlink()
    h = scored["heldout"]
    return {"faithfulness_heldout": h.faithfulness, "completeness_heldout": h.completeness,
            "faithfulness_selection_in_sample": scored["selection"].faithfulness, "n_selection_pairs": len(sel_idx),
            "n_heldout_pairs": len(held_idx), "n_feature_nodes": n_feat, "n_error_nodes": len(nodes) - n_feat, "n_edges": len(edges),
            "min_feature_nodes_for_target_heldout": h.target.min_feature_nodes_reaching}
