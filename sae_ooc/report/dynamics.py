"""Report section: training dynamics (`sae-ooc dynamics`), when it has been run."""

from __future__ import annotations

from sae_ooc.dynamics.result import Answers, Checkpoint, DynamicsResult, Probe, Readable
from sae_ooc.records import given, opt
from sae_ooc.report.doc import Doc, f3
from sae_ooc.tasks.families import answered
from sae_ooc.viz.dynamics_plots import read_at

LEARNED = 0.9  # atomic_test accuracy from which the atomic facts count as learned


def _best(probes: dict[str, dict[str, Probe]], pos: str) -> tuple[str | None, Probe | None]:
    cands = [(h, r[pos]) for h, r in probes.items() if pos in r and r[pos].heldout_acc is not None]
    return max(cands, key=lambda c: c[1].heldout_acc, default=(None, None))


def _used(doc: Doc, res: DynamicsResult, pts: list[Checkpoint], ans: Answers, rd: Readable | None) -> None:
    """When the bridge becomes used (the DAS interchange switches answers), beside when a probe first reads it."""
    ctl, used = res.control, opt(ans.bridge_first_used)
    on = f"{ctl.n_heldout_pairs} held-out pairs"
    caveat = (f"A late-layer probe of b at {ctl.position} reads the atomic answer the model was trained to predict there (the "
              f"prompt (h, {ctl.position}) is an atomic fact): readable there says the atomic fact is learned; the interchange "
              "says whether the second hop uses it.")
    if used is None:
        doc.add(f"No checkpoint's rank-{ctl.rank} DAS subspace at {ctl.position} switched any held-out answer: the bridge is "
                f"never shown *used* there ({on}). " + caveat, "")
        return
    h = used.hook
    last = next(p for p in reversed(pts) if p.control).control[h]
    def order(step: int) -> str:
        return "before" if step < used.step else "at the same checkpoint as" if step == used.step else "after"

    when = "" if rd is None else f"; a probe first reads it at step {rd.step} (`{rd.hook}`), {order(rd.step)} it is used"
    th = res.readable_threshold
    probe = Probe(heldout_acc=None, shuffled_acc=None, majority_acc=None, n_heldout=0, heldout_ci95=None)  # not measured
    same = next((p.step for p in pts if p.step > 0 and (p.probes.get(h, {}).get(ctl.position, probe).heldout_acc or 0) >= th), None)
    if same is not None:
        when += f", and the probe at `{h}` itself reaches held-out accuracy {th} at step {same}, {order(same)} it is used"
    doc.add(f"**Used, not only readable**: per checkpoint, a rank-{ctl.rank} DAS subspace at `{h}` {ctl.position} (fitted on "
            f"the fit prefixes' pairs, {ctl.das_steps} steps from the class means' principal directions) is interchanged "
            f"from a donor on {on}. Its switch rate to t(b', r2) first reaches half its final value at step "
            f"{doc.number('dynamics.bridge_used_step', used.step, on + ', per checkpoint', spec='.0f')} (final "
            f"{doc.number('dynamics.final_das_switch', last.das, on)}"
            + (f", 95% interval over head entities {f3(last.das_ci95[0])}–{f3(last.das_ci95[1])}" if last.das_ci95 else "")
            + "; residual patch "
            f"{doc.number('dynamics.final_resid_patch_switch', last.resid_patch, on)}, random rank-{ctl.rank} subspaces "
            f"{doc.number('dynamics.final_random_switch', last.random, on)}){when}. " + caveat, "")
    _used_answer(doc, res, pts, ans, on)


def _used_answer(doc: Doc, res: DynamicsResult, pts: list[Checkpoint], ans: Answers, on: str) -> None:
    """The bridge at the answer position, where the second hop reads it: the variables stage's bridge@answer DAS per checkpoint."""
    ctl = res.control
    at = opt(ctl.answer_position)
    if at is None or not any(p.control_answer for p in pts):
        return
    used = opt(ans.bridge_first_used_answer)
    if used is None:
        doc.add(f"At the answer position ({at}) no checkpoint's rank-{ctl.rank} bridge@answer DAS subspace (fitted where the residual "
                f"patch there switches at least {opt(ctl.patch_min)} of the fit-valid pairs) switched a held-out answer ({on}).", "")
        return
    h = used.hook
    last = next(p for p in reversed(pts) if p.control_answer).control_answer[h]
    doc.add(f"**At the answer position** ({at}), where the second hop reads the bridge, the variables stage's bridge@answer unit "
            f"(a rank-{ctl.rank} DAS subspace at `{h}`, half its training donors asking another relation so that it learns the "
            f"bridge, not the answer) refitted per checkpoint first reaches half its final switch rate at step "
            f"{doc.number('dynamics.bridge_used_answer_step', used.step, on + ', per checkpoint', spec='.0f')} (final "
            f"{doc.number('dynamics.final_das_switch_answer', last.das, on)}; residual patch at {at} "
            f"{doc.number('dynamics.final_resid_patch_switch_answer', last.resid_patch, on)}).", "")


