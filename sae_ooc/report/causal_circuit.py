"""The report's first section, "The circuit of causal variables" (RUN/variables/variables.json's `circuit`, stage
`variables`, sae_ooc.causal.circuit): IIA of the high-level model at each node and the faithfulness of the circuit with
no remainder, each beside its controls, and one sentence saying whether it holds."""

from __future__ import annotations

from sae_ooc.causal.circuit_result import CausalCircuit, CircuitFaithfulness, ControlUnit, Cut, OtherR2
from sae_ooc.causal.result import VariablesResult
from sae_ooc.records import opt
from sae_ooc.report.doc import Doc, pct

TARGET = 0.8  # the circuit holds when every node's IIA and its no-remainder faithfulness reach this on held-out pairs
NODES = (("bridge@r1", "bridge at r1"), ("bridge@answer", "bridge at the answer position"))
CUTS = (("cut_r1", "the bridge@r1 hook only"), ("cut_answer", "the bridge@answer hook only"), ("circuit", "both (the circuit)"))


def causal_circuit_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("causal_circuit", "The circuit of causal variables")
    v = VariablesResult.load_if(run.variables_dir)
    c = v.circuit if v else None
    if not c:
        doc.add(f"Not run yet: {doc.cmd('variables', ' --force')} (a variables.json without section 2).", "")
        return
    if not c.ok:
        doc.add(f"Not built: {c.status.removeprefix('not built: ')}.", "")
        return
    n = c.n_heldout
    on = f"{n} held-out pairs, {c.n_heads} heads"
    doc.add(f"High-level model: `{c.high_level_model}`. Its nodes are units of the model: the bridge at r1 is section 1's "
            "DAS subspace, the bridge at the answer position a DAS subspace trained here by interchange from donors with "
            "another bridge, half of them asking the same r2 and half another r2'' (target t(b', r2) either way; hooks and "
            "ranks chosen on fit-valid pairs, trained on fit pairs), r2 at the answer position the span of "
            "its fit class means. **IIA** of a node: its unit interchanged from a donor whose bridge is b', the share of "
            f"held-out pairs answering the high-level model's counterfactual t(b', r2) ({on}; 95% intervals resample heads).", "")
    png = run.variables_dir / "causal_circuit.png"
    if png.exists():
        doc.figure(png, *(run.variables_dir / f for f in ("causal_circuit.svg", "causal_circuit.html", "causal_circuit.dot",
                                                          "causal_graph.json", "causal_circuit_full.json")))
        doc.add("![circuit of causal variables](causal_circuit.png)", "",
                "(Drawn by the export stage's code: also `causal_circuit.{svg,dot,html}`, `causal_graph.json` in circuit-tracer's format "
                "and `causal_circuit_full.json`; a node's effect is its held-out IIA, an edge's weight its source's IIA.)", "")
    doc.add("| node | hook | rank | IIA (unit) | residual patch there | random subspace of the rank |", "|---|---|---|---|---|---|")
    iia = {}
    for key, label in NODES:
        nd = c.nodes.get(key)
        if nd is None:
            doc.add(f"| {label} | – | – | no unit: no hook's residual patch there reaches {pct(c.patch_min)} on fit-valid pairs | | |")
            continue
        u = nd.unit
        iia[key] = u.switch
        val = doc.number(f"circuit.causal.node_iia.{key.replace('@', '_')}", u.switch, on, spec=".1%")
        doc.add(f"| {label} | `{nd.hook}` | {nd.rank} | {val}{_ci(u)} | {pct(nd.resid_patch.share)} | {_draws(nd.random)} |")
    inputs = opt(c.inputs, {})
    for key, nd in {**inputs, **({"r2@answer": c.nodes["r2@answer"]} if "r2@answer" in c.nodes else {})}.items():
        u = nd.unit
        on_k = f"{nd.n} held-out pairs of section 1's {key.split('@')[0]} rows"
        val = doc.number(f"circuit.causal.node_iia.{key.replace('@', '_')}", u.switch, on_k, spec=".1%")
        sm = nd.smallest_unit
        label = f"input {key}: its token (the whole stream)" if key in inputs else f"{key} ({nd.kind})"
        if sm:
            label += (f"; its smallest unit, DAS rank {sm.rank} at `{sm.hook}`: "
                      + doc.number(f"circuit.causal.smallest_unit_iia.{key}", sm.unit.switch, on_k, spec=".1%")
                      + f" (patch there {pct(sm.resid_patch.share)}, random {pct(sm.random.share)})")
        doc.add(f"| {label} | `{nd.hook}` | {nd.rank} | {val}{_ci(u)} | {pct(nd.resid_patch.share)} | {_draws(nd.random)} |")
    doc.number("circuit.causal.iia", opt(c.iia), f"{on}; the weaker of the two bridge nodes' IIA, donors asking the same r2 "
               "(section 1's pairs)", spec=".1%")
    if opt(c.iia_every_node) is not None:
        doc.number("circuit.causal.iia_every_node", c.iia_every_node, "held-out pairs of each node (inputs and r2 on their own "
                   "variable's pairs); the weakest node's IIA", spec=".1%")
    o = _other_r2(c)
    if o:
        val = doc.number("circuit.causal.node_iia.bridge_answer_other_r2", o.unit.switch, f"{o.n} held-out pairs, donor asks "
                         "another r2", spec=".1%")
        doc.add(f"| bridge at the answer position, the donor asking another relation r2'' | | | {val} | {pct(o.resid_patch)} "
                f"(the donor's own answer t(b', r2''): {pct(o.resid_patch_donor_answer)}) | |")
    doc.add("")
    if o:
        doc.add(f"The last row tells a bridge from an answer: the donor asks r2'' with t(b', r2'') ≠ t(b', r2); the high-level "
                f"model still answers t(b', r2). The unit answers the donor's t(b', r2'') on {pct(o.unit_donor_answer)} "
                "of these pairs, the residual patch (which carries r2'' too) on "
                f"{pct(o.resid_patch_donor_answer)}.", "")
    f = c.faithfulness or CircuitFaithfulness()
    if not f.circuit:
        doc.add(f"Faithfulness not measured: {opt(f.status, 'no bridge@answer unit')}.", "")
        _verdict(doc, c, None)
        return
    doc.add(f"**Faithfulness with no remainder.** At each chosen hook the whole residual stream is replaced by the units' "
            "clean projection plus the fit mean of everything else (each position: x → μ + WᵀW(x − μ); positions without a "
            f"unit are mean-ablated whole). {f.metric}. On {f.n} {f.measured_on}. Validity: {f.validity_check}.", "")
    doc.add("| ablated at | units kept (position: rank) | kept / faithfulness | random subspaces, same ranks | full mean ablation | "
            "identity | valid |", "|---|---|---|---|---|---|---|")
    for key, label in CUTS:
        r = getattr(f, key)
        if not r:
            continue
        units = "; ".join(f"`{h}` " + ", ".join(f"{p}: {k}" for p, k in b.items()) for h, b in r.units.items())
        u = r.unit
        if key == "circuit":
            kept = doc.number("circuit.causal.kept", u.kept, f"{f.n} held-out base questions", spec=".1%")
            if opt(u.kept_ci95):
                kept += f" ({pct(u.kept_ci95[0])}–{pct(u.kept_ci95[1])})"
            faith = doc.number("circuit.causal.faithfulness", u.faithfulness, f"{f.n} held-out base questions, logit "
                               "difference, no remainder nodes", spec=".3f")
        else:
            kept, faith = pct(u.kept), f"{u.faithfulness:.3f}" if u.faithfulness is not None else "n/a"
        rd, fm, idn = r.random, r.full_mean_ablation, r.identity
        rf = f"{rd.faithfulness:.3f}" if rd.faithfulness is not None else "n/a"
        doc.add(f"| {label} | {units} | {kept} / {faith} | {pct(rd.kept)} / {rf} | {pct(fm.kept)} | {pct(idn.kept)} | "
                f"{'yes' if r.valid else '**no**'} |")
    doc.add("")
    _verdict(doc, c, f.circuit)


