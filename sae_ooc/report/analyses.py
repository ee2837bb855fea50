"""Report section: the mechanistic analyses (RUN/analyze/), one subsection each with its headline number, its
figure and the command that reproduces it."""

from __future__ import annotations

from sae_ooc.analyses.result import (
    AnswersResult,
    AttentionResult,
    BackPatchingResult,
    DlaResult,
    LogitLensResult,
    PatchingResult,
    ProbesResult,
    TracingResult,
)
from sae_ooc.records import opt
from sae_ooc.report.doc import Doc, f3
from sae_ooc.report.mechanism import analyses, layer_name

TITLES = {"attention": "Attention patterns", "logit-lens": "Logit lens", "patching": "Activation patching",
          "causal-tracing": "Causal tracing", "probes": "Linear probes", "dla": "Direct logit attribution",
          "back-patching": "Back-patching", "answers": "What the model answers"}


def _attention(doc: Doc, r: AttentionResult) -> None:
    on = f"{r.n_prompts} held-out test_id prompts"
    best = max(r.heads, key=lambda h: h.attn_r2_to_r1)
    doc.add(f"Mean attention of every head by token role, and {len(r.examples)} prompts one by one. Movers ({r.mover_rule}): "
            f"{', '.join(r.movers) or 'none'}. The head attending most from {r.answer_role()} to r1 is {best.head}: "
            f"{doc.number('analyze.attention.max_r2_to_r1', best.attn_r2_to_r1, on)} (sd over prompts {f3(best.attn_r2_to_r1_std)}); "
            f"patching its output at {r.answer_role()} recovers {f3(best.z_patch_at_r2_recovered)} of the gap.")


def _logit_lens(doc: Doc, r: LogitLensResult) -> None:
    on = f"{r.n_prompts} held-out test_id prompts"
    ans = [row[r.role_index("answer")] for row in r.answer.top1]
    bridge = ("" if r.bridge is None else  # None: the question has no bridge (the reversal family's)
              f"Share of prompts ranking the bridge first at r1, by state ({', '.join(r.states)}): "
              f"{', '.join(f3(x, '.2f') for x in (row[r.role_index('r1')] for row in r.bridge.top1))}; ")
    doc.add(f"{bridge}Share ranking the answer first at {r.answer_role()}, by state ({', '.join(r.states)}): {', '.join(f3(x, '.2f') for x in ans)} (final: {doc.number('analyze.logit_lens.final_accuracy', r.final_accuracy, on)}, "
            f"the model's accuracy on these prompts). Caveat: {r.caveat}.")


def _patching(doc: Doc, r: PatchingResult) -> None:
    on = f"{r.n_prompts} held-out test_id pairs"
    rp = r.kinds["resid_pre"].normalised
    doc.add(f"Clean -> corrupted patching (corrupted prompt h' r1 r2 with another bridge and answer, `circuits.pairs`); metric {r.metric}: "
            f"clean {doc.number('analyze.patching.clean', r.clean, on)}, corrupted {f3(r.corrupt)}. Share of the gap recovered by "
            f"resid_pre at r1 per layer: {', '.join(f3(row[r.role_index('r1')], '.2f') for row in rp)}; at {r.answer_role()}: "
            f"{', '.join(f3(row[r.role_index('answer')], '.2f') for row in rp)}. "
            "The resid_pre heatmap equals `transformer_lens.patching.get_act_patch_resid_pre` on the same pairs (tests/test_analyze.py).")


def _tracing(doc: Doc, r: TracingResult) -> None:
    on = f"{r.n_prompts} held-out test_id prompts x {r.samples} noise draws"
    subject = r.subject_pos if isinstance(r.subject_pos, list) else [r.subject_pos]
    cells = [(r.resid[l][p], l, p) for l in range(len(r.resid)) for p in range(len(r.resid[0])) if not (l == 0 and p in subject)]
    ie, l, p = max(cells)
    doc.add(f"Noise of {f3(r.noise_std)} ({r.noise_scale} x the head embeddings' std) on the head entity drops p(answer) from "
            f"{doc.number('analyze.tracing.p_clean', r.p_clean, on)} to {f3(r.p_corrupt)} (total effect {f3(r.total_effect)}). "
            f"Largest indirect effect of one restored resid_pre state, the embedding itself aside: layer {l} at {r.roles[p]}, "
            f"{doc.number('analyze.tracing.max_ie', ie, on)}; MLP and attention outputs restored in windows of {r.window} layers.")


def _probes(doc: Doc, r: ProbesResult) -> None:
    rows = ["| variable | position | " + " | ".join(layer_name(h) for h in r.hooks) + " |", "|---|---|" + "---|" * len(r.hooks)]
    for v in ("head", "bridge", "answer"):
        g = getattr(r, v)
        for j, pos in enumerate(r.positions):
            if all(g.heldout_acc[i][j] is None for i in range(len(r.hooks))):
                continue
            cells = []
            for i in range(len(r.hooks)):
                a, c = g.heldout_acc[i][j], g.control_max_acc[i][j]
                cells.append("—" if a is None else f"{f3(a, '.2f')} ({f3(c, '.2f')}){'*' if g.above_controls[i][j] else ''}")
            rows.append(f"| {v} | {pos} | " + " | ".join(cells) + " |")
    doc.add(f"Held-out probe accuracy, best control in brackets (random-init model{', step-0 checkpoint' if r.has_step0 else ''}, "
            f"shuffled labels; {r.n_controls} each); * = above every control (95% Wilson intervals apart). Rows: {r.split}. The head "
            "entity at its own position is never decodable on held-out prefixes by construction (a held-out head prefix is an entity no "
            "selection prefix has).", "", *rows)
    if r.answer_at_head:
        _answer_at_head(doc, r.answer_at_head)


