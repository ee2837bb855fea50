"""Report section: the question the task family asks (sae_ooc.tasks.families.QUESTIONS), answered from the trained
model's accuracy on each split against its controls (the majority answer, the unanswerable split, the trained facts)
and from what the model answers instead (RUN/analyze/answers.json)."""

from __future__ import annotations

from sae_ooc.analyses.result import AnalysisResult
from sae_ooc.models.metrics import TrainMetrics
from sae_ooc.report.doc import Doc, f3
from sae_ooc.report.family_findings import family_findings
from sae_ooc.saes.probes import wilson
from sae_ooc.tasks.families import QUESTIONS

ROWS = (("test_id", "the question, held out"), ("test_ood_sys", "the question on OOD facts"),
        ("test_unanswerable", "control: a needed fact never trained"), ("atomic_test", "control: the trained facts"))


def family_section(doc: Doc) -> None:
    run = doc.run
    fam = run.cfg.task.family
    doc.heading("family", f"The `{fam}` family's question")
    doc.add(QUESTIONS.get(fam, ""), "")
    fm = TrainMetrics.load_if(run.model_dir)
    if fm is None:
        doc.add(f"Not run yet: {doc.cmd('train')}.", "")
        return
    ans = AnalysisResult.load_named(run.analyze_dir, "answers") if run.analyze_dir.exists() else None
    doc.add("| split | what it asks | accuracy (95% CI) | majority-answer rate | above majority | commonest answers (share; a random entity's chance) |",
            "|---|---|---|---|---|---|")
    verdicts = {}
    for split, what in ROWS:
        if split not in fm.accuracy:
            continue
        n, acc, maj = fm.n_examples.get(split, 0), fm.accuracy[split], fm.majority_rate.get(split)
        lo, hi = wilson(acc, n) or (float("nan"), float("nan"))
        above = maj is not None and lo > maj
        verdicts[split] = above
        d = (ans.splits.get(split) if ans else None) or {}
        top = sorted(((x, c) for c, x in d.get("share", {}).items() if x > 0), reverse=True)[:3]
        cls = "; ".join(f"{c} {f3(x)} ({f3(d['chance'][c])})" for x, c in top) if top else "not run"
        doc.add(f"| {split} | {what} | {doc.number(f'family.{split}.accuracy', acc, f'{n} {split} examples')} "
                f"({f3(lo)}–{f3(hi)}) | {f3(maj)} | {'yes' if above else 'no'} | {cls} |")
    doc.add("", "Accuracy is on every example of the split (stage train's final evaluation); *above majority*: the 95% Wilson "
            "interval's lower end is above the rate of always giving the split's commonest answer. The answer classes are "
            "those of the analysis `answers` (section on the mechanistic analyses): each prompt's greedy answer in the first class "
            "it falls in, beside the share a uniformly random entity would fall in.", "")
    if "test_id" in verdicts:
        doc.add(f"Answer: on test_id the model is {'above' if verdicts['test_id'] else 'not above'} the majority answer"
                + (f"; on test_ood_sys {'above' if verdicts.get('test_ood_sys') else 'not above'} it" if "test_ood_sys" in verdicts else "")
                + (f"; the trained facts (atomic_test) are {'above' if verdicts.get('atomic_test') else 'not above'} it" if "atomic_test" in verdicts else "")
                + ". Reproduce: " + doc.cmd("analyze answers") + ".", "")
    family_findings(doc)