def _ci(u: ControlUnit) -> str:
    return f" ({pct(u.ci95[0])}–{pct(u.ci95[1])})" if opt(u.ci95) else ""


def _draws(rnd: ControlUnit) -> str:
    return f"{pct(rnd.share)} (draws {pct(opt(rnd.min))}–{pct(opt(rnd.max))})"


def _other_r2(c: CausalCircuit) -> OtherR2 | None:
    """bridge@answer from a donor asking another r2, where any such pair was formed."""
    nd = c.nodes.get("bridge@answer")
    o = nd.other_r2 if nd else None
    return o if o and o.n else None


def _verdict(doc: Doc, c: CausalCircuit, cut: Cut | None) -> None:
    nodes = c.nodes
    low = [k for k, nd in c.every_node().items() if (nd.unit.share or 0) < TARGET]
    faith = cut.unit.faithfulness if cut else None
    kept = cut.unit.kept if cut else None
    o = _other_r2(c)
    bridge_like = not o or (o.unit.share or 0) >= TARGET
    holds = (cut is not None and cut.valid and not low and "bridge@answer" in nodes and bridge_like and faith is not None and faith >= TARGET
             and kept is not None and kept >= TARGET)
    if holds:
        doc.add(f"**The circuit holds**: every node's IIA and the circuit with no remainder nodes keep at least {TARGET:.0%} on "
                "held-out pairs, under an ablation that passes its validity check.", "")
        return
    why = []
    if "bridge@answer" not in nodes:
        why.append("there is no bridge@answer unit")
    every = c.every_node()
    why += [f"{k}'s IIA is {pct(every[k].unit.share)}" for k in low]
    if o and (o.unit.share or 0) < TARGET:
        carries = ("carries the donor's answer more than its bridge" if (opt(o.unit_donor_answer) or 0) > o.unit.switch
                   else "separates the bridge from r2 only in part")
        why.append(f"bridge@answer interchanged from a donor asking another r2 gives t(b', r2) on only {pct(o.unit.switch)} "
                   f"of held-out pairs (the donor's own answer t(b', r2'') on {pct(o.unit_donor_answer)}): the unit "
                   + carries)
    if cut is not None and not cut.valid:
        why.append("the ablation fails its validity check")
    if faith is not None and (faith < TARGET or (kept or 0) < TARGET):
        why.append(f"with no remainder nodes it keeps {pct(kept)} of held-out answers (logit-difference faithfulness {faith:.3f})")
    met = ""
    if faith is not None and kept is not None and (kept >= TARGET and faith >= TARGET) and not low:
        met = (f" What it does reach: with no remainder nodes it keeps {pct(kept)} of held-out answers (logit-difference "
               f"faithfulness {faith:.3f}) and every node's IIA on donors asking the same r2 is at least {TARGET:.0%}.")
    doc.add(f"**The circuit does not hold** (target: {TARGET:.0%} on held-out pairs): " + "; ".join(why) + "." + met, "")
