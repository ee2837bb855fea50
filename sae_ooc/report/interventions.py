"""Report sections: interventions that test the story. Feature steering of the bridge (does the two-hop answer follow
the bridge features?) and rank-one fact edits (do the model's other beliefs follow an edited fact, and does causal
tracing say where an edit works?)."""

from __future__ import annotations

from sae_ooc.interventions.edit_result import EditResult, EditSettings
from sae_ooc.interventions.steer_result import SteerResult, SteerSettings
from sae_ooc.records import given, opt
from sae_ooc.report.doc import Doc, f3, pct
from sae_ooc.tasks.counterfactuals import says


# steer's prompts are test_id prompts, but eval-sae chose the bridge labels on selection prefixes that include most of their
# (h, r1) prefixes, and the steered rows and prompts covered follow those labels: every steer number is in-sample for the labels
LABELS_ON = " (labels chosen on prefixes that include most of these prompts' prefixes)"


def _ci(d) -> str:
    """ ' (low–high)' of a Share or MeanCI's 95% interval, '' where it has none."""
    if not d or d.ci95 is None:
        return ""
    lo, hi = d.ci95
    return f" ({pct(lo)}–{pct(hi)})"


def _steer_natural(st: SteerSettings) -> str:
    """What differs on a natural-language task: whole-name answers, positions as token indices of the question."""
    if not given(st.answers):
        return ""
    where = ", ".join(f"{p} = token {i}" for p, i in (st.position_index or {}).items())
    return (f" Answers are whole entity names: a prompt counts as consistent (unchanged) when its greedy answer is exactly "
            f"t(b', r2)'s (t(b, r2)'s) name; the logit change is of the name's first token. A position is the last token of its "
            f"role in the question ({where}).")


def _edit_natural(st: EditSettings) -> str:
    pos = opt(st.positions)
    if not pos:
        return ""
    shared = ("the two-hop question has the same tokens up to there, so the key is the same vector in both"
              if pos.two_hop_shares_key else "the two-hop question differs before it, so its key there is not the edited one")
    return (f" Atomic facts are asked as their first training template; the key is token {pos.key} of that prompt "
            f"(answer read at token {pos.atomic_answer}); {shared}. Answers are whole names (greedy answer exactly the name; "
            "p = the name's probability, teacher forced; KL of the first answer token's distribution).")


