"""Report section: the SAEs, and where the bridge entity becomes readable, every number on held-out prefixes
beside its controls (a random-init model, the step-0 checkpoint, shuffled labels)."""

from __future__ import annotations

from sae_ooc.records import opt
from sae_ooc.report.doc import Doc, f3, pct
from sae_ooc.saes.dead import DEAD_ON
from sae_ooc.saes.metrics_result import Reconstruction, SaeEvalMetrics, SaeTrainMetrics
from sae_ooc.saes.store import hook_sort_key
from sae_ooc.report.standard import standard_section

PROBE_VARIABLE = "bridge@r1"  # the headline: is the bridge resolved at r1, where only (h, r1) has been seen?


def _rows(doc: Doc) -> list[tuple[str, SaeTrainMetrics | None, SaeEvalMetrics]]:
    """(hook, train-sae's record (architecture, width; None where missing), eval-sae's) per evaluated hook."""
    ev = doc.run.sae_eval_dir
    out = []
    for d in sorted((p for p in ev.iterdir() if SaeEvalMetrics.exists(p)), key=lambda p: hook_sort_key(p.name)):
        out.append((d.name, SaeTrainMetrics.load_if(doc.run.saes_dir / d.name), SaeEvalMetrics.load(d)))
    return out


def sae_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("sae", "SAEs per layer")
    ev = run.sae_eval_dir
    if not (ev / "summary.md").exists():
        doc.add("Not run yet: `sae-ooc train-sae` and `sae-ooc eval-sae`.", "")
        return
    rows = _rows(doc)
    doc.add(
        "Reconstruction on **held-out prefixes**: under causal attention a token's activation depends only on the prompt up to it, "
        "so held-out tokens are those whose prefix (h at head, (h, r1) at r1, (h, r1, r2) at r2) never occurs among the tokens the "
        "SAE was trained on; each distinct prefix counted once. Explained variance pooled over positions and per position (pooling "
        "adds the between-position variance to the denominator). Task metrics with the SAE **spliced in** (its reconstruction "
        "replaces the activation at its hook); loss recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean), on the test_id split, most "
        "of whose prompts the SAEs were trained on (the activation cache holds every split's prompts; only held-out prefixes are held "
        "out of SAE training), so it is labelled in-sample.", "",
        f"| hook | arch | d_sae | held-out prefixes | EV pooled | EV head / r1 / r2 | L0 | dead ({DEAD_ON}) | test_id acc clean → SAE | loss recovered test_id |",
        "|---|---|---|---|---|---|---|---|---|---|",
    )
    for hook, trained, mj in rows:
        rec, task = mj.reconstruction, mj.task
        tid = task.splits.get("test_id")
        byp = opt(rec.by_position, {})
        on = f"{rec.n_tokens} held-out prefixes"
        evp = doc.number(f"sae.{hook}.explained_variance", rec.explained_variance, on)
        d_sae = trained.d_sae if trained else None
        doc.add(f"| `{hook}` | {trained.architecture if trained else None} | {d_sae} | {rec.n_tokens} | {evp} | "
                + " / ".join(f3(byp[p].explained_variance if p in byp else None) for p in ("head", "r1", "r2"))
                + f" | {f3(rec.l0, '.1f')} | {_dead(doc, hook, rec, d_sae, on)} | {f3(tid.acc_clean if tid else None)} → "
                f"{f3(tid.acc_sae if tid else None)} | "
                f"{doc.number(f'sae.{hook}.loss_recovered_test_id', task.loss_recovered, 'test_id split (most of its prompts are SAE training rows)', in_sample=True)} |")
    doc.add("")
    _probe_table(doc, rows)
    standard_section(doc)
    if (ev / "alignment_bridge.png").exists():
        doc.add("![bridge alignment](alignment_bridge.png)", "")
        for var in ("head", "r1", "r2", "bridge", "answer"):
            doc.figure(ev / f"alignment_{var}.png", ev / f"alignment_{var}.svg")
    doc.add("Full per-variable tables, with every control: [sae_summary.md](sae_summary.md).", "",
            f"Reproduce: {doc.cmd('harvest')}, then {doc.cmd('train-sae')}, then {doc.cmd('eval-sae')}", "")


def _dead(doc: Doc, hook: str, rec: Reconstruction, d_sae, on: str) -> str:
    """Dead features (`DEAD_ON`) as n/d_sae (percent), the count a headline number: the same count as train-sae's log and the browser's."""
    if opt(rec.n_dead) is None:
        return pct(rec.dead_fraction)
    return f"{doc.number(f'sae.{hook}.n_dead', rec.n_dead, on, spec='.0f')}/{d_sae} ({pct(rec.dead_fraction)})"


# a fine-tuning run (model.source: run): its harvest's train split holds only the new facts, and its step 0 is model.run's model
_FINETUNED = (" **On this fine-tuning run** *known* means taught by the fine-tuning (its own train split): the pretrained run's "
              "atomic facts, which model.run's training taught, count as *unknown* here, so a high *unknown* number is the "
              "pretrained model's knowledge, not a leak; and step 0 is model.run's trained model, not an untrained one, so *above "
              "controls* asks whether fine-tuning made the bridge more readable than before it.")


def _probe_table(doc: Doc, rows) -> None:
    doc.add(
        "**Where the bridge entity becomes readable at r1.** A linear probe on the raw stream (and the single best SAE feature per "
        "bridge value) is fitted on selection prefixes `(h, r1)` and scored on held-out prefixes that share no `(h, r1)` with them. "
        "A held-out prefix whose atomic fact `(h, r1) → b` was trained (*known*) tests whether the model resolved the bridge; one whose "
        "fact was never trained (*unknown*) no model can resolve. Controls: the same probe on a randomly initialised model of the same "
        "architecture, on the step-0 checkpoint (when saved), and with shuffled labels. *Above controls*: the trained model's 95% "
        "interval clears the best control." + (_FINETUNED if doc.run.cfg.model.source == "run" else ""), "",
        "| hook | probe, held-out (95% CI) | known / unknown first hop | random model | step 0 | shuffled | majority | above controls "
        "| one feature detects (AUROC ≥ 0.9) vs shuffled |",
        "|---|---|---|---|---|---|---|---|---|",
    )
    for hook, _, mj in rows:
        al = mj.alignment.get(PROBE_VARIABLE)
        if not al or not al.probe:
            continue
        p, ft = al.probe, al.features
        on = f"{p.n_heldout} held-out (h, r1) prefixes"
        ci = p.heldout_ci95 or [None, None]
        acc = doc.number(f"probe.bridge.r1.{hook}.heldout_acc", p.heldout_acc, on)
        rnd = doc.number(f"probe.bridge.r1.{hook}.random_model_acc", opt(p.random_model_acc), on + ", random-init model")
        doc.add(f"| `{hook}` | {acc} ({f3(ci[0], '.2f')}–{f3(ci[1], '.2f')}; n {p.n_heldout}) | "
                f"{f3(opt(p.heldout_acc_known))} (n {opt(p.n_heldout_known)}) / {f3(opt(p.heldout_acc_unknown))} "
                f"(n {opt(p.n_heldout_unknown)}) | {rnd} | {f3(opt(p.step0_acc))} | {f3(p.shuffled_acc)} | "
                f"{f3(p.majority_acc)} | {'yes' if p.above_controls else 'no'} | "
                f"{pct(ft.frac_detected if ft else None)} vs {pct(ft.shuffled_frac_detected if ft else None)} |")
    doc.add("")
