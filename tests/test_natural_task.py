"""`task.render: natural` (issue 13): the toy task's facts rendered as documents and questions over a real
tokenizer. Every check recomputes what the renderer claims from the templates, the names and the saved tokenizer
(loaded back with `tokenizers` and `datasets`): the text of each example, the layout of every analysed prompt,
answers tokenized the same in context as alone, the toy's split structure, held-out paraphrases, and one-line
errors (exit 2, nothing written) for bad names, templates and tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import load_from_disk
from tokenizers import Tokenizer

from sae_ooc.cli import main as cli_main
from sae_ooc.config import load_config
from sae_ooc.tasks.data import FEATURES, generate, load_task
from sae_ooc.tasks.layout import load_layout

ROOT = Path(__file__).resolve().parents[1]
NATURAL = ROOT / "configs" / "natural_tiny.yaml"
SMALL = ["task.n_entities=16", "task.n_relations=4", "task.facts_per_entity=2", "task.phi=1.0"]


def make_data(root: Path, *overrides: str) -> Path:
    argv = ["data", "--config", str(NATURAL), "--run", str(root)]
    for o in overrides:
        argv += ["--set", o]
    assert cli_main(argv) == 0
    return root / "data"


@pytest.fixture(scope="module")
def twohop(tmp_path_factory):
    data = make_data(tmp_path_factory.mktemp("natural") / "run")
    return (data, *load_task(data))


@pytest.fixture(scope="module")
def reversal(tmp_path_factory):
    data = make_data(tmp_path_factory.mktemp("natural_rev") / "run", "task.family=reversal")
    return (data, *load_task(data))


def prompt_of(template: str, **values) -> str:
    """The prompt a template asks: its text before {b}, filled in (independent of the renderer's pieces)."""
    return template.split("{b}")[0].rstrip().format(**values)


def texts(ds, vocab):
    """(prompt text, answer text) of every row, decoded."""
    return [(vocab.decode(r["input_ids"]), vocab.decode(r["answer_ids"])) for r in ds]


def test_rows_decode_to_the_intended_text(twohop):
    _, ds, v = twohop
    nat = load_config(NATURAL).task.natural
    E, name, rel = v.n_entities, v.entity_name, v.relation_name
    for split in ds:
        for r, (prompt, answer) in zip(ds[split], texts(ds[split], v)):
            assert r["input_ids"][0] == v.bos_id and answer == " " + name(r["answer"])
            if r["hop"] == 2:
                want = {prompt_of(nat.question_template, a=name(r["head"]), r1=rel(r["r1"]), r2=rel(r["r2"]))}
                assert E <= r["r1"] < E + v.n_relations and 0 <= r["bridge"] < E
            else:
                tpls = nat.train_templates if split == "train" else nat.test_templates
                want = {prompt_of(t, a=name(r["head"]), r=rel(r["r1"])) for t in tpls}
            assert prompt.strip() in want, (split, prompt)
    # every train atomic fact appears in every train paraphrase
    facts = {(r["head"], r["r1"], r["answer"]) for r in ds["train"] if r["hop"] == 1}
    assert sum(r["hop"] == 1 for r in ds["train"]) == len(facts) * len(nat.train_templates)


def test_every_analysed_prompt_matches_the_layout(twohop):
    data, ds, v = twohop
    tok, layout = Tokenizer.from_file(str(data / "tokenizer.json")), load_layout(data)
    assert layout.render == "natural" and layout.answer_len == 2 and layout.n_pos == layout.answer_pos + 1
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    names = list(layout.position_names)
    assert names[0] == "bos" and names[-1] == "last" and len(set(names)) == len(names)
    n_analysed = 0
    for split in ("valid_id", "test_id", "test_ood_sys", "test_unanswerable"):
        for r in ds[split]:
            head, r1, r2 = v.entity_name(r["head"]), v.relation_name(r["r1"]), v.relation_name(r["r2"])
            # role spans from the token counts of the question's prefixes, BOS first
            cuts = [f" {head}", f" {head}'s {r1}", f" {head}'s {r1}'s {r2}"]
            ends = [1 + len(enc(c)) for c in cuts]
            spans = {"head": [1, ends[0]], "r1": [ends[0] + 1, ends[1]], "r2": [ends[1] + 1, ends[2]]}
            assert r["input_ids"] == [v.bos_id] + enc(f" {head}'s {r1}'s {r2} is")
            assert len(r["input_ids"]) == layout.n_pos
            assert {k: layout.roles[k] for k in spans} == spans and layout.roles["last"] == [layout.n_pos - 1, layout.n_pos]
            n_analysed += 1
    assert n_analysed == len(ds["valid_id"]) + len(ds["test_id"]) + len(ds["test_ood_sys"]) + len(ds["test_unanswerable"]) > 50
    assert layout.seq_len == max(len(r["input_ids"]) + len(r["answer_ids"]) - 1 for s in ds for r in ds[s])
    assert layout.index("head") == 2 and list(layout.span("head")) == [1, 2]  # two-token names


def test_answers_are_tokenized_the_same_in_context_as_alone(twohop):
    data, ds, v = twohop
    tok = Tokenizer.from_file(str(data / "tokenizer.json"))
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    alone = {e: enc(" " + v.entity_name(e)) for e in range(v.n_entities)}
    assert all(len(ids) == 2 for ids in alone.values()) and len(set(map(tuple, alone.values()))) == v.n_entities
    for split in ds:
        for r, (prompt, answer) in zip(ds[split], texts(ds[split], v)):
            assert r["answer_ids"] == alone[r["answer"]]
            assert enc(prompt + answer) == r["input_ids"][1:] + r["answer_ids"]  # the whole text, tokenized at once


def planted(ds, *keys):
    return {tuple(r[k] for k in keys) for r in ds}


def test_the_toy_facts_and_splits_are_kept(twohop):
    _, ds, _ = twohop
    toy, _ = generate(load_config(NATURAL).task)
    keys = ("head", "r1", "r2", "answer", "bridge", "hop")
    for split in ds:  # the same facts in every split (train repeats atomic facts once per paraphrase)
        assert planted(ds[split], *keys) == planted(toy[split], *keys), split
    chains = {s: planted(ds[s], "head", "r1", "r2") for s in ("valid_id", "test_id", "test_unanswerable")}
    train2 = planted(ds["train"].filter(lambda r: r["hop"] == 2), "head", "r1", "r2")
    assert not chains["valid_id"] & chains["test_id"] and not (chains["valid_id"] | chains["test_id"] | chains["test_unanswerable"]) & train2
    train1 = planted(ds["train"].filter(lambda r: r["hop"] == 1), "head", "r1", "answer")
    assert planted(ds["atomic_test"], "head", "r1", "answer") == train1
    for r in ds["test_unanswerable"]:  # an OOD chain needs an atomic fact that is not in train
        assert (r["head"], r["r1"], r["bridge"]) not in train1 or (r["bridge"], r["r2"], r["answer"]) not in train1


def test_test_paraphrases_differ_from_training_ones(twohop):
    _, ds, v = twohop
    train = {p for p, _ in texts(ds["train"], v)}
    atomic = [p for p, _ in texts(ds["atomic_test"], v)]
    assert not train & set(atomic)
    assert {" ".join(p.split()[:2]) for p in atomic} == {"Who is", "We know"}  # both held-out wordings used
    assert not {" ".join(p.split()[:2]) for p in train} & {"Who is", "We know"}


def test_files_load_back_with_the_ecosystem_loaders(twohop, tmp_path):
    data, ds, v = twohop
    again = load_from_disk(str(data))
    assert set(again) == set(ds) and again["test_id"].features == FEATURES
    tok = Tokenizer.from_file(str(data / "tokenizer.json"))
    assert tok.get_vocab_size() == v.d_vocab and v.pad_id == v.bos_id == tok.token_to_id("<|endoftext|>")
    assert v.encode(v.example) == ds["valid_id"][0]["input_ids"]
    assert v.name(ds["test_id"][0]["input_ids"][-1]) == " is"
    # deterministic given task.seed: a second data stage writes the same tokenizer and rows
    other = make_data(tmp_path / "again")
    assert (other / "tokenizer.json").read_bytes() == (data / "tokenizer.json").read_bytes()
    ds2, v2 = load_task(other)
    assert ds2["train"]["input_ids"] == ds["train"]["input_ids"] and v2.entity_names == v.entity_names


def test_reversal_asks_the_inverse(reversal):
    data, ds, v = reversal
    nat = load_config(NATURAL).task.natural
    R = v.n_relations // 2
    layout = load_layout(data)
    assert set(layout.roles) == {"head", "r1", "last"}
    for split in ("valid_id", "test_id", "test_ood_sys", "test_unanswerable"):
        for r, (prompt, answer) in zip(ds[split], texts(ds[split], v)):
            assert r["r1"] >= v.n_entities + R  # an inverse relation, asked with the inverse noun
            assert prompt.strip() == prompt_of(nat.test_templates[0], a=v.entity_name(r["head"]), r=v.relation_name(r["r1"]))
            assert len(r["input_ids"]) == layout.n_pos and answer == " " + v.entity_name(r["answer"])
    held = planted(ds["valid_id"], "head", "r1", "answer") | planted(ds["test_id"], "head", "r1", "answer")
    assert not held & planted(ds["train"], "head", "r1", "answer")
    forward = {(b, r - R, a) for a, r, b in held}  # each held-out inverse's forward fact is trained
    assert forward <= planted(ds["train"], "head", "r1", "answer")


def test_together_puts_both_facts_of_each_held_out_chain_in_one_document(tmp_path):
    data = make_data(tmp_path / "run", *SMALL, "task.natural.documents=together")
    ds, v = load_task(data)
    docs = [p for p, _ in texts(ds["train"], v) if "." in p]
    chains = [r for s in ("valid_id", "test_id") for r in ds[s]]
    assert len(docs) == len(chains) > 0
    tpls = load_config(NATURAL).task.natural.train_templates
    for r in chains:  # "<first fact in full> <second fact up to its object>", each in a train paraphrase
        a, b = v.entity_name(r["head"]), v.entity_name(r["bridge"])
        r1, r2 = v.relation_name(r["r1"]), v.relation_name(r["r2"])
        want = {" " + t1.format(a=a, r=r1, b=b) + " " + prompt_of(t2, a=b, r=r2) for t1 in tpls for t2 in tpls}
        assert want & set(docs), (a, b)


def test_config_keys_and_overrides():
    cfg = load_config(NATURAL, ["task.natural.name_tokens=3", "task.natural.documents=together"])
    assert cfg.task.natural.name_tokens == 3 and cfg.task.natural.documents == "together"
    assert load_config(None).task.render == "toy"


def one_line_error(capsys, root: Path, overrides, *needles):
    argv = ["data", "--config", str(NATURAL), "--run", str(root)]
    for o in [*SMALL, *overrides]:
        argv += ["--set", o]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    assert not (root / "data").exists() and not (root / "data.tmp").exists()


def test_bad_input_is_one_line_with_exit_2(tmp_path, capsys):
    run = tmp_path / "run"  # a failed first command leaves no config.yaml behind, so each case can reuse it
    one_line_error(capsys, run, ['task.natural.train_templates=["The {r} is {b}."]'], "train_templates[0]", "has no {a}")
    one_line_error(capsys, run, ['task.natural.question_template="{a} and {r1}"'], "question_template", "has no {r2}")
    one_line_error(capsys, run, ['task.natural.test_templates=["{b} is the {r} of {a}"]'], "{b} must come after")
    one_line_error(capsys, run, ["task.natural.names=/nonexistent/names.txt"], "cannot read /nonexistent/names.txt")
    dup = tmp_path / "names.txt"
    dup.write_text("Alice Smith\nBob Jones\nAlice Smith\n" + "\n".join(f"Person{i} Name" for i in range(30)))
    one_line_error(capsys, run, [f"task.natural.names={dup}"], "'Alice Smith' more than once")
    one_line_error(capsys, run, ["task.natural.name_tokens=5"], "exactly 5 tokens", "task.natural.name_tokens")
    one_line_error(capsys, run, ['task.natural.train_templates=["The {r} of{a} is {b}."]'],
                   "splits entity name", "differently in context")
    one_line_error(capsys, run, ["task.family=reversal", "task.natural.documents=together"], "needs task.family twohop")


def test_a_pretrained_tokenizer_directory(tmp_path):
    """tokenizer: pretrained reads model.path's Hugging Face tokenizer (here a local BPE saved the transformers way)."""
    from transformers import PreTrainedTokenizerFast

    from sae_ooc.tasks.natural.bpe import train_bpe
    from sae_ooc.tasks.natural.generate import render_natural
    from sae_ooc.tasks.natural.lists import load_names

    names = load_names("default")
    bpe = train_bpe([f" {n}'s mentor is the coach of the teacher of Who? It is We know that named As for, their"
                     for n in names for _ in range(2)], 2000)
    hf = PreTrainedTokenizerFast(tokenizer_object=bpe.tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    hf.save_pretrained(str(tmp_path / "ckpt"))
    from dataclasses import replace

    task = load_config(NATURAL, SMALL).task  # (a whole config with tokenizer: pretrained also needs a pretrained model.source)
    cfg = replace(task, natural=replace(task.natural, tokenizer="pretrained"))
    ds, vocab, layout, tok = render_natural(cfg, generate(cfg)[0], FEATURES, tmp_path / "ckpt")
    assert vocab.source == "pretrained" and vocab.d_vocab == bpe.tokenizer.get_vocab_size()
    assert vocab.bos_id == hf.bos_token_id and layout.n_pos == len(ds["test_id"][0]["input_ids"])
    with pytest.raises(Exception, match="model.path"):
        render_natural(cfg, generate(cfg)[0], FEATURES, None)


def test_question_ids_render_the_analysed_prompts_exactly(twohop, reversal):
    """TextVocab.question_ids / answer_token_ids (what circuits, pairs and analyses render prompts with) give every
    two-hop question's input_ids and answer_ids, token for token, and the layout's length; reversal: the inverse question."""
    _, ds, vocab = twohop
    n = 0
    for split in ("train", "valid_id", "test_id", "test_ood_sys", "test_unanswerable"):
        d = ds[split]
        for ids, ans, h, r1, r2, t, hop in zip(d["input_ids"], d["answer_ids"], d["head"], d["r1"], d["r2"], d["answer"], d["hop"]):
            if hop == 2:
                assert vocab.question_ids(h, r1, r2) == list(ids)
                assert vocab.answer_token_ids(t) == list(ans)
                assert len(ids) == vocab.layout.n_pos
                n += 1
    assert n > 50
    _, ds, vocab = reversal
    d = ds["test_id"]
    for ids, ans, h, r1, t in zip(d["input_ids"], d["answer_ids"], d["head"], d["r1"], d["answer"]):
        assert vocab.question_ids(h, r1) == list(ids) and vocab.answer_token_ids(t) == list(ans)


def test_a_missing_weights_directory_says_where_to_put_the_checkpoint(tmp_path, capsys):
    """The data stage of a fine-tuning config reads the checkpoint's tokenizer first: a missing directory is one line
    naming it and the download command (the Pythia hub id for a Pythia model), exit 2, and no data written."""
    for config, hub in (("finetune_gpt2.yaml", "download gpt2 "), ("finetune_pythia70m.yaml", "download EleutherAI/pythia-70m ")):
        root = tmp_path / config
        code = cli_main(["data", "--config", str(ROOT / "configs" / config), "--run", str(root), "--set", f"model.path={tmp_path / 'nope'}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "does not exist" in err and hub in err
        assert not (root / "data").exists()