def steer_section(doc: Doc) -> None:
    run = doc.run
    cf, cf0, qn = says(run.cfg.task.family)
    doc.heading("steer", "Interventions: steering the bridge")
    s = doc.load_or_say(SteerResult, run.steer_dir)
    if s is None:
        return
    st = s.settings
    if not s.rows:
        doc.add(s.note or "Nothing to steer.", "")
        return
    on = f"{st.n_prompts} {st.split} {qn} prompts"
    doc.add(f"On {on}{' the model answers correctly' if st.only_correct else ''} (held out of model training; but eval-sae chose "
            "the bridge labels on selection prefixes that include most of these prompts' (h, r1) prefixes, and which rows are steered "
            "follows the labels, so every number of this section is labelled in-sample), "
            "each prompt (h, r1, r2) with bridge b gets a counterfactual bridge b' whose answer to r2 differs. **Feature steering**: "
            "at one hook and position, the SAE features eval-sae labelled bridge=b are switched off and those labelled bridge=b' "
            "switched on at their typical activation (mean where active on train prompts), the SAE's error term kept. Beside it: "
            f"the same number of random unlabelled features at matched norm ({st.random_draws} draws; mean, range over draws), the "
            "whole residual stream patched from a prompt whose bridge is b' (what *any* carrier of the bridge could do there), and "
            "two identities: feature steering with b' = b (changes nothing by construction) and the residual patched from another "
            f"prompt with the same bridge b. Shares of prompts answering {cf} (**consistent**), still {cf0} (unchanged) "
            "or something else; 95% Wilson intervals over prompts. Only prompts with some bridge=b' feature at the row are steered "
            "(n); a row with no bridge features shows the baselines on all prompts." + _steer_natural(st), "",
            "| hook @ position | n (covered) | features: consistent | unchanged | other | consistent logit change | random features: "
            "consistent | residual patch from b': consistent | residual patch from same b: unchanged | b'=b: unchanged |",
            "|---|---|---|---|---|---|---|---|---|---|")
    best = None
    for r in s.rows:
        m = r.methods
        f, rnd, rp, rps, same = m.features, m.random, m.resid_patch, m.resid_patch_same_bridge, m.features_same_bridge
        name = r.name
        on_row = f"{r.n_prompts} {st.split} prompts"
        if f:
            val = doc.number(f"steer.{name}.features_consistent", f.consistent.share, on_row + LABELS_ON, in_sample=True, spec=".1%")
            feat = (f"{val}{_ci(f.consistent)} | {pct(f.unchanged.share)} | {pct(f.other.share)} | "
                    f"{f3(f.consistent_logit_change.mean, '+.2f')} | {pct(rnd.consistent.mean)} "
                    f"({pct(rnd.consistent.min)}–{pct(rnd.consistent.max)})")
            if best is None or f.consistent.share > best[1].consistent.share:
                best = (r, f, rnd, rp)
        else:
            feat = "– | – | – | – | –"
        doc.number(f"steer.{name}.resid_patch_consistent", rp.consistent.share, on_row + LABELS_ON, in_sample=True)
        if f:
            doc.number(f"steer.{name}.random_consistent_max", rnd.consistent.max, f"{on_row}, {rnd.n_draws} draws{LABELS_ON}", in_sample=True)
            doc.number(f"steer.{name}.features_logit_change", f.consistent_logit_change.mean, on_row + LABELS_ON, in_sample=True)
        doc.add(f"| `{name}` | {r.n_prompts} ({r.covered_by_features}) | {feat} | {pct(rp.consistent.share)}{_ci(rp.consistent)} | "
                f"{pct(rps.unchanged.share)} | {pct(same.unchanged.share) if same else '–'} |")
    doc.add("")
    doc.figure(run.steer_dir / "steer.png", run.steer_dir / "steer.svg")
    doc.add("![steering](steer.png)", "")
    if best is None:
        pcs = [r.methods.resid_patch.consistent.share or 0 for r in s.rows]
        doc.add(f"**What it implies.** eval-sae labelled no feature bridge=<entity> at any steered hook and position "
                f"({', '.join(st.positions)}), so feature steering did not run: only the baselines did. The whole residual from a "
                f"b' prompt makes {pct(min(pcs))}–{pct(max(pcs))} of the prompts answer {cf}: "
                + ("the bridge is carried at some of these points, but no SAE feature is labelled with it."
                   if max(pcs) >= 0.5 else "little of the bridge is read from these points, so the bridge (if the model computes one) "
                   "lives elsewhere, e.g. at other positions of the prompt."), "")
    if best is not None:
        r, f, rnd, rp = best
        cons, rc, pc = f.consistent.share, rnd.consistent.max, rp.consistent.share
        verdict = (f"the bridge features move the answer to {cf} well beyond random features of the same size and norm"
                   if cons > rc and cons > 0.5 else
                   "above every random draw, but on a minority of prompts: the labelled features carry part of the bridge, not all of it"
                   if cons > rc and cons >= 0.1 else
                   (f"barely above random features and far below the residual patch, though it shifts the {cf} logit by "
                    f"{f3(f.consistent_logit_change.mean, '+.2f')} (a change of norm {f3(opt(f.delta_norm))} against the "
                    f"residual patch's {f3(opt(rp.delta_norm))}): the labelled features carry a small part of the bridge the model "
                    f"reads, far from enough to switch it (here {r.n_labelled_bridges} bridge values have labelled features)")
                   if cons > rc else
                   "no better than random features of the same size and norm: these labels do not pick out what the model reads")
        doc.add(f"**What it implies.** Best row `{r.name}`: feature steering makes {pct(cons)} of the prompts answer "
                f"{cf}, random features at most {pct(rc)}, the whole residual from a b' prompt {pct(pc)}: {verdict}. "
                "The residual patch bounds what any intervention at that point can do; where it is low too, the bridge is not (only) "
                "read there. The prompts are test_id prompts, held out of model training; most of their r1 prefixes are among the "
                "selection prefixes eval-sae chose the labels on, so this tests the labels as interventions, not on unseen prefixes.", "")
    doc.add(f"Reproduce: {doc.cmd('steer')}", "")


