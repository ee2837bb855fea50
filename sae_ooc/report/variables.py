"""Report section: the task-level circuit of variable nodes (features grouped by the variable they carry),
chosen on selection pairs and scored on held-out pairs beside as many random features from outside the circuit."""

from __future__ import annotations

from sae_ooc.circuits.variable_faithfulness_result import VariableCircuitFaithfulness
from sae_ooc.records import opt
from sae_ooc.report.doc import Doc, f3


def variable_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("variable", "A task-level circuit of variable nodes")
    vdir = run.variable_circuit_dir
    f = doc.load_or_say(VariableCircuitFaithfulness, vdir, "`sae-ooc variable-circuit`")
    if f is None:
        return
    sel, circ, ver = f.selection, f.circuit, f.verdict
    kind = sel.ablation
    main = f.by_ablation[kind]
    held = main.heldout
    on = f"{held.n_pairs} held-out pairs, {kind} ablation"
    doc.add(
        "Features that eval-sae labels with the same variable at the same position and hook form one node (e.g. `bridge@r1@H`); "
        "the remaining features of a (hook, position) form a `rest` node and each SAE error term its own node (the kinds used: "
        f"{', '.join(sel.kinds)}). A node is ablated as a whole: its members in the ablation's scope (active on the clean prompt; for "
        f"resample and corrupt ablation also those active on the prompt the values come from). Selection: {sel.rule}; "
        f"chosen on the selection pairs, scored on held-out pairs never used to choose.", "",
        f"**Verdict: {ver.text}**", "",
        f"- Faithfulness of the variable circuit ({circ.n_feature_nodes} SAE features in {len(circ.groups)} nodes), held out: "
        f"**{doc.number('circuit.variable.faithfulness', held.faithfulness, on)}** (95% CI over head entities {f3(held.ci95[0])} to "
        f"{f3(held.ci95[1])}); "
        f"on the selection pairs that chose it: {doc.number('circuit.variable.faithfulness_selection', main.selection.faithfulness, 'selection pairs', in_sample=True)}",
    )
    ctrl = main.random_groups
    rg = ctrl.heldout if ctrl else None
    if rg and rg.values:
        share = ctrl.share_at_same_places
        where = ("at the same places" if share in (None, 1) else
                 f"{share:.0%} at the same places, the rest where the circuit leaves features at the same hook or another")
        doc.add(f"- Control, as many random features drawn from outside the circuit ({where}; {ctrl.n_draws} draws): "
                f"{doc.number('circuit.variable.random_groups_mean', rg.mean, on)} ± {f3(rg.std)} (max {f3(rg.max)}); "
                f"{rg.n_at_least_circuit} draws at least as faithful as the circuit")
    elif rg is not None:
        doc.add(f"- Control: none; {opt(ctrl.note) or 'no random draw'}")
    vo, tf = main.variables_only, main.top_features_same_size
    if vo:
        doc.add(f"- Its {vo.n_groups} labelled variable nodes alone: {doc.number('circuit.variable.variables_only', vo.heldout, on)}")
    if tf:
        doc.add(f"- The {tf.n_features} individual features with any effect (at most as many as the circuit's, ranked by {tf.ranked_by}): {f3(tf.heldout)}")
    doc.add("", "| ablation | held-out faithfulness (95% CI over heads) | selection (in-sample) | random features outside the circuit (mean ± sd) |",
            "|---|---|---|---|")
    for k, v in f.by_ablation.items():
        h, r = v.heldout, (v.random_groups.heldout if v.random_groups else None)
        doc.add(f"| {k} | {f3(h.faithfulness)} ({f3(h.ci95[0])} to {f3(h.ci95[1])}) | {f3(v.selection.faithfulness)} | "
                f"{f3(r.mean if r else None)} ± {f3(r.std if r else None)} |")
    doc.add("")
    if (vdir / "variable_circuit.png").exists():
        doc.add("![variable circuit](variable_circuit.png)", "", "Interactive version: [variable_circuit.html](variable_circuit.html).", "")
        doc.figure(*(vdir / f"variable_circuit.{e}" for e in ("png", "svg", "html")))
    if (vdir / "variable_faithfulness.png").exists():
        doc.add("![variable circuit faithfulness](variable_faithfulness.png)", "")
        doc.figure(vdir / "variable_faithfulness.png", vdir / "variable_faithfulness.svg")
    doc.add(f"Reproduce: {doc.cmd('variable-circuit')}", "")
