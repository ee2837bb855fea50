"""The natural-language task through every stage of the pipeline (a small GPT-2-architecture model and a BPE
trained here), and the numbers that differ from the toy's checked against independent computations: multi-token
answers scored by their whole sequence, the pair metric as a log-probability difference of two sequences, the
roles of harvested tokens, the query's view of a prompt."""

from __future__ import annotations

import json

import pytest
import torch

from sae_ooc.cli import main
from sae_ooc.rundir import RunDir
from sae_ooc.stages import PIPELINE_STAGES
from sae_ooc.tasks.data import load_task, split_tensors

from conftest import NATURAL, copy_run

# sae_eval.absorption off: SAEBench's absorption (an L1 probe and sparse probes per value) was a tenth of this file's CPU
# time; tests/test_standard_metrics.py checks it against SAEBench's cases and the toy's eval-sae (tests/test_sae.py)
# runs it; no test here reads it
BUDGETS = ("sae_eval.absorption=false", "sae.expansion_factor=2", "sae.k=8", "sae.k_by_hook={blocks.0.hook_resid_pre: 3}", "sae.training_tokens=8192",
           "sae.batch_size=128", "sae_eval.probe_steps=40", "sae_eval.n_controls=1", "attribution.n_pairs=32",
           "attribution.ig_steps=5", "attribution.verify_top=32", "attribution.validate_pairs=8", "circuit.top_n=20",
           "circuit.mean_examples=256", "circuit.curve_sizes=[0, 2, 5, 20]", "circuit.edge_check=4", "circuit.edge_counts=[2, 5]",
           "circuit.random_edge_sets=8", "circuit.edge_pool_nodes=50", "circuit.prune_pairs=4", "circuit.prune_step=0.1",
           "analyze.n_prompts=24", "analyze.noise_samples=2", "analyze.probe_steps=40", "causal.das_steps=5", "causal.ranks=[1, 4]",
           "causal.feature_counts=[1, 4]", "causal.random_draws=2", "causal.probe_steps=20", "causal.bootstrap=50",
           "analyze.example_prompts=1", "analyze.probe_max_select=200", "edit.n_edits=8", "edit.value_steps=20",
           "edit.specificity_prompts=16", "edit.trace_samples=2", "edit.bootstrap=100", "edit.covariance_examples=1024",
           "variables.bootstrap=100", "variables.max_groups=10", "variables.random_draws=20", "causal.variable_ranks=[4]")


@pytest.fixture(scope="module")
def natural_run(natural_trained, tmp_path_factory) -> RunDir:
    """The shared natural run (data, train) through every later stage, at budgets that take seconds (the toy's tests
    check what larger budgets buy)."""
    import sae_ooc.browse.browse as browse_stage
    from sae_ooc.pipeline import run as run_pipeline

    run = copy_run(natural_trained, tmp_path_factory.mktemp("natural_pipeline") / "run", BUDGETS, config=NATURAL)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(browse_stage, "screenshot", lambda *a, **k: None)  # no Chromium: tests/test_browse.py takes one
        results = run_pipeline(run)
    assert [r.name for r in results if r.finished] == list(PIPELINE_STAGES)
    assert [r.name for r in results if not r.ran] == ["data", "train"]  # the copy's own, kept
    return run


def _model(run):
    from sae_ooc.models.hooked import load_model

    return load_model(run.model_dir)


def test_the_model_is_sized_by_the_tokenizer_and_the_layout(natural_run):
    _, vocab = load_task(natural_run.data_dir)
    model = _model(natural_run)
    assert vocab.layout.render == "natural" and vocab.layout.answer_len == 2
    assert model.cfg.d_vocab == vocab.d_vocab == vocab.tokenizer.get_vocab_size()
    assert model.cfg.n_ctx == vocab.layout.seq_len


