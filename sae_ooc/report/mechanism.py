"""The report's opening account of the mechanism, generated from RUN/analyze/*.json: which layer resolves the bridge
at r1, which heads move it to r2, where the answer appears, and whether failures are a too-late bridge. Every
sentence carries the number that backs it and the measurement it comes from; where the evidence is missing or
ambiguous the sentence says "not determined" instead of guessing."""

from __future__ import annotations

from sae_ooc.analyses.result import ANALYSIS_RESULTS
from sae_ooc.report.doc import Doc, f3



def _on(r) -> str:
    return f"{r.n_sample} held-out test_id prompts"


# under causal attention the r1 state of (h, r1, r2) is that of the atomic prompt (h, r1), which the model was trained on
LENS_R1 = " (at r1: their atomic prefixes (h, r1), train examples)"
DECODED = 0.5  # a probe "decodes" a variable at held-out accuracy >= this, and above all its controls
READ = 0.5  # the logit lens "reads" a token when it is ranked first on at least this share of prompts
MATTERS = 0.5  # a patched state "carries" the answer when it recovers at least this share of the metric gap


def analyses(run) -> dict:
    """{name: its typed result (sae_ooc.analyses.result) or None} for every analysis."""
    return {c.NAME: c.load_if(run.analyze_dir) for c in ANALYSIS_RESULTS}


def layer_name(hook: str) -> str:
    return hook.replace("blocks.", "layer ").replace(".hook_", " ")


def bridge_at_r1(doc: Doc, a: dict) -> list[str]:
    out = []
    pr = a["probes"]
    if pr and "r1" in pr.positions:
        j = pr.positions.index("r1")
        b = pr.bridge
        first = next((i for i, h in enumerate(pr.hooks) if b.heldout_acc[i][j] is not None and b.above_controls[i][j]
                      and b.heldout_acc[i][j] >= DECODED), None)
        if first is None:
            i = max(range(len(pr.hooks)), key=lambda k: b.heldout_acc[k][j] or 0.0)
            on = f"{b.n_heldout[i][j]} held-out prefixes at r1"
            out.append(f"Which layer resolves the bridge at r1: not determined; no layer's linear probe decodes it from held-out prefixes "
                       f"above its controls with accuracy >= {DECODED} (best: {layer_name(pr.hooks[i])}, "
                       f"{doc.number('mechanism.bridge_r1.best_probe', b.heldout_acc[i][j], on)} on {on}, best control "
                       f"{f3(b.control_max_acc[i][j])}).")
        else:
            i = first
            n_r1 = f"{b.n_heldout[i][j]} held-out prefixes at r1"
            above = next((k for k in range(len(pr.hooks)) if b.heldout_acc[k][j] is not None and b.above_controls[k][j]), i)
            early = (f"; it is above its controls already in the stream entering {layer_name(pr.hooks[above])} "
                     f"({f3(b.heldout_acc[above][j])}), so the first hop is resolved over more than one block" if above < i else "")
            out.append(f"The bridge is first linearly decodable at r1 (held-out accuracy ≥ {DECODED}, above every control) in the stream "
                       f"entering {layer_name(pr.hooks[i])}: held-out probe accuracy "
                       f"{doc.number('mechanism.bridge_r1.probe_acc', b.heldout_acc[i][j], n_r1)} "
                       f"against {f3(b.control_max_acc[i][j])} for the best of its controls (random-init model, step-0 checkpoint, "
                       f"shuffled labels){early}. These are the analyses' lighter probes; eval-sae's ({doc.ref('sae')}) are trained longer "
                       "on the same prefixes and can differ by a few points. A probe reads; it does not show the model uses what it reads.")
    ll = a["logit-lens"]
    if ll and ll.bridge is not None:  # None: the question has no bridge (the reversal family's)
        top = [row[ll.role_index("r1")] for row in ll.bridge.top1]
        first = next((s for s, v in enumerate(top) if v >= READ), None)
        if first is None:
            out.append(f"The logit lens never ranks the bridge first at r1 (at most {doc.number('mechanism.bridge_r1.lens_top1_max', max(top), _on(ll) + LENS_R1, in_sample=True)} "
                       f"of prompts): the bridge at r1 is not in the unembedding's basis (no tuned lens; see the probes).")
        else:
            out.append(f"Read through the unembedding, the bridge is ranked first at r1 from state {ll.states[first]} on "
                       f"{doc.number('mechanism.bridge_r1.lens_top1', top[first], _on(ll) + LENS_R1, in_sample=True)} of prompts (logit "
                       "lens; at r1 the model's own next-token guess is the first hop's tail, which is the bridge; the r1 state of a test_id "
                       "prompt is that of its atomic prompt (h, r1), a train example, so this is in-sample).")
    return out


