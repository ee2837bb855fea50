"""Assemble the important nodes into a circuit with edges and measure its faithfulness (RUN/circuit/).

Settings: the `circuit` config section (top_n, node_threshold, errors, ablation, curve_sizes, prune_ablation, ...).
"""

from sae_ooc.commands import verb


def summarize(run, result) -> str:
    from sae_ooc.circuits.circuit import FAITHFULNESS_FILE
    from sae_ooc.io import read_json

    f = read_json(run.circuit_dir / FAITHFULNESS_FILE)
    t = f["target"]
    chk = f["edges"]["exact_check"]
    lines = [f"circuit: {verb(result)} {run.circuit_dir}: {f['n_feature_nodes']} feature + {f['n_error_nodes']} error nodes, "
             f"{f['edges']['n_edges']} edges; faithfulness {f['faithfulness']:.3f}, completeness {f['completeness']:.3f} ({f['ablation']} ablation); "
             + (f"faithfulness >= {t['faithfulness']} first at {t['min_feature_nodes_reaching']} feature nodes "
                if t["min_feature_nodes_reaching"] is not None else f"faithfulness never >= {t['faithfulness']} on the curve ")
             + f"({'met' if t['met'] else 'NOT met'} within {t['max_feature_nodes']}); edge weights {f['edges'].get('weights', 'gradient')}; "
               f"gradient vs exact: Pearson {chk['pearson']:.3f} on {chk['n_edges']} edges"]
    pr = f.get("pruned_per_prompt")
    if pr:
        lines.append(f"  per-prompt circuits by backward elimination ({pr['ablation']} ablation, {pr['n_pairs']} pairs): faithfulness "
                     f"{pr['faithfulness_within_max']:.3f} with <= {pr['max_features']} feature nodes; >= {pr['target']} down to "
                     f"{pr['min_features_reaching_target']} feature nodes")
    for ab, cv in f["by_ablation"].items():
        if cv["faithfulness_active_nodes"] < 0.9:
            lines.append(f"  note: under {ab} ablation even the complete circuit (every active node) scores {cv['faithfulness_active_nodes']:.3f}: "
                         "that ablation moves the answer through features the prompt does not use")
    for kind, rows in (f["edges"].get("ablation_by_kind") or {f["ablation"]: f["edges"]["ablation"]}).items():
        for r in rows:
            rnd = r["random_edges_drop_mean"]
            lines.append(f"  {kind} ablation of the top {r['k']} edges: metric drop {r['top_edges_drop']:.3f} vs random "
                         f"{'n/a' if rnd is None else f'{rnd:.3f}'}")
    return "\n".join(lines)
