"""Stage `variable-circuit`: a circuit whose nodes are task variables (groups of SAE features,
`sae_ooc.circuits.variables`), with edges, faithfulness on held-out pairs under every ablation, and its controls.

On the attribution stage's pairs, split by `circuit.heldout_fraction` / `circuit.seed` (Pairs.split):
  1. every group's effect on every pair under `variables.intervention`: ablation = m(the group alone ablated under
     `variables.ablation`) - m(model); patching = m(all its members clean -> corrupted at once) - m(clean). Both are
     recorded; patching misses what the pair holds fixed (r1, r2), which mean, zero and resample ablation remove;
  2. groups (of the kinds in `variables.kinds`) ranked by |mean effect| on the selection pairs; the circuit is the
     fewest top groups whose faithfulness on the selection pairs under `variables.ablation` reaches
     `variables.target`, trying up to `variables.max_groups` (none reaching: the most faithful of those sizes);
  3. faithfulness and completeness under every ablation kind on the held-out pairs (and, labelled in-sample, on the
     selection pairs), with a bootstrap interval over head entities, beside its controls (`variable_scores`): as many
     random features outside the circuit, at the same places where enough are outside, the same number of individual features with the largest node effects, and the
     circuit's variable groups alone (with their own random-group control);
  4. edges between the circuit's groups by exact group edge patching (`variable_edges`), the source group set as in 1.

Outputs (RUN/variable_circuit/):
  variable_circuit.json   the circuit as a `CircuitGraph`: one node per group (type variable, remainder or error; effect:
                          mean over the held-out pairs, selection-pair mean beside it), edges with held-out weights
  faithfulness.json       per ablation kind: held-out and selection numbers, controls, curve; the choice; the verdict
  groups.json             every group with its members, its labels' values and both effects on both pair sets
  variable_circuit.svg/.png/.dot/.html, variable_graph.json, variable_circuit_full.json  (viz.circuit_files.export_circuit)
  variable_faithfulness.png/.svg  faithfulness against the number of groups, and the circuit against its controls
"""

from __future__ import annotations

import numpy as np
import torch

from sae_ooc.circuits.ablation import ABLATIONS, VALIDITY, ablated_metric, ablation_values
from sae_ooc.circuits.circuit import metric_text
from sae_ooc.circuits.effects import (
    load_effects_and_model,
)
from sae_ooc.circuits.graph import CircuitGraph, GraphEdge, GraphNode
from sae_ooc.circuits.nodes import SINK
from sae_ooc.circuits.selection import active_node_masks
from sae_ooc.circuits.variable_edges import SINK_INDEX, candidate_edges, group_edges
from sae_ooc.circuits.variable_faithfulness_result import VariableCircuitFaithfulness, VariableGroups
from sae_ooc.circuits.variable_scores import (
    SETS,
    Scorer,
    bootstrap_ci,
    random_controls,
    top_features_keep,
)
from sae_ooc.circuits.variables import (
    Group,
    active_members,
    group_effects,
    group_features,
    group_masks,
)
from sae_ooc.saes.features import load_feature_labels
from sae_ooc.tasks.data import load_task
from sae_ooc.threads import torch_threads
from sae_ooc.viz.circuit_files import export_circuit
from sae_ooc.viz.variable_plots import plot_variable_faithfulness

VARIABLE_DIR = "variable_circuit"
GRAPH_FILE = "variable_circuit.json"
FAITHFULNESS_FILE = VariableCircuitFaithfulness.FILE
GROUPS_FILE = VariableGroups.FILE
EXPORT_PREFIX = "variable_"
ABLATION_RULE = ("a group is ablated by setting its members in the ablation's scope to their ablation value: features active on "
                 "the pair's clean prompt (for resample and corrupt ablation also those active on the prompt the values come from), "
                 "the error term always; the other members keep their clean value")
EFFECT_TEXT = {"ablation": "m(the group alone ablated) - m(model)", "patching": "m(all its members clean -> corrupted) - m(clean)"}


