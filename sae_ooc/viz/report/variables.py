"""Report section 6: the task-level circuit of variable nodes (features grouped by the variable they carry),
chosen on selection pairs and scored on held-out pairs beside random groups of the same sizes."""

from __future__ import annotations

from sae_ooc.viz.report.doc import Doc, f3, load


def variable_section(doc: Doc) -> None:
    run = doc.run
    doc.add("## 6. A task-level circuit of variable nodes", "")
    vdir = run.variable_circuit_dir
    f = load(vdir / "faithfulness.json")
    if f is None:
        doc.add("Not run yet: `sae-ooc variable-circuit`.", "")
        return
    sel, circ, ver = f["selection"], f["circuit"], f["verdict"]
    kind = sel["ablation"]
    main = f["by_ablation"][kind]
    held = main["heldout"]
    on = f"{held['n_pairs']} held-out pairs, {kind} ablation"
    doc.add(
        "Features that eval-sae labels with the same variable at the same position and hook form one node (e.g. `bridge@r1@H`); "
        "the remaining features of a (hook, position) form a `rest` node and each SAE error term its own node (the kinds used: "
        f"{', '.join(sel['kinds'])}). A node is ablated as a whole: its members active on the prompt. Selection: {sel['rule']}; "
        f"chosen on the selection pairs, scored on held-out pairs never used to choose.", "",
        f"**Verdict: {ver['text']}**", "",
        f"- Faithfulness of the variable circuit ({circ.get('n_feature_nodes', '?')} SAE features in {len(circ['groups'])} nodes), held out: "
        f"**{doc.number('circuit.variable.faithfulness', held['faithfulness'], on)}** (95% CI {f3(held['ci95'][0])} to {f3(held['ci95'][1])}); "
        f"on the selection pairs that chose it: {doc.number('circuit.variable.faithfulness_selection', main['selection']['faithfulness'], 'selection pairs', in_sample=True)}",
    )
    rg = main.get("random_groups", {}).get("heldout")
    if rg:
        doc.add(f"- Control, random groups of the same sizes at the same places ({main['random_groups']['n_draws']} draws): "
                f"{doc.number('circuit.variable.random_groups_mean', rg['mean'], on)} ± {f3(rg['std'])} (max {f3(rg['max'])}); "
                f"{rg['n_at_least_circuit']} draws at least as faithful as the circuit")
    vo, tf = main.get("variables_only"), main.get("top_features_same_size")
    if vo:
        doc.add(f"- Its {vo['n_groups']} labelled variable nodes alone: {doc.number('circuit.variable.variables_only', vo['heldout'], on)}")
    if tf:
        doc.add(f"- The {tf['n_features']} individual features with any effect (at most as many as the circuit's, ranked by {tf['ranked_by']}): {f3(tf['heldout'])}")
    doc.add("", "| ablation | held-out faithfulness (95% CI) | selection (in-sample) | random groups (mean ± sd) |", "|---|---|---|---|")
    for k, v in f["by_ablation"].items():
        h, r = v["heldout"], (v.get("random_groups") or {}).get("heldout") or {}
        doc.add(f"| {k} | {f3(h['faithfulness'])} ({f3(h['ci95'][0])} to {f3(h['ci95'][1])}) | {f3(v['selection']['faithfulness'])} | "
                f"{f3(r.get('mean'))} ± {f3(r.get('std'))} |")
    doc.add("")
    if (vdir / "variable_circuit.png").exists():
        doc.add("![variable circuit](variable_circuit.png)", "", "Interactive version: [variable_circuit.html](variable_circuit.html).", "")
        doc.figure(*(vdir / f"variable_circuit.{e}" for e in ("png", "svg", "html")))
    if (vdir / "variable_faithfulness.png").exists():
        doc.add("![variable circuit faithfulness](variable_faithfulness.png)", "")
        doc.figure(vdir / "variable_faithfulness.png", vdir / "variable_faithfulness.svg")
    doc.add(f"Reproduce: {doc.cmd('variable-circuit')}", "")