@torch.no_grad()
def test_accuracy_is_greedy_decoding_of_the_whole_answer(natural_run):
    """The final metrics' accuracy (teacher-forced, every answer token the argmax) equals decoding greedily token by
    token from the prompt alone, and the loss is the answer's summed negative log-probability."""
    ds, vocab = load_task(natural_run.data_dir)
    model = _model(natural_run).eval()
    fm = json.loads((natural_run.model_dir / "final_metrics.json").read_text())
    for split in ("test_id", "atomic_test"):
        hits, nll = 0, 0.0
        for ids, ans in zip(ds[split]["input_ids"], ds[split]["answer_ids"]):
            seq = list(ids)
            for _ in ans:
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
            hits += seq[len(ids):] == list(ans)
            logp = torch.log_softmax(model(torch.tensor([list(ids) + list(ans)[:-1]]))[0].double(), -1)
            nll -= sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(ans))
        assert fm["accuracy"][split] == pytest.approx(hits / len(ds[split]), abs=1e-9)
        assert fm["loss"][split] == pytest.approx(nll / len(ds[split]), rel=1e-4)


@torch.no_grad()
def test_the_pair_metric_is_the_log_probability_difference_of_the_two_answers(natural_run):
    from sae_ooc.circuits.pairs import make_pairs

    ds, vocab = load_task(natural_run.data_dir)
    model = _model(natural_run).eval()
    pairs = make_pairs(ds, vocab, "all", 6, seed=0)
    assert len(pairs) == 12 and pairs.cont_is_answer.tolist() == [True, False] * 6  # two rows a pair
    m = pairs.metric(model(pairs.clean), "logit_diff")
    m_corrupt = pairs.metric(model(pairs.corrupt), "logit_diff", corrupt=True)

    def logp(prompt, answer):
        lp = torch.log_softmax(model(torch.tensor([prompt + answer[:-1]]))[0].double(), -1)
        return sum(float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer))

    for i in range(0, len(pairs), 2):
        h, r1, r2 = int(pairs.head[i]), int(pairs.r1[i]), int(pairs.r2[i])
        x = vocab.question_ids(h, r1, r2)
        assert pairs.clean[i, : len(x)].tolist() == x
        t, t2 = vocab.answer_token_ids(int(pairs.answer[i])), vocab.answer_token_ids(int(pairs.answer_corrupt[i]))
        want = logp(x, t) - logp(x, t2)
        assert float(m[i] + m[i + 1]) / 2 == pytest.approx(want, rel=1e-4, abs=1e-4)  # the pair's mean over its rows
        xc = pairs.corrupt[i, : len(x)].tolist()
        assert float(m_corrupt[i] + m_corrupt[i + 1]) / 2 == pytest.approx(logp(xc, t2) - logp(xc, t), rel=1e-4, abs=1e-4)


def test_harvested_roles_are_the_questions_tokens_only(natural_run):
    """Only tokens of analysed questions carry a role (their layout position); training documents' tokens carry
    none, and a token's prefix id is shared exactly by the rows with the same token prefix."""
    from sae_ooc.activations.cache import PREFIX_COLUMN, ActivationCache

    ds, vocab = load_task(natural_run.data_dir)
    tok = ActivationCache(natural_run.activations_dir).tokens()
    role, pos = tok["role"].long(), tok["pos"].long()
    n_questions = sum(h == 2 for s in ds for h in ds[s]["hop"])
    assert int((role >= 0).sum()) == n_questions * vocab.layout.n_pos
    assert torch.equal(role[role >= 0], pos[role >= 0])
    assert int((tok["hop"][role >= 0] == 2).all())
    prefixes = {}
    start = 0
    for i in range(len(pos)):
        start = i if pos[i] == 0 else start
        key = tuple(tok["token"][start : i + 1].tolist())
        assert prefixes.setdefault(key, int(tok[PREFIX_COLUMN][i])) == int(tok[PREFIX_COLUMN][i])
    assert len(set(prefixes.values())) == len(prefixes)