def movers(doc: Doc, a: dict) -> list[str]:
    at = a["attention"]
    if not at:
        return []
    on = f"{at.n_prompts} held-out test_id pairs"
    ans = at.answer_role()
    if not at.movers:
        best = max(at.heads, key=lambda h: h.attn_r2_to_r1)
        return [f"Which heads move the bridge from r1 to {ans}: not determined; no head passes the rule ({at.mover_rule}); the head "
                f"attending most from {ans} to r1 is {best.head} ({f3(best.attn_r2_to_r1)} of its attention, patching its output "
                f"recovers {f3(best.z_patch_at_r2_recovered)} of the gap)."]
    parts = []
    for h in (x for x in at.heads if x.mover):
        # the rule picks heads by both numbers on these same pairs: both are in-sample
        parts.append(f"{h.head} ({ans} attends to r1 with weight "
                     f"{doc.number('mechanism.mover.' + h.head + '.attention', h.attn_r2_to_r1, on, in_sample=True)}; "
                     f"patching its output at {ans} clean -> corrupted recovers "
                     f"{doc.number('mechanism.mover.' + h.head + '.patch', h.z_patch_at_r2_recovered, on, in_sample=True)} of the {at.metric} gap)")
    joint = at.movers_joint_recovered
    tail = (f" Patched together, their outputs at {ans} recover {doc.number('mechanism.movers.joint_patch', joint, on, in_sample=True)} of the gap "
            "(the heads were picked by their patching effect on these same pairs)." if joint is not None else "")
    return [f"Heads passing the mover rule ({at.mover_rule}), candidates for moving the bridge from r1 to {ans} (no path patching "
            f"isolates r1 as their source): {'; '.join(parts)}.{tail}"]


def answer(doc: Doc, a: dict) -> list[str]:
    out = []
    ll, pa, dl = a["logit-lens"], a["patching"], a["dla"]
    if ll:
        top = [row[ll.role_index("answer")] for row in ll.answer.top1]
        first = next((s for s, v in enumerate(top) if v >= READ), None)
        at = ll.answer_role()
        out.append(f"The answer appears at {at} through the logit lens from state {ll.states[first]}: ranked first on "
                   f"{doc.number('mechanism.answer_r2.lens_top1', top[first], _on(ll))} of prompts"
                   + (f" ({f3(top[first - 1])} one state earlier)." if first > 0 else ".") if first is not None else
                   f"Where the answer appears: not determined by the logit lens; it never ranks the answer first at {at} on {READ:.0%} of prompts "
                   f"(at most {doc.number('mechanism.answer_r2.lens_top1_max', max(top), _on(ll))}).")
    if pa:
        on = f"{pa.n_prompts} held-out test_id pairs"
        col = [row[pa.role_index("answer")] for row in pa.kinds["resid_pre"].normalised]
        first = next((l for l, v in enumerate(col) if v is not None and v >= MATTERS), None)
        r1 = [row[pa.role_index("r1")] for row in pa.kinds["resid_pre"].normalised]
        at = pa.answer_role()
        last_r1 = max((l for l, v in enumerate(r1) if v is not None and v >= MATTERS), default=None)
        if first is not None:
            out.append(f"Patching the clean residual stream into the corrupted run at {at} restores the answer from layer {first} on "
                       f"({doc.number('mechanism.patch_r2_first', col[first], on)} of the {pa.metric} gap"
                       + (f"; {f3(col[first - 1])} at layer {first - 1}" if first > 0 else "") + ")"
                       + (f", and at r1 it does up to layer {last_r1} ({doc.number('mechanism.patch_r1_last', r1[last_r1], on)}): "
                          f"the information crosses from r1 to {at} between layers {last_r1} and {first}." if last_r1 is not None else "."))
        elif last_r1 is not None and last_r1 == len(r1) - 1:
            best = max(range(len(col)), key=lambda l: col[l] if col[l] is not None else -1)
            out.append(f"Patching the clean residual stream into the corrupted run still recovers {doc.number('mechanism.patch_r1_last', r1[last_r1], on)} "
                       f"of the {pa.metric} gap at r1 entering the last layer ({last_r1}), while at {at} it recovers at most "
                       f"{doc.number('mechanism.patch_r2_max', col[best], on)} (layer {best}): most of the information crosses from r1 to {at} in "
                       "the last layer.")
        else:
            out.append(f"Patching the residual stream at {at} never recovers {MATTERS:.0%} of the gap at any layer entering a block: where the "
                       "answer forms is not determined by patching.")
    tr = a["causal-tracing"]
    if tr:
        cells = [(tr.resid[l][p], l, p) for l in range(len(tr.resid)) for p in range(len(tr.resid[0]))
                 if not (l == 0 and p in (tr.subject_pos if isinstance(tr.subject_pos, list) else [tr.subject_pos]))]
        ie, l, p = max(cells)
        on = f"{tr.n_prompts} held-out test_id prompts x {tr.samples} noise draws"
        out.append(f"Causal tracing (head entity noised): restoring one clean state recovers most at {tr.roles[p]} entering layer {l}, "
                   f"{doc.number('mechanism.tracing.max_ie', ie, on)} of p(answer) (total effect {f3(tr.total_effect)}).")
    if dl:
        comps = sorted(dl.components, key=lambda c: -c.answer_minus_corrupt)
        c = comps[0]
        total = sum(x.answer_minus_corrupt for x in dl.components)
        out.append(f"Directly, the largest push toward the answer over the corrupted answer comes from {c.component} "
                   f"({doc.number('mechanism.dla.top', c.answer_minus_corrupt, _on(dl))} "
                   f"of a total direct logit difference of {f3(total)}).")
    return out