def choose_size(faithfulness: list[float], target: float) -> tuple[int, bool]:
    """(size, reached): the smallest size whose faithfulness reaches `target`, else the most faithful (smallest on ties)."""
    for k, f in enumerate(faithfulness):
        if f >= target:
            return k, True
    return max(range(len(faithfulness)), key=lambda k: (faithfulness[k] if np.isfinite(faithfulness[k]) else -np.inf, -k)), False


def describe_group(grp: Group, labels: dict, active_mean: float) -> dict:
    """name (the drawing's title), label, description and the label values of a group's members."""
    if grp.kind == "error":
        return {"name": "error", "label": f"err@{grp.role}", "description": "SAE error: what the SAE does not reconstruct", "values": []}
    if grp.kind == "remainder":
        return {"name": f"unlabelled ×{grp.size}", "label": f"unlabelled@{grp.role}", "values": [],
                "description": f"features without a label at {grp.role}; {active_mean:.1f} active per prompt"}
    labs = [labels[grp.hook][f][0] for f in grp.members]
    values = sorted({str(lab.get("value")) for lab in labs})
    au = [float(lab["auroc"]) for lab in labs if lab.get("auroc") is not None]
    shown = ", ".join(values[:3]) + ("…" if len(values) > 3 else "")
    return {"name": f"{grp.name} ×{grp.size}", "label": f"{grp.name}@{grp.role}", "values": values,
            "description": f"{len(values)} values ({shown})" + (f", AUROC {min(au):.2f}-{max(au):.2f}" if au else "")
                           + f"; {active_mean:.1f} active per prompt"}


def _mean_std(x) -> tuple[float, float]:
    return float(x.mean()), float(x.std()) if len(x) > 1 else 0.0


def groups_record(groups: list[Group], per_pair: dict, idx: dict, rank: dict[int, int], chosen: list[int], described: list[dict],
                  active_counts) -> list[dict]:
    """Every group with its members and, for each per-pair measure ({name: [n_pairs, n_groups]}), its mean and std on
    each pair set (`<name>_<set>`, `<name>_<set>_std`)."""
    out = []
    for g, grp in enumerate(groups):
        rec = {"id": grp.id, "kind": grp.kind, "variable": grp.name, "hook": grp.hook, "position": grp.pos, "role": grp.role,
               "size": grp.size, "members": list(grp.members), "values": described[g]["values"], "rank": rank.get(g),
               "in_circuit": g in chosen, "active_per_prompt": float(active_counts[:, g].mean())}
        for name, t in per_pair.items():
            for s in SETS:
                rec[f"{name}_{s}"], rec[f"{name}_{s}_std"] = _mean_std(t[idx[s], g])
        out.append(rec)
    return out


def variable_graph(groups: list[Group], chosen: list[int], records: list[dict], described: list[dict], hooks: list[str],
                   edges: list[tuple[int, int]], weights, idx: dict, metadata: dict, scores: dict) -> CircuitGraph:
    """The circuit of groups as a CircuitGraph (effects and weights: held-out means; selection means beside them)."""
    nodes = []
    for g in chosen:
        grp, rec = groups[g], records[g]
        nodes.append(GraphNode(
            id=grp.id, hook=grp.hook, hook_index=hooks.index(grp.hook), position=grp.pos, role=grp.role, type=grp.kind, feature=None,
            effect=rec["effect_heldout"], effect_std=rec["effect_heldout_std"], rank=rec["rank"], label=described[g]["label"],
            labels=[], description=described[g]["description"], top_activations=[], promoted=[],
            extra={"name": described[g]["name"], "variable": grp.name, "size": grp.size, "members": list(grp.members), "values": rec["values"],
                   "effect_selection": rec["effect_selection"], "active_per_prompt": rec["active_per_prompt"],
                   **{f"{m}_{s}": rec[f"{m}_{s}"] for m in ("ablation_effect", "patching_effect") for s in SETS}}))
    gedges = []
    for k in sorted(range(len(edges)), key=lambda k: -abs(float(weights[idx["heldout"], k].mean()))):
        u, d = edges[k]
        gedges.append(GraphEdge(groups[chosen[u]].id, SINK if d == SINK_INDEX else groups[chosen[d]].id, float(weights[idx["heldout"], k].mean()),
                                extra={"weight_selection": float(weights[idx["selection"], k].mean())}))
    return CircuitGraph(metadata, scores, nodes, gedges)