def _answer_at_head(doc: Doc, a: dict) -> None:
    """The family's directions (reversal: trained (a, r) -> b, reversed (b, r⁻¹) -> a): the answer probed at the head's
    position and at the answer position."""
    if "directions" not in a:
        doc.add("", f"The answer at the head's position: {a.get('note', 'not measured')}.")
        return
    hooks = a["hooks"]
    rows = ["| question | answer read at | " + " | ".join(layer_name(h) for h in hooks) + " |", "|---|---|" + "---|" * len(hooks)]
    for name, d in a["directions"].items():
        on = f"{d['n_heldout']} {name} questions ({d['scored_on']}), fitted on {d['n_fit']}"
        for p in a["positions"]:
            cells = []
            for h in hooks:
                x, s, rnd = d["acc"][h][p], d["shuffled_acc"][h][p], d["random_model_acc"][h][p]
                cells.append(f"{doc.number(f'analyze.answer_at_head.{name}.{p}.{layer_name(h)}', x, on, spec='.3f')} "
                             f"({f3(max(v for v in (s, rnd) if v is not None) if s is not None or rnd is not None else None)})")
            rows.append(f"| {name} | {'the head' if p == 'head' else 'the answer position'} | " + " | ".join(cells) + " |")
    doc.add("", "**The answer at the head's position** (the family's directions; the reversed question's head is b, its answer "
            "a): a ridge probe from the residual onto the trained model's unembedding of the answer, read out as the nearest "
            "entity, one probe per relation (at the head's position the model has not seen the relation), fitted on trained "
            "questions and scored on held-out ones (the reversed direction: on test_id, the held-out inverses; the trained "
            "direction: on the questions of held-out head entities). Best control in brackets: the same probe on shuffled fit "
            f"labels and on a random-init model; chance {f3(a['chance'])}. {a['method']}.", "", *rows)


def _dla(doc: Doc, r: DlaResult) -> None:
    on = f"{r.n_prompts} held-out test_id prompts"
    top = sorted(r.components, key=lambda c: -abs(c.answer_minus_corrupt))[:4]
    doc.add("Largest direct contributions to logit(t2) - logit(t2') at r2: " + "; ".join(
        f"{c.component} {f3(c.answer_minus_corrupt)} ± {f3(c.answer_minus_corrupt_std)}" for c in top)
        + f". The components plus b_O sum to the logit difference minus b_U: {doc.number('analyze.dla.sum', r.check.sum_diff, on)} "
        f"vs {f3(r.check.logit_diff_minus_bU)} (ln_final folded into the unembedding).")


def _back_patching(doc: Doc, r: BackPatchingResult) -> None:
    ch = r.chosen
    parts = []
    for s in ("valid_id", "test_id", "test_ood_sys", "test_unanswerable"):
        d = getattr(r, s)
        if d:
            parts.append(f"{s}: accuracy {f3(d.accuracy)}, {d.n_failures} failures, the chosen patch fixes {f3(opt(d.chosen_fixed))} "
                         f"and breaks {f3(opt(d.chosen_breaks_correct))} of correct answers; best patch per prompt (upper bound) "
                         f"{f3(d.fixed_by_any_patch_upper_bound)}")
    tid = r.test_id
    doc.add(("Patch chosen on the valid_id failures: " + (f"{ch.position} state {ch.src} into layer {ch.dst}" if ch else "none (no failures)")
             + ". " + "; ".join(parts) + ". Headline: share of test_id failures fixed, "
             + doc.number("analyze.back_patching.test_id_fixed", opt(tid.chosen_fixed) if tid else None,
                          f"{tid.n_failures if tid else None} test_id failures")
             + " (Biran et al. 2024 report up to 66% in LLMs, as a best-per-prompt share)."))


def _answers(doc: Doc, r: AnswersResult) -> None:
    parts = []
    for s, d in r.splits.items():
        if not d:
            continue
        top = sorted(((d["share"][c], c) for c in r.classes if d["share"][c] > 0), reverse=True)[:3]
        parts.append(f"{s} ({d['n']} prompts): " + ", ".join(
            f"{c} {doc.number(f'analyze.answers.{s}.{c}', x, str(d['n']) + ' ' + s + ' prompts')} (chance {f3(d['chance'][c])})"
            for x, c in top))
    doc.add("Each analysed prompt's greedy answer in the first class it falls in (correct; the tail of the inverse relation's "
            "fact about the head, where relations have inverses; another trained tail of the head; the head itself; train's most "
            f"frequent answer, {r.most_frequent_answer}; a trained tail of the same relation; another answer of the task's questions; "
            "another entity; another token), against the share a uniformly random entity would fall in. " + "; ".join(parts) + ".")


SECTIONS = {"attention": _attention, "logit-lens": _logit_lens, "patching": _patching, "causal-tracing": _tracing,
            "probes": _probes, "dla": _dla, "back-patching": _back_patching, "answers": _answers}


def analyses_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("analyses", "Mechanistic analyses")
    a = analyses(run)
    if not any(a.values()):
        doc.add(f"Not run yet: {doc.cmd('analyze')}.", "")
        return
    for i, (name, r) in enumerate(a.items(), 1):
        doc.subheading("analyses", i, TITLES[name])
        if r is None:
            doc.add(f"Not run yet: {doc.cmd('analyze ' + name)}.", "")
            continue
        SECTIONS[name](doc, r)
        doc.add("", f"![{name}]({name}.png)", "", f"Reproduce: {doc.cmd('analyze ' + name)} ({r.seconds} s here; "
                f"numbers in [{name}.json]({name}.json)).", "")
        doc.figure(*(run.analyze_dir / f"{name}.{e}" for e in ("png", "svg", "json")))