def back_patching(doc: Doc, a: dict) -> list[str]:
    bp = a["back-patching"]
    if not bp or not bp.test_id:
        return []
    ch, t = bp.chosen, bp.test_id
    if ch is None:
        v = bp.valid_id
        return [f"Back-patching: no later-to-earlier patch fixes any of the {v.n_failures if v else 0} valid_id failures, so none is chosen; "
                f"the best patch per test_id prompt fixes at most {f3(t.fixed_by_any_patch_upper_bound)} of its {t.n_failures} "
                "failures (an upper bound chosen on the prompt itself); whether failures are a too-late bridge: not determined."]
    if not t.n_failures:
        return [f"Back-patching: the model fails on no test_id prompt, so whether failures are a too-late bridge is not determined."]
    on = f"{t.n_failures} test_id failures"
    fixed = t.chosen_fixed
    n_valid = bp.valid_id.n_failures if bp.valid_id else None
    verdict = ("so failures are largely a too-late resolution of the bridge" if fixed >= 0.5 else
               f"so whether failures are a too-late bridge is not determined (the patch was chosen on {n_valid} valid_id failures)")
    return [f"Back-patching the {ch.position} stream of state {ch.src} into layer {ch.dst} (chosen on valid_id failures) fixes "
            f"{doc.number('mechanism.backpatch.test_id_fixed', fixed, on)} of test_id failures while breaking {f3(t.chosen_breaks_correct)} of "
            f"correct answers; the best patch per prompt fixes at most {f3(t.fixed_by_any_patch_upper_bound)} (an upper bound chosen on "
            f"the prompt itself); {verdict}."]


def mechanism_section(doc: Doc) -> None:
    """The opening summary (placed right after the title)."""
    a = analyses(doc.run)
    doc.heading("mechanism", "The mechanism in brief")
    if not any(a.values()):
        doc.add(f"The mechanistic analyses have not been run: {doc.cmd('analyze')}.", "")
        return
    sentences = bridge_at_r1(doc, a) + movers(doc, a) + answer(doc, a) + back_patching(doc, a)
    doc.add(f"Generated from the analyses of {doc.ref('analyses')}; each sentence names its measurement, and says *not determined* where the "
            "evidence does not decide.", "")
    doc.add(*(f"- {s}" for s in sentences), "")