def _random_text(ctrl: dict, what: str) -> str:
    """The random control in words: its spread, or why there is none."""
    r = ctrl["heldout"]
    if not r["values"]:
        return f"{what}: none ({ctrl.get('note', 'no draw')})"
    share = ctrl["share_at_same_places"]
    where = "at the same places" if share == 1 else f"{share:.0%} of them at the same places, the rest where the circuit leaves features"
    return (f"{what}, {where}: {r['mean']:.3f} ± {r['std']:.3f} (max {r['max']:.3f}, {len(r['values'])} draws; "
            f"{r['n_at_least_circuit']} at least as faithful)")


def verdict(by_kind: dict, main: str, target: float, k: int, groups: list[Group], chosen: list[int]) -> dict:
    """Whether the circuit is faithful on held-out pairs, and how it compares with its controls, in one sentence."""
    h = by_kind[main]["heldout"]
    ctrl = by_kind[main]["random_groups"]
    rnd = ctrl["heldout"]
    top = by_kind[main]["top_features_same_size"]
    kinds = [groups[g].kind for g in chosen]
    faithful = bool(h["faithfulness"] >= target)
    above = bool(rnd["values"]) and rnd["n_at_least_circuit"] == 0
    n_feat = sum(groups[g].size for g in chosen if groups[g].kind != "error")
    vo = by_kind[main]["variables_only"]
    text = (f"The variable circuit ({k} group{'' if k == 1 else 's'}: {kinds.count('variable')} variable, {kinds.count('remainder')} remainder, "
            f"{kinds.count('error')} error; {n_feat} SAE features) is {'faithful' if faithful else 'NOT faithful'} on {h['n_pairs']} held-out "
            f"pairs under {main} ablation: {h['faithfulness']:.3f} (95% CI over head entities {h['ci95'][0]:.3f} to {h['ci95'][1]:.3f}; "
            f"target {target}). " + _random_text(ctrl, "As many random features outside the circuit")
            + f". The {top['n_features']} individual features with the largest effects: {top['heldout']:.3f}. "
            f"Its {kinds.count('variable')} labelled variable groups alone: {vo['heldout']:.3f} ("
            + _random_text(vo["random_groups"], "random features of their number") + ").")
    return {"ablation": main, "target": target, "faithful": faithful, "above_every_random_draw": above,
            "control_share_at_same_places": ctrl["share_at_same_places"],
            "faithful_under": [kind for kind, r in by_kind.items() if r["heldout"]["faithfulness"] >= target], "text": text}


def run_variable_circuit(run, force: bool = False) -> dict:
    """Stage `variable-circuit` (see the module docstring). Returns the headline numbers."""
    with torch_threads(run.cfg.variables.threads):
        return _run(run)


def ablation_effects(sc: Scorer, n_groups: int) -> torch.Tensor:
    """[n_pairs, n_groups]: m(model with only that group ablated) - m(model), under the scorer's ablation."""
    everything = list(range(n_groups))
    return torch.stack([sc.metric_of(everything[:g] + everything[g + 1 :]) - sc.m_full for g in everything], 1)