def test_circuit_nodes_are_named_by_the_layout(natural_run):
    _, vocab = load_task(natural_run.data_dir)
    full = json.loads((natural_run.circuit_dir / "circuit.json").read_text())
    assert full["metadata"]["positions"] == list(vocab.layout.node_names)
    assert "head" in full["metadata"]["positions"] and "answer.1" in full["metadata"]["positions"]
    assert full["metadata"]["n_heldout_pairs"] > 0


def test_layout_positions_roles_or_every_token(natural_run):
    from sae_ooc.tasks.layout import TOY_LAYOUT

    _, vocab = load_task(natural_run.data_dir)
    lay = vocab.layout
    assert [lay.position_names[p] for p in lay.positions("roles")] == ["head", "r1", "r2", "last"]
    assert lay.positions("all") == list(range(lay.n_pos)) and len(lay.span("head")) == 2
    assert TOY_LAYOUT.positions("roles") == TOY_LAYOUT.positions("all") == [0, 1, 2]


def test_eval_sae_labels_name_entities(natural_run):
    _, vocab = load_task(natural_run.data_dir)
    metrics = [json.loads(f.read_text()) for f in natural_run.sae_eval_dir.glob("*/metrics.json")]
    positions = {rec["position"] for m in metrics for rec in (m.get("alignment") or {}).values()}
    assert positions and positions <= {"head", "r1", "r2", "last"}  # sae_eval.positions: roles, the default
    names = set(vocab.planted_names)
    values = [v["value"] for f in natural_run.sae_eval_dir.glob("*/metrics.json")
              for rec in (json.loads(f.read_text()).get("alignment") or {}).values() for v in rec.get("values") or []]
    assert values and all(v in names for v in values)