def dynamics_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("dynamics", f"Training dynamics: when does the bridge become readable, and when does {answered(run.cfg.task.family)} appear?")
    res = doc.load_or_say(DynamicsResult, run.dynamics_dir, not_run="Not run (a separate command, not part of the pipeline)")
    if res is None:
        return
    pts, rise, ans = res.checkpoints, res.rise, res.answers
    n = res.n_checkpoints
    v, t = rise["valid_id"], rise["test_id"]
    doc.add(f"{len(pts)} checkpoints: {n.saved} saved by train (log-spaced, with step 0, the random initialisation) and "
            f"{n.replayed} replayed exactly from the nearest saved one across the window where valid_id accuracy rises"
            + (f" (steps {v.start}–{v.end}); valid_id reaches half its rise at step "
               f"{doc.number('dynamics.valid_id_rise_step', v.moment, 'valid_id, periodic evaluations', in_sample=True, spec='.0f')} "
               "(it chose where checkpoints were added)" if v.found else "; valid_id never rose") + ". "
            + (f"test_id (only reported) reaches half its rise at step "
               f"{doc.number('dynamics.test_id_rise_step', t.moment, 'test_id, periodic evaluations', spec='.0f')}." if t.found
               else "test_id accuracy never rose."), "")
    rd = ans.bridge_first_readable
    if rd:
        order = {True: "**before**", False: "**not before**", None: "(no test_id rise to compare)"}[ans.bridge_readable_before_composition]
        doc.add(f"A linear probe (fit on selection prefixes, scored on held-out prefixes) first reads the bridge entity at step "
                f"{doc.number('dynamics.bridge_readable_step', rd.step, 'held-out prefixes, per checkpoint', spec='.0f')} in "
                f"`{rd.hook}` at {rd.position} (held-out accuracy {doc.number('dynamics.bridge_readable_acc', rd.heldout_acc, 'held-out prefixes')}, "
                f"its 95% interval above the shuffled-label probe and the step-0 model's probe): {order} test_id reaches half its rise"
                + "".join(f" (at that checkpoint test_id is {f3(c.accuracy['test_id'])} and atomic_test {f3(c.accuracy['atomic_test'])}: "
                          + ("the bridge becomes readable as the atomic facts are learned)" if c.accuracy["atomic_test"] >= LEARNED
                             else f"the atomic facts are not learned yet, atomic_test below {LEARNED})")
                          for c in pts if c.step == rd.step and "test_id" in c.accuracy) + ".", "")
    else:
        doc.add("No probe read the bridge (held-out accuracy ≥ 0.5 above its controls) at any checkpoint.", "")
    if res.control:
        _used(doc, res, pts, ans, rd)
    last = pts[-1]
    n_prompts, n_pairs = res.n_prompts_logit_lens, res.n_patch_pairs
    parts = []
    r1, at = read_at(res)  # the layout's names: r1 and the answer position (the toy's r2, a natural task's last)
    first = "(the first token of its name) " if given(res.targets) else ""
    for pos in (r1, at):
        h, r = _best(last.probes, pos)
        if r is not None:
            on = f"{r.n_heldout} held-out prefixes"
            parts.append(f"bridge probe at {pos}: best `{h}` {doc.number(f'dynamics.final_bridge_probe_{pos}', r.heldout_acc, on)} "
                         f"(shuffled labels {doc.number(f'dynamics.final_bridge_probe_{pos}_shuffled', r.shuffled_acc, on)})")
    ll = last.logit_lens.series[f"bridge@{r1}"].top1
    best_layer = max(range(len(ll)), key=ll.__getitem__)
    parts.append(f"logit lens: the bridge {first}is the top token at {r1} after `{last.logit_lens.labels[best_layer]}` on "
                 f"{doc.number('dynamics.final_logit_lens_bridge_top1', ll[best_layer], f'{n_prompts} test_id prompts')} of prompts")
    pk = last.patching.peak
    if pk:
        head = "head position" if not first else "head entity's tokens"
        parts.append(f"resid_pre patching peak ({head} left out{'; first answer tokens' if first else ''}) "
                     f"{doc.number('dynamics.final_patching_peak', pk.value, f'{n_pairs} test_id pairs')} at layer {pk.layer}, {pk.position}"
                     + (f" ({same} of the pairs' two answers share their first token and add nothing to either run)"
                        if (same := res.targets and res.targets.n_patch_pairs_same_first_token) else ""))
    doc.add(f"At the last checkpoint (step {last.step}): " + "; ".join(parts) + ".", "",
            "![training dynamics](dynamics.png)", "",
            "The logit lens reads each layer's residual stream through the final layer norm and unembedding as they are (no tuned "
            "lens): a bridge that is linearly present but not in the unembedding's basis shows in the probes, not here.", "",
            f"Reproduce: {doc.cmd('dynamics')}", "")
    doc.figure(run.dynamics_dir / "dynamics.png", run.dynamics_dir / "dynamics.svg")
