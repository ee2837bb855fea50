"""Assemble the important nodes into a circuit with edges and measure its faithfulness (RUN/circuit/).

Settings: the `circuit` config section (top_n, node_threshold, errors, ablation, curve_sizes, prune_ablation, ...).
"""

from sae_ooc.commands import files_written, verb
from sae_ooc.viz.text import fmt as num


def summarize(run, result) -> str:
    from sae_ooc.circuits.faithfulness_result import CircuitFaithfulness  # no torch there

    f = CircuitFaithfulness.load(run.circuit_dir)
    h, sel = f.heldout, f.selection
    t = h.target
    chk = f.edges.exact_check

    ci = "n/a" if h.faithfulness_ci95 is None else "[" + ", ".join(f"{v:.3f}" for v in h.faithfulness_ci95) + "]"

    lines = [f"circuit: {verb(result)} {files_written(run, 'circuit')}: {f.n_feature_nodes} feature + {f.n_error_nodes} error nodes, "
             f"{f.edges.n_edges} edges, chosen on {f.n_selection_pairs} pairs; on {f.n_heldout_pairs} held-out pairs "
             f"({f.ablation} ablation): faithfulness {num(h.faithfulness)} (95% CI {ci}), completeness "
             f"{num(h.completeness)}; in-sample on the selection pairs {num(sel.faithfulness)}; "
             + (f"faithfulness >= {t.faithfulness} first at {t.min_feature_nodes_reaching} feature nodes "
                if t.min_feature_nodes_reaching is not None else f"faithfulness never >= {t.faithfulness} on the curve ")
             + f"({'met' if t.met else 'NOT met'} within {t.max_feature_nodes}); edge weights {f.edges.weights}; "
               f"gradient vs exact: Pearson {num(chk.pearson)} on {chk.n_edges} edges"]
    for m, r in f.by_method.items():
        lines.append(f"  circuit selected by {m} effects: held-out faithfulness {num(r.faithfulness)} "
                     f"({r.shared_feature_nodes}/{r.n_feature_nodes} feature nodes shared with the stage's circuit)")
    pr = f.pruned_per_prompt
    if pr:
        lines.append(f"  per-prompt circuits by backward elimination ({pr.ablation} ablation, {pr.n_pairs} selection pairs, in-sample): "
                     f"faithfulness {num(pr.faithfulness_within_max)} with <= {pr.max_features} feature nodes; >= {pr.target} down to "
                     f"{pr.min_features_reaching_target} feature nodes")
        tr = pr.transfer
        if tr:
            lines.append(f"  the same circuits on other prompts: same (r1, r2) {num(tr.same_relations.faithfulness)} "
                         f"({tr.same_relations.n_rows} prompt pairs), other (r1, r2) {num(tr.other_relations.faithfulness)}")
    for ab, cv in f.by_ablation.items():
        chk_i = cv.inactive_check
        if not chk_i.passes:
            lines.append(f"  note: under {ab} ablation, ablating only the features outside its scope (silent on the prompt) would move "
                         f"the metric by {num(chk_i.relative_change)} of its range (tolerance {chk_i.tolerance}); every circuit "
                         "here ablates only the features in scope")
    for kind, rows in f.edges.ablation_by_kind.items():
        for r in rows:
            lines.append(f"  {kind} ablation of the top {r.k} edges (held-out): metric drop {r.top_edges_drop:.3f}, percentile "
                         f"{r.percentile:.0f} among {r.n_random} random sets from {r.pool_size} candidate edges "
                         f"(random mean {r.random_edges_drop_mean:.3f})")
    return "\n".join(lines)
