"""Report section for a three-hop task (the threehop family: the layout's analysed prompts ask three hops): does the
model compose `(h, r1, r2, r3) → t3` out of context, and where are its two bridges, `bridge` = t(h, r1) and `bridge2`
= t(bridge, r2)? Accuracy on every split beside its majority-answer rate and the same model's two-hop accuracy;
eval-sae's probes of both bridges at every position and hook beside their controls; the variables stage's interchange
of both bridges (residual patch above, DAS, random subspaces below) on held-out prefixes."""

from __future__ import annotations

from sae_ooc.records import opt
from sae_ooc.report.doc import Doc, f3, pct
from sae_ooc.tasks.layout import load_layout

COMPOSE_BAR = 0.9  # test_id accuracy called composition (the train section's bar)
SPLITS = (("test_id", "three-hop facts of in-distribution atomic facts, held out (reported only)"),
          ("test_ood_sys", "three-hop facts of OOD atomic facts only: trained, in no inferred training fact (Wang et al.)"),
          ("test_unanswerable", "three-hop facts needing an atomic fact never trained (control)"),
          ("valid_id", "held-out in-distribution three-hop facts that chose the stop step (in-sample)"),
          ("atomic_test", "the trained atomic facts (in-sample)"))
BRIDGES = ("bridge", "bridge2")


def two_hop_accuracy(run) -> dict:
    """{set: (accuracy, majority-answer rate, n)} of the model on the family's extra two-hop sets (tasks.families.extra_sets)."""
    from sae_ooc.models.evaluate import evaluate
    from sae_ooc.models.hooked import load_model
    from sae_ooc.tasks.data import majority_rate, split_tensors
    from sae_ooc.tasks.families import extra_sets
    from sae_ooc.tasks.vocab import read_vocab

    sets = extra_sets(run.cfg.task)
    if not sets or not (run.model_dir / "model.safetensors").exists():
        return {}
    vocab, model = read_vocab(run.data_dir), load_model(run.model_dir)
    return {k: (evaluate(model, split_tensors(d, vocab))["acc"], majority_rate(d), len(d)) for k, d in sets.items()}


def threehop_section(doc: Doc) -> None:
    run = doc.run
    if not (run.data_dir / "layout.json").exists() or load_layout(run.data_dir).question_hop < 3:
        return
    from sae_ooc.models.metrics import TrainMetrics

    doc.heading("threehop", "Three hops: does the model compose (h, r1, r2, r3) → t3, and where are the two bridges?")
    fm = TrainMetrics.load_if(run.model_dir)
    if fm is None:
        doc.add("Not trained yet: `sae-ooc train`.", "")
        return
    acc, maj, n = fm.accuracy, fm.majority_rate, fm.n_examples
    doc.add(f"After {fm.steps} steps" + (" (stopped early on valid_id)" if fm.stopped_early else " (all steps; valid_id never reached the stop bar)")
            + ". Each split's accuracy beside the rate of always giving its most common answer:", "",
            "| split | examples | accuracy | majority-answer rate | what it asks |", "|---|---|---|---|---|")
    for s, what in SPLITS:
        if s in acc:
            on = f"{s} ({n.get(s, '?')} examples)"
            doc.add(f"| {s} | {n.get(s, '?')} | {doc.number(f'threehop.{s}_acc', acc[s], on, in_sample=s in ('valid_id', 'atomic_test'))} "
                    f"| {f3(maj[s])} | {what} |")
    two = two_hop_accuracy(run)
    for k, (a, m, k_n) in two.items():
        held = k == "two_hop_heldout"
        doc.add(f"| {k} | {k_n} | {doc.number(f'threehop.{k}_acc', a, f'{k} ({k_n} two-hop facts)', in_sample=not held)} | {f3(m)} | "
                + ("in-distribution two-hop facts (h, r1, r2) → bridge2 held out of train" if held else "the two-hop facts of train (in-sample)") + " |")
    doc.add("")
    composes = acc.get("test_id", 0) >= COMPOSE_BAR
    doc.add(f"**Answer.** test_id {f3(acc.get('test_id'))} against a majority rate of {f3(maj.get('test_id'))}: the model "
            + (f"composes three hops out of context at this size (≥ {COMPOSE_BAR})" if composes else
               f"does not compose three hops at this size and training (bar {COMPOSE_BAR})")
            + f"; on Wang et al.'s systematic split test_ood_sys {f3(acc.get('test_ood_sys'))} (majority {f3(maj.get('test_ood_sys'))})"
            + (f"; two-hop facts held out of train {f3(two['two_hop_heldout'][0])}" if "two_hop_heldout" in two else "") + ".", "")
    _probes(doc)
    _interchange(doc)


