"""Report sections: the task and whether the trained model composes A→C."""

from __future__ import annotations

from sae_ooc.models.metrics import THRESHOLDS, TrainMetrics
from sae_ooc.report.doc import Doc, f3, pct
from sae_ooc.errors import UserError
from sae_ooc.tasks.data_info import DataInfo
from sae_ooc.tasks.families import asked, describe
from sae_ooc.tasks.layout import load_layout
from sae_ooc.tasks.vocab import read_vocab


def task_section(doc: Doc) -> None:
    run = doc.run
    t = run.cfg.task
    info = DataInfo.of(run)
    doc.heading("task", "Task")
    doc.add(
        f"Family `{t.family}`: {describe(t)} "
        f"phi = {t.phi} inferred facts per atomic fact in train; {pct(t.ood_fraction)} of atomic facts OOD (trained, in no inferred "
        f"training fact: test_ood_sys asks the inferred facts made of them only, Wang et al. 2024's systematic split), "
        f"{pct(t.unanswerable_fraction)} never trained (test_unanswerable); "
        f"of the inferred facts held out of train, {pct(t.valid_fraction)} go to valid_id (read by early stopping and any "
        f"tuning) and the rest to test_id (only reported); seed {t.seed}.", "",
    )
    if t.render == "natural":
        doc.add(_natural_text(run), "")
    doc.add("| split | examples | majority-answer rate |", "|---|---|---|")
    for s, n in (info.sizes if info else {}).items():
        doc.add(f"| {s} | {n} | {f3(info.majority_rate.get(s))} |")
    doc.add("", f"Reproduce: {doc.cmd('data')}", "")


def _natural_text(run) -> str:
    """How a natural-language task renders the facts, with one rendered question."""
    n = run.cfg.task.natural
    try:
        layout, vocab = load_layout(run.data_dir), read_vocab(run.data_dir)
    except (ValueError, KeyError, TypeError, OSError, UserError):  # not written yet, or damaged: the text says so
        layout = vocab = None
    tok = "a byte-level BPE trained on the rendered corpus" if n.tokenizer == "bpe" else "the pretrained checkpoint's tokenizer"
    return (f"Rendered as English (`task.render: natural`): entity names of exactly {n.name_tokens} tokens, relations as nouns; "
            f"training documents in {len(n.train_templates)} paraphrases (e.g. `{n.train_templates[0]}`), atomic_test in held-out "
            f"paraphrases (e.g. `{n.test_templates[0]}`), the two-hop question `{n.question_template}` "
            f"(e.g. \"{vocab.example if vocab else ''}\"), documents `{n.documents}`; tokenized by {tok} of {vocab.d_vocab if vocab else '?'} "
            f"tokens. Every question has the layout `{', '.join(layout.position_names) if layout else ''}`; answers are "
            f"{layout.answer_len if layout else '?'}-token names, scored by their whole token sequence (correct = greedy decoding gives the name).")


def train_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("train", f"Model: does it {asked(run.cfg.task.family)}?")
    fm = doc.load_or_say(TrainMetrics, run.model_dir, "`sae-ooc train`")
    if fm is None:
        return
    tc = run.cfg.train
    acc, maj = fm.accuracy, fm.majority_rate
    stop = fm.stop_split
    info = DataInfo.of(run)
    sizes = info.sizes if info else {}
    doc.add(
        f"{_model_description(run)} for {fm.steps} steps in {fm.minutes:.2f} minutes (on the machine that made this report)"
        + ((f", stopped early once {stop} ≥ {tc.stop_at_atomic}" if tc.stop_on != "valid_id" else
            f", stopped early once {stop} ≥ {tc.stop_at_valid_id} and atomic_test ≥ {tc.stop_at_atomic}") if fm.stopped_early else "")
        + ". Accuracy on every example of each split (the saved model, reloaded, gives the same numbers); "
        f"{stop} chose when to stop, so its number is in-sample; test_id played no part in any choice:", "",
        "| split | accuracy | majority-answer rate |", "|---|---|---|",
    )
    doc.number("train.stop_split", stop, "the split early stopping read")
    for s in acc:
        name = f"train.{s}_acc"
        on = f"{s} split ({sizes.get(s, '?')} examples)"
        # a toy's atomic_test asks the trained prompts themselves; a natural task's asks them in held-out paraphrases
        trained = ("train", "atomic_test") if run.cfg.task.render == "toy" else ("train",)
        doc.add(f"| {s} | {doc.number(name, acc[s], on, in_sample=(s == stop or s in trained))} | {f3(maj[s])} |")
    reach = []
    for th in THRESHOLDS:
        step, mins = fm.reached("test_id", th)
        reach.append(f"test_id ≥ {th} at step {step} ({f3(mins, '.2f')} min)" if step is not None else f"test_id never reached {th}")
    verdict = acc["test_id"] >= 0.9 and acc["atomic_test"] >= 0.99
    doc.add("", "; ".join(reach) + ".", "",
            f"**Out-of-context composition: {'yes' if verdict else 'not at the 0.90 bar'}** — test_id (two-hop facts never seen, "
            f"both of whose atomic facts were seen; not used for stopping) {f3(acc['test_id'])} vs a majority rate of "
            f"{f3(maj['test_id'])}; test_unanswerable (a needed atomic fact never trained: the control, answerable no better than its trained facts allow — chance for a two-hop fact, above it for a comparison whose other value is known) {f3(acc['test_unanswerable'])}.", "",
            f"**Systematic generalization (Wang et al. 2024's OOD split): {f3(acc.get('test_ood_sys'))}** on test_ood_sys (inferred facts "
            f"all of whose atomic facts were trained but used by no inferred training fact; majority rate {f3(maj.get('test_ood_sys'))}, "
            f"{sizes.get('test_ood_sys', '?')} facts). Wang et al. find composition near 0 there and comparison generalizing.", "",
            "![accuracy](accuracy.png)", "", f"Reproduce: {doc.cmd('train')}", "")
    doc.figure(run.model_dir / "accuracy.png", run.model_dir / "accuracy.svg")


def _model_description(run) -> str:
    """What was trained, from the model the train stage saved (a pretrained source's architecture is its checkpoint's)."""
    m, tc = run.cfg.model, run.cfg.train
    which = " (MLP weights only; every other weight frozen)" if tc.trainable == "mlp" else ""
    shared = ", one block's weights shared by every layer (model.weight_sharing)"
    if m.source == "scratch":
        return (f"A {m.n_layers}-layer HookedTransformer (d_model {m.d_model}, {m.n_heads} heads, d_mlp {m.d_mlp}"
                f"{shared if m.weight_sharing else ''}) trained from scratch{which}")
    from sae_ooc.models.files import SHARING_FILE
    from sae_ooc.models.hooked import saved_config  # imports transformer_lens: only a pretrained source's report pays it

    c = saved_config(run.model_dir)
    arch = (f"{c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads, d_mlp {c.d_mlp}"
            f"{shared if (run.model_dir / SHARING_FILE).is_file() else ''}" if c is not None else "architecture not saved yet")
    if m.source == "run":  # a fine-tuning run: the model of a finished sae_ooc run, which has no checkpoint path or hub name
        return f"The model of the run `{m.run}` ({arch}) fine-tuned{which or ' (all weights)'}"
    arch = f"{c.original_architecture or '?'}: {arch}" if c is not None else arch
    return f"The pretrained {m.name} ({arch}; checkpoint `{m.path}`) fine-tuned{which or ' (all weights)'}"