def test_query_reads_a_question_by_its_roles(natural_run, capsys):
    ds, vocab = load_task(natural_run.data_dir)
    d = ds["test_id"]
    ids, h, r1, r2 = d["input_ids"][0], d["head"][0], d["r1"][0], d["r2"][0]
    text = vocab.decode(ids)
    assert main(["query", "--run", str(natural_run.root), text, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tokens"] == [vocab.name(i) for i in vocab.question_ids(h, r1, r2)]
    assert res["roles"] == [f"pos:{r}" for r in vocab.layout.position_names]
    st = split_tensors(ds["test_id"], vocab)
    assert res["truth"]["answer"] == vocab.name(vocab.answer_token_ids(d["answer"][0])[0]) == vocab.name(int(st.answer[0]))
    assert main(["query", "--run", str(natural_run.root), text, "--target", vocab.entity_name(0)]) == 0
    assert main(["query", "--run", str(natural_run.root), text, "--target", "Nobody Atall"]) == 2


def test_the_prompt_index_serves_natural_prompts_with_the_live_numbers(natural_run):
    """A natural task's prompts (text, a tokenizer) are looked up in the prompt index like the toy's: the same answers,
    ranks and features as the live computation, for a question, a training document and a held-out paraphrase."""
    from sae_ooc.query.session import query
    from sae_ooc.query.index import lookup

    ds, vocab = load_task(natural_run.data_dir)
    for split in ("test_id", "train", "atomic_test"):
        prompt = vocab.decode(ds[split][0]["input_ids"])
        live = query(natural_run, prompt, top=3).to_json()  # typed results (QueryResult), compared as what --json prints
        got = lookup(natural_run, prompt, 3)
        assert got is not None and got.from_index is True, prompt
        got = got.to_json()
        assert got["tokens"] == live["tokens"] and got["roles"] == live["roles"]
        assert got["truth"]["answer"] == live["truth"]["answer"] and got["truth"]["split"] == split
        assert got["truth"]["answer_model"]["rank"] == live["truth"]["answer_model"]["rank"]
        assert [a["token"] for a in got["answers"]] == [a["token"] for a in live["answers"]]
        for g, w in zip(got["per_hook"], live["per_hook"], strict=True):
            assert [(i["feature"], i["position"], i["role"]) for i in g["features"]] == \
                   [(i["feature"], i["position"], i["role"]) for i in w["features"]]


def test_steering_at_the_answer_position_of_a_natural_question(natural_run, tmp_path, capsys):
    """`last` is a role of a natural task's question (the token before the answer): steer runs there, at the layout's
    last position; the toy's question has no such role and says so in one line."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(natural_run.root, root, copy_function=shutil.copy2)
    assert main(["steer", "--run", str(root), "--set", "steer.positions=[last]"]) == 0
    steer = json.loads((root / "steer" / "steer.json").read_text())
    _, vocab = load_task(natural_run.data_dir)
    assert {r["position"] for r in steer["rows"]} == {"last"}
    assert steer["settings"]["position_index"] == {"last": vocab.layout.answer_pos}


def test_a_toy_run_has_no_last_role(harvested_run, tmp_path):
    from sae_ooc.errors import UserError
    from sae_ooc.interventions.steer import run_steer

    run = copy_run(harvested_run, tmp_path / "toy", ["steer.positions=[last]"])
    with pytest.raises(UserError, match="last is not a role of this task's question"):
        run_steer(run)


def test_edit_stage_on_a_natural_task(natural_run):
    """Natural-language facts: atomic prompts are training documents, propagation targets are the facts' answers
    (as the dataset tokenizes them), and an edit of the last layer at a key before the answer position is exactly
    nothing (no gradient reaches its value): efficacy as before the edit, every answer kept."""
    from sae_ooc.interventions.editing import KINDS, build_eval_set, choose_edits
    from sae_ooc.interventions.facts import Facts, atomic_template
    from sae_ooc.io import read_json
    from sae_ooc.models.hooked import load_model

    run = natural_run  # its edit stage ran at this file's budgets (BUDGETS)
    ds, vocab = load_task(run.data_dir)
    facts = Facts.from_dataset(ds, vocab, "twohop", atomic_template(run.cfg.task))
    train = {}
    for r in ds["train"]:
        train.setdefault((r["head"], r["r1"], r["hop"]), []).append((r["input_ids"], r["answer_ids"]))
    model = load_model(run.model_dir, "cpu")
    edits = choose_edits(facts, model, 4, 0)
    assert edits
    es = build_eval_set(facts, model, edits, 4, 0)
    documents = {tuple(ids) for (_, _, hop), rows in train.items() if hop == 1 for ids, _ in rows}
    for i in range(len(es.tokens)):
        prompt = es.tokens[i, : int(es.answer_pos[i]) + 1].tolist()
        kind, e = KINDS[int(es.kind[i])], edits[int(es.edit[i])]
        if kind == "efficacy":  # the edited fact asked as one of its own training documents
            assert prompt in [ids for ids, _ in train[(e["h"], e["r1"], 1)]]
        if kind in ("same_head", "atomic"):
            assert tuple(prompt) in documents
        if kind == "propagation":  # t(b', r2): the train fact (b', r2)'s answer, as the dataset tokenized it
            r2 = next(r for r in facts.relations[e["b"]] if prompt == vocab.question_ids(e["h"], e["r1"], r))
            assert es.target_ids[i].tolist() == train[(e["b2"], r2, 1)][0][1]
            assert es.old_ids[i].tolist() == train[(e["b"], r2, 1)][0][1]
    e = read_json(run.edit_dir / "edit.json")
    pos = e["settings"]["positions"]
    assert pos == {"key": vocab.layout.index("r1"), "atomic_answer": pos["key"] + 1, "two_hop_answer": vocab.layout.answer_pos,
                   "two_hop_shares_key": True}
    last = e["by_layer"][-1]
    assert last["value_change_norm"]["mean"] < 1e-4
    assert last["efficacy"]["share"] == e["before_any_edit"]["efficacy"]["share"] == 0.0
    assert last["specificity_atomic"]["share"] == last["specificity_two_hop"]["share"] == 1.0
    per = read_json(run.edit_dir / "edits.json")
    assert {p["b2_name"] for p in per} <= set(vocab.entity_names)


def test_a_natural_language_run_is_fine_tuned_on_new_facts_as_text(natural_trained, tmp_path):
    """The natural task as model.run (issue 24: the experiment moves to finetune_gpt2.yaml's task unchanged): the new
    facts are documents and questions in model.run's names, nouns and tokenizer, decoded here and checked against the
    templates; the pretrained-checkpoint configs accept the section with model.source: run."""
    import yaml
    from test_natural_task import prompt_of

    from sae_ooc.config import load_config
    from conftest import ROOT

    out, config = tmp_path / "nat", tmp_path / "nat.yaml"
    task = yaml.safe_load((natural_trained.root / "config.yaml").read_text())["task"]  # model.run's task section
    config.write_text(yaml.safe_dump({"name": "nat_ft", "task": {**task, "finetune": {"control": True}},
                                      "model": {"source": "run", "run": str(natural_trained.root)}}))
    assert main(["data", "--config", str(config), "--run", str(out)]) == 0
    ds, v = load_task(out / "data")
    src, sv = load_task(natural_trained.data_dir)
    assert v.entity_names == sv.entity_names and v.relation_names == sv.relation_names and v.layout == sv.layout
    nat = load_config(NATURAL).task.natural
    old = {(h, r) for h, r in zip(src["atomic_test"]["head"], src["atomic_test"]["r1"])}
    name, rel = v.entity_name, v.relation_name
    for split in ("train", "atomic_test", "new_old", "old_new"):
        for r in ds[split]:
            prompt, answer = v.decode(r["input_ids"]).strip(), v.decode(r["answer_ids"])
            assert answer == " " + name(r["answer"])
            if r["hop"] == 2:
                assert prompt == prompt_of(nat.question_template, a=name(r["head"]), r1=rel(r["r1"]), r2=rel(r["r2"]))
            else:
                assert (r["head"], r["r1"]) not in old  # a new fact
                tpls = nat.train_templates if split == "train" else nat.test_templates
                assert prompt in {prompt_of(t, a=name(r["head"]), r=rel(r["r1"])) for t in tpls}
    new = {(r["head"], r["r1"]) for r in ds["atomic_test"]}
    assert sum(r["hop"] == 1 for r in ds["train"]) == len(new) * len(nat.train_templates)
    assert ds["test_id"]["input_ids"] == src["test_id"]["input_ids"]
    # the report's rows: atomic_test asks the new facts in held-out paraphrases (not in-sample), train holds their documents
    # (in-sample); accuracies written by hand here, as the train stage would (no training needed to read them back)
    from sae_ooc.io import write_json
    from sae_ooc.report.doc import Doc
    from sae_ooc.report.finetune import finetune_section
    from sae_ooc.rundir import RunDir

    acc = {s: 0.1 * (i + 1) for i, s in enumerate(ds)}
    write_json(out / "model" / "final_metrics.json", {
        "steps": 3, "stopped_early": True, "stop_split": "train", "minutes": 0.1, "accuracy": acc, "loss": acc,
        "majority_rate": acc, "n_examples": {s: len(ds[s]) for s in ds},
        **{f"{s}_{t}_{u}": None for s in ("valid_id", "test_id") for t in (0.5, 0.9) for u in ("step", "minutes")}})
    doc = Doc(RunDir(out, load_config(config)))
    finetune_section(doc)
    got = {x["name"]: x for x in doc.numbers}
    assert got["finetune.train.acc"]["value"] == pytest.approx(acc["train"]) and got["finetune.train.acc"]["in_sample"]
    assert got["finetune.new_atomic.acc"]["value"] == pytest.approx(acc["atomic_test"])
    assert not got["finetune.new_atomic.acc"]["in_sample"] and "held-out paraphrases" in got["finetune.new_atomic.acc"]["measured_on"]
    for name_ in ("finetune_gpt2", "finetune_pythia70m"):
        cfg = load_config(ROOT / "configs" / f"{name_}.yaml", ["model.source=run", f"model.run={natural_trained.root}",
                                                               "model.path=", "model.name=", "task.finetune.replay=0.5"])
        assert cfg.task.finetune.replay == 0.5 and cfg.task.render == "natural"