def score_circuit(scorers: dict[str, Scorer], groups: list[Group], chosen: list[int], circuit_m: dict, top: tuple, curves: dict, v) -> dict:
    """Per ablation kind: the circuit on both pair sets (faithfulness, completeness, bootstrap interval) and its controls."""
    rest = [g for g in range(len(groups)) if g not in chosen]
    variables_only = [g for g in chosen if groups[g].kind == "variable"]
    top_keep, top_feats = top
    by_kind = {}
    for kind, sc in scorers.items():
        m_c, m_rest = circuit_m[kind], sc.metric_of(rest)
        r = {s: {**sc.summary(m_c, s), "completeness": sc.faith(m_rest, s), "ci95": bootstrap_ci(sc, m_c, s, v.bootstrap, v.seed),
                 "in_sample": s == "selection"} for s in SETS}
        r["variables_only"] = {**sc.both(sc.metric_of(variables_only)), "n_groups": len(variables_only)}
        r["top_features_same_size"] = {**sc.both(sc.metric_keep(top_keep)), "n_features": len(top_feats),
                                       "ranked_by": "|mean node effect| (attribute stage) on the selection pairs"}
        r["curve"] = curves[kind]
        r["valid_for"] = VALIDITY.get(kind)  # a group's members each by their own unit's rule
        by_kind[kind] = r
    reference = {kind: {s: by_kind[kind][s]["faithfulness"] for s in SETS} for kind in scorers}
    for kind, ctrl in random_controls(scorers, groups, chosen, reference, v.random_draws, v.seed).items():
        by_kind[kind]["random_groups"] = ctrl
    main = {v.ablation: scorers[v.ablation]}  # the variable groups' own control: under the choosing ablation only (time)
    reference = {v.ablation: {s: by_kind[v.ablation]["variables_only"][s] for s in SETS}}
    by_kind[v.ablation]["variables_only"]["random_groups"] = random_controls(main, groups, variables_only, reference, v.random_draws, v.seed)[v.ablation]
    return by_kind


