"""Report section for a fine-tuning run (`model.source: run`): were the new facts learned, are two-hop questions over
them answered (by which hop is new), and what did the pretrained model forget."""

from __future__ import annotations

from sae_ooc.models.metrics import TrainMetrics, read_train_log
from sae_ooc.report.doc import Doc, f3
from sae_ooc.tasks.finetune_result import FinetuneMeta

# (split, summary name, what it holds)
ROWS = (("atomic_test", "finetune.new_atomic.acc", "the new atomic facts (taught: in-sample)"),
        ("new_new", "finetune.new_new.test_acc", "two-hop questions, both facts new (held out)"),
        ("new_old", "finetune.new_old.test_acc", "two-hop questions, first fact new, second old (held out)"),
        ("old_new", "finetune.old_new.test_acc", "two-hop questions, first fact old, second new (held out)"),
        ("new_valid", "finetune.new_valid.acc", "two-hop questions with a new fact, the validation share (for choosing settings)"),
        ("test_id", "finetune.pretrain.test_id_acc", "the pretrained run's test_id (old facts; forgetting of composition)"),
        ("pretrain_atomic", "finetune.pretrain.atomic_acc", "the pretrained run's atomic facts (forgetting of facts)"))
# a natural task's atomic_test asks the new facts in held-out paraphrases (templates no document uses): not in-sample, and
# the taught documents themselves are the train split (all of it without replay)
NATURAL_ROWS = (("train", "finetune.train.acc", "the taught rows: the new facts' documents (and the control's two-hop examples, the replayed rows)"),
                ("atomic_test", "finetune.new_atomic.acc", "the new atomic facts asked in held-out paraphrases (never trained)"),
                *ROWS[1:-1],
                ("pretrain_atomic", "finetune.pretrain.atomic_acc", "the pretrained run's atomic facts in held-out paraphrases (its atomic_test)"))
COMPOSE_BAR = 0.9  # the bar the model section applies to test_id


def _sets(run) -> str:
    """The --set options that name model.run and the task.finetune values a plain config would not give."""
    from dataclasses import asdict

    from sae_ooc.sections.finetune import FinetuneConfig

    default = asdict(FinetuneConfig())
    changed = [f" --set task.finetune.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in asdict(run.cfg.task.finetune).items() if v != default[k]]
    return f" --set model.run={run.cfg.model.run}" + "".join(changed)


def finetune_section(doc: Doc) -> None:
    run = doc.run
    meta = FinetuneMeta.load_if(run.data_dir)
    if meta is None:
        return  # not a fine-tuning run
    fm = TrainMetrics.load_if(run.model_dir)
    doc.heading("finetune", "Fine-tuning new facts: does composition transfer to them?")
    ft = run.cfg.task.finetune
    how = ("with two-hop examples of their own (the control: phi "
           f"{meta.phi:g}, {meta.n_control_examples} examples)" if meta.control else "as atomic facts only (no two-hop example uses them)")
    replay = (f"; replay: every row of the pretrained train split beside them ({100 * meta.replay_share:.1f}% of the train rows)"
              if ft.replay > 0 else "; no replay")
    doc.add(f"The model of `{meta.model_run}` fine-tuned on {meta.n_new_facts} new atomic facts `(h, r) → t` over its "
            f"entities and relations, on (h, r) pairs its training never taught ({meta.pretrain_ood_pairs_reused} of them the pairs "
            f"never trained, its test_unanswerable's; tails drawn afresh), {how}{replay}. Held-out two-hop questions: "
            + ", ".join(f"{k} {v}" for k, v in meta.pool.items()) + " in the pool (less the control's examples and the validation share).", "")
    if fm is None:
        doc.add("Not trained yet: `sae-ooc finetune`.", "")
        return
    acc, maj, n = fm.accuracy, fm.majority_rate, fm.n_examples
    log = read_train_log(run.model_dir) or []
    before = log[0].accuracy if log and log[0].step == 0 else {}  # the pretrained model's (step 0)
    doc.add(f"After {fm.steps} steps" + (f" (stopped once {'its taught rows were' if fm.stop_split == 'train' else 'the new atomic facts were'} learned)" if fm.stopped_early else "")
            + "; before = the pretrained model (step 0, on at most train.eval_max_examples of each split):", "",
            "| split | examples | accuracy after | before | majority-answer rate | r2 shortcut |", "|---|---|---|---|---|---|")
    shortcut = meta.r2_shortcut
    natural = run.cfg.task.render == "natural"
    for split, name, what in NATURAL_ROWS if natural else ROWS:
        if split not in acc:
            continue
        on = f"{split} ({n.get(split, '?')} examples): {what}"
        doc.add(f"| {split}: {what} | {n.get(split, '?')} | {doc.number(name, acc[split], on, in_sample=(split == ('train' if natural else 'atomic_test')))} | "
                f"{f3(before.get(split))} | {f3(maj.get(split))} | {f3(shortcut.get(split))} |")
    verdicts = []
    for k in ("new_new", "new_old", "old_new"):
        a = acc.get(k)
        base = max(maj.get(k) or 0.0, before.get(k) or 0.0, shortcut.get(k) or 0.0)
        if a is None or a != a:
            verdicts.append(f"{k}: no held-out question")
        else:
            word = "yes" if a >= COMPOSE_BAR else ("partly" if a > 2 * base and a - base > 0.1 else "no")
            verdicts.append(f"{k} **{word}** ({f3(a)} vs {f3(base)} best of before, majority, shortcut)")
    doc.add("", "**Composition over facts taught by fine-tuning** (held out; ≥ 0.90 = yes; above twice the "
            "best of the pretrained model's accuracy, the majority rate and the r2 shortcut, and by 0.1 = partly; the r2 shortcut "
            "answers the most common taught tail of the question's last relation, reading neither h nor r1): " + "; ".join(verdicts) + ".", "",
            "![finetune](finetune.png)", "", f"Reproduce: {doc.cmd('pipeline', _sets(run))} (every setting: the run's config.yaml)", "")
    doc.figure(run.model_dir / "finetune.png", run.model_dir / "finetune.svg")