def _probes(doc: Doc) -> None:
    from sae_ooc.report.saes import _rows

    ev = doc.run.sae_eval_dir
    if not ev.exists():
        doc.add("Probes: not run yet (`sae-ooc eval-sae`).", "")
        return
    doc.add("**Where each bridge is readable** (eval-sae): a linear probe fitted on selection prefixes, scored on held-out "
            "prefixes (none shares its prefix with a selection one), beside the best control (random-init model, step-0 "
            "checkpoint, shuffled labels). *Above* = its 95% interval clears the best control.", "",
            "| bridge @ position | hook | held-out probe | best control | majority | above controls | n held-out |", "|---|---|---|---|---|---|---|")
    for hook, _, mj in _rows(doc):
        for key, al in mj.alignment.items():
            if al.variable not in BRIDGES or al.probe is None:
                continue
            p = al.probe
            ctrl = max((x for x in (opt(p.random_model_acc), opt(p.step0_acc), p.shuffled_acc) if x is not None), default=None)
            on = f"{p.n_heldout} held-out prefixes at {al.position}"
            doc.add(f"| {key} | `{hook}` | {doc.number(f'threehop.probe.{key}.{hook}', p.heldout_acc, on)} | {f3(ctrl)} | "
                    f"{f3(p.majority_acc)} | {'yes' if p.above_controls else 'no'} | {p.n_heldout} |")
    doc.add("")
    for var in BRIDGES:  # the heatmaps eval-sae drew (the SAE section shows the two-hop variables')
        if (ev / f"alignment_{var}.png").exists():
            doc.figure(ev / f"alignment_{var}.png", ev / f"alignment_{var}.svg")
            doc.add(f"![{var} alignment](alignment_{var}.png)", "")


def _interchange(doc: Doc) -> None:
    from sae_ooc.report.doc import load

    v = load(doc.run.variables_dir / "variables.json")
    if v is None:
        doc.add("Interchange: not run yet (`sae-ooc variables`).", "")
        return
    doc.add("**Where each bridge is used** (variables stage): the base question takes the unit's value from a donor question "
            "with another bridge (and the relations after it shared, so the counterfactual answer is the donor's); held-out "
            "prefixes only. Switch rate to the counterfactual answer: the residual patch at that (hook, position) is the upper "
            "reference, random subspaces of DAS's rank the lower one.", "",
            "| bridge @ position | hook | n held-out pairs | residual patch | DAS (rank: switch) | random subspace (rank: switch) |",
            "|---|---|---|---|---|---|")
    for r in v.get("rows", []):
        if r["variable"] not in BRIDGES:
            continue
        name = f"{r['variable']}@{r['position']}"  # bridge@answer is at r3, the answer position
        u, c = r["units"], r.get("curves", {})
        on = f"{r['n_heldout']} held-out pairs"
        patch = (u.get("resid_patch") or {}).get("switch")
        das = ", ".join(f"{u[k]['size']}: {pct(u[k]['switch'])}" for k in c.get("das", []) if u.get(k, {}).get("switch") is not None)
        rnd = ", ".join(f"{u[k]['size']}: {pct(u[k]['switch'])}" for k in c.get("random_subspace", []) if u.get(k, {}).get("switch") is not None)
        skipped = (r.get("das") or {}).get("skipped")
        key = f"threehop.patch.{name}.{r['hook']}"
        cell = doc.number(key, patch, on, spec=".1%") if patch is not None else "–"
        doc.add(f"| {name} | `{r['hook']}` | {r['n_heldout']} | {cell} | "
                f"{das or ('not trained (patch too small)' if skipped else '–')} | {rnd or '–'} |")
    doc.add("", f"Reproduce: {doc.cmd('pipeline')}", "")