def _run(run) -> dict:
    v, c = run.cfg.variables, run.cfg.circuit
    out = run.variable_circuit_dir
    ne, sp = load_effects_and_model(run, "the variable circuit")
    pairs, metric = ne.pairs, ne.metric
    ds, vocab = load_task(run.data_dir)
    sel, held = pairs.split_indices(c.heldout_fraction, c.seed)
    idx = {"selection": sel, "heldout": held}
    labels = load_feature_labels(run.sae_eval_dir)
    groups = group_features(labels, sp.hooks, sp.d_sae, sp.position_names)
    masks = group_masks(sp, groups)
    active = active_node_masks(sp, pairs)
    m_full = ablated_metric(sp, pairs, None, None, metric)
    scorers = {kind: Scorer(sp, pairs, masks, ablation_values(sp, ds, kind, c.mean_examples, c.seed, pairs), metric, m_full, idx)
               for kind in ABLATIONS.names()}
    per_pair = {"ablation_effect": ablation_effects(scorers[v.ablation], len(groups)), "patching_effect": group_effects(sp, pairs, groups, metric)}
    per_pair["effect"] = per_pair[f"{v.intervention}_effect"]
    score = per_pair["effect"][sel].mean(0)
    ranking = sorted((g for g, grp in enumerate(groups) if grp.kind in v.kinds), key=lambda g: (-abs(float(score[g])), g))
    sizes = list(range(min(v.max_groups, len(ranking)) + 1))
    curve_m = {kind: [sc.metric_of(ranking[:k]) for k in sizes] for kind, sc in scorers.items()}
    curves = {kind: {"sizes": sizes, **{s: [scorers[kind].faith(m, s) for m in ms] for s in SETS}} for kind, ms in curve_m.items()}
    k, reached = choose_size(curves[v.ablation]["selection"], v.target)
    chosen = ranking[:k]
    n_feat = sum(groups[g].size for g in chosen if groups[g].kind != "error")
    top = top_features_keep(sp, ne.per_prompt, sel, n_feat, [groups[g] for g in chosen if groups[g].kind == "error"])
    by_kind = score_circuit(scorers, groups, chosen, {kind: ms[k] for kind, ms in curve_m.items()}, top, curves, v)

    circuit_groups = [groups[g] for g in chosen]
    edges = candidate_edges(sp.hooks, circuit_groups, int(pairs.answer_pos.max()), sp.base.cfg.n_layers)
    by_ablation = v.intervention == "ablation"
    main_abl = scorers[v.ablation].abl
    weights = group_edges(sp, pairs, circuit_groups, edges, metric, main_abl if by_ablation else None,
                          (main_abl.scope.acts, main_abl.scope.errs) if by_ablation else None)
    active_counts = active_members(masks, active, groups).cpu()
    described = [describe_group(grp, labels, float(active_counts[held, g].mean())) for g, grp in enumerate(groups)]
    records = groups_record(groups, {n: t.cpu() for n, t in per_pair.items()}, idx, {g: r + 1 for r, g in enumerate(ranking)},
                            chosen, described, active_counts)

    n_kind = {kind: sum(grp.kind == kind for grp in groups) for kind in ("variable", "remainder", "error")}
    effect_text = EFFECT_TEXT[v.intervention] + (f" ({v.ablation} ablation)" if by_ablation else "")
    choice = {"ablation": v.ablation, "intervention": v.intervention, "target": v.target, "max_groups": v.max_groups, "kinds": list(v.kinds),
              "n_groups": k, "reached_target_on_selection": reached, "n_candidates": len(ranking),
              "rule": f"groups ranked by |mean effect| on the selection pairs, effect = {effect_text}; the fewest top groups reaching the "
                      f"target faithfulness on the selection pairs under {v.ablation} ablation, else the most faithful size"}
    main = by_kind[v.ablation]
    faith_json = VariableCircuitFaithfulness.from_json({
        "metric": metric, "n_pairs": len(pairs), "n_selection": len(sel), "n_heldout": len(held), "heldout_fraction": c.heldout_fraction,
        "ablation_rule": ABLATION_RULE, "groups": {**n_kind, "total": len(groups)}, "selection": choice,
        "circuit": {"groups": [groups[g].id for g in chosen], "n_feature_nodes": n_feat,
                    "n_labelled_features": sum(groups[g].size for g in chosen if groups[g].kind == "variable"),
                    "n_error_nodes": sum(groups[g].kind == "error" for g in chosen), "n_edges": len(edges),
                    "top_features_same_size": [f"{h}:{p}:{i}" for h, p, i in top[1]]},
        "by_ablation": by_kind, "verdict": verdict(by_kind, v.ablation, v.target, k, groups, chosen),
    })
    metadata = {
        "run": str(run.root), "config": f"{run.cfg.name} variable circuit", "method": f"group {v.intervention}", "metric": metric,
        "n_pairs": len(held), "hooks": sp.hooks, "d_sae": sp.d_sae, "positions": list(sp.position_names), "node_kind": "variable groups",
        "selection": choice, "ablation": v.ablation, "ablation_rule": ABLATION_RULE, "effect": effect_text,
        "edge_weights": f"exact group edge patching, source group by {v.intervention}",
        "values_on": "held-out pairs (selection-pair means in effect_selection / weight_selection)",
        "sink": {"id": SINK, "description": metric_text(metric, sp.layout.answer_len)},
        "example_prompt": vocab.decode(pairs.clean[0]), "example_answer": vocab.entity_name(int(pairs.answer[0])),
    }
    scores = {"m_full": main["heldout"]["m_full"], "m_empty": main["heldout"]["m_empty"], "m_circuit": main["heldout"]["m_circuit"],
              "faithfulness": main["heldout"]["faithfulness"], "completeness": main["heldout"]["completeness"],
              "faithfulness_selection": main["selection"]["faithfulness"],
              "random_groups_mean": main["random_groups"]["heldout"]["mean"]}
    graph = variable_graph(groups, chosen, records, described, sp.hooks, edges, weights, idx, metadata, scores)
    VariableGroups.from_json({"n_pairs": len(pairs), "ablation_rule": ABLATION_RULE, "groups": records}).save(out)
    faith_json.save(out)
    graph.save(out / GRAPH_FILE)
    export_circuit(graph.to_json(), out, prefix=EXPORT_PREFIX)
    plot_variable_faithfulness(faith_json, out / "variable_faithfulness", f"{run.cfg.name}: variable circuit, metric {metric}")
    return {"faithfulness": scores["faithfulness"], "faithfulness_selection": scores["faithfulness_selection"], "n_groups": k,
            "n_feature_nodes": n_feat, "n_edges": len(edges), "random_groups_mean": scores["random_groups_mean"],
            "faithful": faith_json.verdict.faithful}