def edit_section(doc: Doc) -> None:
    run = doc.run
    cf, cf0, qn = says(run.cfg.task.family)
    doc.heading("edit", "Interventions: editing a fact, and whether localization informs editing")
    e = doc.load_or_say(EditResult, run.edit_dir)
    if e is None:
        return
    st = e.settings
    if not e.by_layer:
        doc.add(e.note or "No fact edited.", "")
        return
    if e.note:
        doc.add(f"{e.note[:1].upper()}{e.note[1:]}.", "")
    n = st.n_edits
    doc.add(f"{n} atomic train facts (h, r1) → b the model answers correctly, each edited alone into (h, r1) → b' with ROME's "
            f"closed-form rank-one update of one layer's MLP W_out (key: the MLP hidden activation at `{st.position}`; key "
            "covariance from the train prompts' keys; value by gradient descent until the model says b'), at every layer. Per "
            f"layer: **efficacy** (the fact now gives b'), **propagation** (every {qn} prompt (h, r1, r2) the model got right "
            f"before now gives {cf}: belief consistency), **specificity** (pre-edit answer kept on the head's other facts, on "
            f"{st.specificity_prompts} unrelated atomic facts and {st.specificity_prompts} unrelated {qn} prompts per "
            "edit; KL(pre ‖ post) beside), and, for the reversal family, the reverse fact (b', r1⁻¹) → h. Control: the same edit "
            "with its value change pointed in a random direction of the same norm. 95% intervals over prompts." + _edit_natural(st), "",
            "", f"Efficacy is measured on the prompt each edit was fitted on (in-sample). Most {qn} prompts an edited fact feeds are "
            f"trained {qn} facts, whose old answer was memorised as a whole; propagation to the {qn} facts held out of training "
            "(the model composes their answer) is shown apart, and the pooled propagation is labelled in-sample.", "",
            f"| layer | efficacy | propagation, all | propagation, held-out {qn} facts (n) | specificity: same head (KL) | "
            f"unrelated atomic (KL) | unrelated {qn} (KL) | reverse | random-direction control: efficacy / propagation |",
            "|---|---|---|---|---|---|---|---|---|")
    b = e.before_any_edit
    for r in e.by_layer:
        L = r.layer
        on = f"{n} edited facts at layer {L}"
        ctrl = r.random_direction_control
        ph = r.propagation_heldout
        n_trained = r.propagation_trained.n if r.propagation_trained else None
        held_text = (f"{doc.number(f'edit.layer{L}.propagation_heldout', ph.share, on + f' (their {qn} prompts held out of training)', spec='.1%')}"
                     f"{_ci(ph)} (n {ph.n})" if ph else "–")
        prop_on = on + f" (their {qn} prompts" + (f", {n_trained} of {r.propagation.n} trained {qn} facts)" if n_trained is not None else ")")
        doc.add(f"| {L} | {doc.number(f'edit.layer{L}.efficacy', r.efficacy.share, on + ' (the prompts the edits were fitted on)', in_sample=True, spec='.1%')}{_ci(r.efficacy)} | "
                f"{doc.number(f'edit.layer{L}.propagation', r.propagation.share, prop_on, in_sample=True, spec='.1%')}{_ci(r.propagation)} | "
                f"{held_text} | "
                f"{pct(r.specificity_same_head.share)} ({f3(r.kl_same_head.mean)}) | "
                f"{doc.number(f'edit.layer{L}.specificity_atomic', r.specificity_atomic.share, on, spec='.1%')} ({f3(r.kl_atomic.mean)}) | "
                f"{pct(r.specificity_two_hop.share)} ({f3(r.kl_two_hop.mean)}) | {pct(r.reverse.share)} | "
                f"{pct(ctrl.efficacy.share)} / {pct(ctrl.propagation.share)} |")
    doc.add("", f"Before any edit: {pct(b.efficacy.share if b else None)} of the facts give b', "
            f"{pct(b.propagation.share if b else None)} of their {qn} prompts give {cf}; the model answered "
            f"{pct(b.two_hop_correct_before.share if b else None)} of those {qn} prompts correctly (propagation counts only those).", "")
    doc.figure(run.edit_dir / "edit_layers.png", run.edit_dir / "edit_layers.svg", run.edit_dir / "localization.png", run.edit_dir / "localization.svg")
    doc.add("![edits by layer](edit_layers.png)", "")
    loc = e.localization
    c = loc.correlation
    tr = loc.traced_layer
    natural = given(st.positions)
    doc.add(f"**Localization vs editing.** Causal tracing of each edited fact (noise {st.trace_noise}× the entity embeddings' "
            f"std on {'every token of the head name' if natural else 'the head token'}, {st.trace_samples} samples; "
            f"p(b{chr(39) + 's name' if natural else ''}) clean {f3(loc.p_clean)}, corrupted {f3(loc.p_corrupt)}), "
            f"restoring one layer's MLP output at `{st.position}`. Mean effect by layer: "
            + ", ".join(f"L{L} {f3(v)}" for L, v in zip(st.layers, loc.mean_effect_by_layer["mlp"])) + ". Correlation over "
            "(fact, layer) points, 95% intervals from resampling facts:", "",
            "| edit success | tracing state | Pearson | Spearman | Spearman within each layer |", "|---|---|---|---|---|")
    for key, label, state in (("rewrite", "rewrite score", "MLP"), ("propagation", "propagation", "MLP"),
                              ("rewrite_vs_resid_tracing", "rewrite score", "residual"), ("propagation_vs_resid_tracing", "propagation", "residual")):
        cc = c.get(key)
        if not cc:
            continue
        p, s = cc.pearson, cc.spearman
        pv = doc.number(f"edit.localization.{key}.pearson", p.value, f"{cc.n_points} (fact, layer) points")
        doc.add(f"| {label} | {state} | {pv}{' [' + f3(p.ci95[0]) + ', ' + f3(p.ci95[1]) + ']' if p.ci95 else ''} | "
                f"{f3(s.value)}{' [' + f3(s.ci95[0]) + ', ' + f3(s.ci95[1]) + ']' if s.ci95 else ''} | "
                f"{', '.join(f3(v) for v in cc.spearman_within_layer)} |")
    doc.add("", "![localization vs editing](localization.png)", "")
    props = [r.propagation.share for r in e.by_layer if r.propagation.share is not None]
    effs = [r.efficacy.share for r in e.by_layer]
    pos = opt(st.positions)
    key_before_answer = bool(pos) and pos.key < pos.atomic_answer
    if key_before_answer:  # the key's token is not the answer position: the last layer's edit cannot reach the answer
        text = (f"**What it implies.** Efficacy is {pct(min(effs))}–{pct(max(effs))} across layers, on the prompt each edit's value was "
                "optimised for: it shows only that a layer can be made to say b' there (at the last layer it cannot, see below), "
                "so efficacy alone localizes nothing. ")
    else:
        text = (f"**What it implies.** Efficacy is {pct(min(effs))}–{pct(max(effs))} across layers (on the prompt each edit's value was "
                "optimised for, so high by construction): a rank-one edit can make *any* layer say b' at the edited prompt, so efficacy "
                "alone localizes nothing. ")
    if props:
        text += f"Propagation ranges from {pct(min(props))} to {pct(max(props))} across layers"
        if props[0] - props[-1] > 0.2:
            text += (f", highest for edits written early ({pct(props[0])} at layer {st.layers[0]}) and falling to {pct(props[-1])} at "
                     f"layer {st.layers[-1]}: the {qn} answer follows an edited fact only when the edit is written before the "
                     "layers that read the bridge from the relation position, consistent with a bridge computed there and read later. ")
        elif max(props) < 0.2:
            text += f": the {qn} answers hardly follow the edit at any layer, so the new fact is not stored where the {qn} computation reads it. "
        else:
            text += ". "
    last = bool(st.layers) and st.layers[-1] == len(e.by_layer) - 1
    text += (f"At the layer causal tracing points to, efficacy is {pct(tr.efficacy_at_traced_layer)} and propagation "
             f"{pct(tr.propagation_at_traced_layer)} (mean over layers {pct(tr.efficacy_mean_over_layers)} / "
             f"{pct(tr.propagation_mean_over_layers)})"
             + ("; tracing finds where the atomic answer is read out, not where the bridge is kept for the second hop"
                if (tr.propagation_at_traced_layer or 0) < 0.5 * (tr.propagation_mean_over_layers or 0) else "")
             + (f". An edit of the last layer's MLP at {st.position} (token {pos.key}) cannot reach the answer positions "
                f"(token {pos.atomic_answer} of the atomic prompt, {pos.two_hop_answer} of the question; no attention "
                "follows it), so efficacy and propagation there are 0 by the architecture, and wherever tracing points to the last "
                "layer the low numbers are structural"
                if pos and last else
                f". An edit of the last layer's MLP at {st.position} cannot reach r2 (no attention follows it), so propagation there "
                "is 0 by the architecture, and wherever tracing points to the last layer the low propagation is partly structural"
                if last and st.position != "r2" else "")
             + ". The pooled correlations mix layers; the within-layer Spearman columns are "
             "the comparison Hase et al. (2023) make: where they straddle 0, tracing does not tell which *facts* an edit will "
             "work for, as they found in GPT-J.")
    if all((r.p_new.mean or 0) > 0.9 for r in e.by_layer):
        text += " The rewrite score sits near its ceiling at every layer, so its correlations rest on small differences."
    doc.add(text, "", f"Reproduce: {doc.cmd('edit')}", "")
