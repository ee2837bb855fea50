"""`sae-ooc query`: JSON checked against the model and an independent gradient, the compact view's features
against an independent ranking, ground truth against the task data, cached feature descriptions against a
brute-force pass and the live (circuit) path, the text views, and --help."""

import json

import pytest
import torch
from circuit_fixtures import HOOKS, make_run

from sae_ooc.cli import main as cli_main
from sae_ooc.commands.query import MAX_EXAMPLES
from sae_ooc.models.hooked import load_model
from sae_ooc.saes.features import DESCRIBE_EXAMPLES, FeatureStats, describe_features
from sae_ooc.saes.store import load_saes
from sae_ooc.tasks.data import SPLITS, load_task
from sae_ooc.query.cache import cache_path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    labels = {HOOKS[1]: [{"feature": f, "variable": "r1", "position": "r1", "value": "r2", "auroc": 0.97} for f in range(48)]}
    return make_run(tmp_path_factory.mktemp("query"), train_steps=20, labels=labels)


def _json(capsys, *argv):
    assert cli_main(["query", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _acts_and_grads(run, tokens, hook, target):
    """Feature activations and activation x gradient of logit(target) at `hook`, from the plain model and the SAE
    (the decoder direction carries the gradient), without the spliced model."""
    model, sae = load_model(run.model_dir), load_saes(run.saes_dir)[hook]
    x = {}

    def grab(t, hook=None):
        x["a"] = t.detach().requires_grad_(True)
        return x["a"]

    logits = model.run_with_hooks(tokens, fwd_hooks=[(hook, grab)])
    logits[0, -1, target].backward()
    with torch.no_grad():
        acts = sae.encode(x["a"].detach())[0]
        attr = acts * (x["a"].grad[0] @ sae.W_dec.T)
        err_attr = ((x["a"][0] - sae.decode(acts)) * x["a"].grad[0]).sum()  # the error node carries the gradient at x too
    return acts, attr, err_attr


def test_query_json(run, capsys):
    res = _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--top", "4")
    tokens = torch.tensor([[3, 13, 14]])
    probs = torch.softmax(load_model(run.model_dir)(tokens)[0, -1].detach(), -1)
    p, i = probs.topk(4)
    assert [a["token"] for a in res["answers"]] == [f"e{int(t)}" for t in i]
    assert [a["prob"] for a in res["answers"]] == pytest.approx(p.tolist(), abs=1e-5)
    assert res["target"] == res["answers"][0]["token"] and res["target_source"] == "the model's top answer"
    assert [(r["hook"], r["position"]) for r in res["hooks"]] == [(h, p) for h in HOOKS for p in range(3)]

    # attribution = activation x d logit(target) / d activation, via the decoder direction in the plain model
    acts, attr, _ = _acts_and_grads(run, tokens, HOOKS[1], int(i[0]))
    row = next(r for r in res["hooks"] if r["hook"] == HOOKS[1] and r["position"] == 2)
    assert row["n_active"] == int((acts[2] > 0).sum())
    for item in row["by_attribution"]:
        f = item["feature"]
        assert item["attribution"] == pytest.approx(float(attr[2, f]), rel=1e-3, abs=1e-5)
        assert item["activation"] == pytest.approx(float(acts[2, f]), abs=1e-5)
    assert [it["activation"] for it in row["by_activation"]] == sorted((it["activation"] for it in row["by_activation"]), reverse=True)
    assert all(it["activation"] > 0 for it in row["by_activation"])
    for it in row["by_activation"]:
        # positions are written pos:r1, so that they cannot be read as the relation token r1
        assert it["label"] == "r1=r2@pos:r1" and it["description"] == "r1=r2@pos:r1 (AUROC 0.97)"
        assert it["promoted"] and len(it["top_activations"]) <= 3
        assert all(ex["activation"] > 0 for ex in it["top_activations"])


def test_compact_view_picks_the_largest_attributions_over_all_positions(run, capsys):
    res = _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--target", "e5")
    acts, attr, err_attr = _acts_and_grads(run, torch.tensor([[3, 13, 14]]), HOOKS[1], 5)
    hook = next(h for h in res["per_hook"] if h["hook"] == HOOKS[1])
    assert hook["feature_attribution"] == pytest.approx(float(attr.sum()), rel=1e-3, abs=1e-5)
    assert hook["error_attribution"] == pytest.approx(float(err_attr), rel=1e-3, abs=1e-5)
    order = attr.abs().flatten().argsort(descending=True)[:3]
    want = [(int(j) // attr.shape[1], int(j) % attr.shape[1]) for j in order]
    assert [(it["position"], it["feature"]) for it in hook["features"]] == want
    for it in hook["features"]:
        assert it["attribution"] == pytest.approx(float(attr[it["position"], it["feature"]]), rel=1e-3, abs=1e-5)
        assert it["token"] == ["e3", "r1", "r2"][it["position"]]
    assert res["target"] == "e5" and res["target_source"] == "--target"
    # the last layer's residual stream before the last position cannot reach the answer: nothing listed there
    last = next(h for h in res["per_hook"] if h["hook"] == HOOKS[2])
    assert {it["position"] for it in last["features"]} <= {2}


def test_ground_truth_of_a_known_fact_and_of_a_prompt_outside_the_task(run, capsys):
    ds, vocab = load_task(run.data_dir)
    fact = ds["test_id"][0]
    prompt = vocab.decode(fact["input_ids"])
    res = _json(capsys, "--run", str(run.root), prompt, "--json")
    t = res["truth"]
    assert (t["answer"], t["bridge"], t["split"]) == (vocab.name(fact["answer"]), vocab.name(fact["bridge"]), "test_id")
    probs = torch.softmax(load_model(run.model_dir)(torch.tensor([fact["input_ids"]]))[0, -1].detach(), -1)
    for key, tok in (("answer_model", fact["answer"]), ("bridge_model", fact["bridge"])):
        assert t[key]["prob"] == pytest.approx(float(probs[tok]), abs=1e-5)
        assert t[key]["rank"] == 1 + int((probs > probs[tok]).sum())

    known = {tuple(ids) for s in SPLITS for ids in ds[s]["input_ids"]}
    E = vocab.n_entities
    outside = next((h, E + r) for h in range(E) for r in range(vocab.n_relations) if (h, E + r) not in known)
    res = _json(capsys, "--run", str(run.root), vocab.decode(outside), "--json")
    assert res["truth"] is None
    assert cli_main(["query", "--run", str(run.root), vocab.decode(outside)]) == 0
    assert "not a fact of the task" in capsys.readouterr().out


def test_compact_and_full_text(run, capsys):
    assert cli_main(["query", "--run", str(run.root), "e3 r1 r2", "--target", "e7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("prompt  e3 r1 r2") and "pos:r1 r1" in out[0] and out[1].startswith("truth")
    assert any("logit(e7)" in line for line in out) and out[-1].startswith("labels: bridge=e86@pos:r1")
    assert len(out) <= 4 + len(HOOKS) * 4 + 2  # header, per hook a title and at most --top 3 features, legend
    assert sum(line.startswith("blocks.") for line in out) == len(HOOKS)

    res = _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--full")
    assert cli_main(["query", "--run", str(run.root), "e3 r1 r2", "--full"]) == 0
    full = capsys.readouterr().out
    # the last layer's residual stream at positions 0 and 1 has active features whose attribution is exactly 0
    dead = [r for r in res["hooks"] if r["hook"] == HOOKS[2] and r["position"] < 2]
    assert all(r["n_active"] > 0 and not r["by_attribution"] for r in dead)
    for r in dead:
        assert f"{HOOKS[2]} @ pos:{r['role']}" in full
    assert full.count("active features reaches the answer: every attribution is 0") == len(dead)
    assert "(none active)" not in full and "top: " in full


def test_description_does_not_depend_on_the_examples_shown(run, capsys):
    desc = {}
    for n in (0, 3, MAX_EXAMPLES):
        res = _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--full", "--examples", str(n))
        items = [it for r in res["hooks"] for it in r["by_activation"]]
        assert all(len(it["top_activations"]) <= n for it in items) and any(len(it["top_activations"]) == n for it in items)
        assert not any(it["description"].startswith("inactive") for it in items)  # they are active on this prompt
        desc[n] = {(it["hook"], it["feature"]): it["description"] for it in items}
    assert desc[0] == desc[3] == desc[MAX_EXAMPLES]
    assert MAX_EXAMPLES == DESCRIBE_EXAMPLES  # the CLI's bound is what the cache holds


def test_cached_descriptions_match_a_brute_force_pass_and_the_circuit_path(run, capsys):
    res = _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--full", "--examples", "5")
    ds, vocab = load_task(run.data_dir)
    model, saes = load_model(run.model_dir), load_saes(run.saes_dir)
    prompts = list(dict.fromkeys(tuple(ids) for s in SPLITS for ids in ds[s]["input_ids"]))
    items = {(it["hook"], it["feature"]): it for r in res["hooks"] for it in r["by_activation"]}
    for h in HOOKS:
        # every (prompt, position) activation of every feature, the prompts of each length in one unpadded batch
        acts = {}
        for n in (2, 3):
            batch = [p for p in prompts if len(p) == n]
            _, cache = model.run_with_cache(torch.tensor(batch), names_filter=h)
            f = saes[h].encode(cache[h]).detach()
            acts.update({(p, pos): f[b, pos] for b, p in enumerate(batch) for pos in range(n)})
        for (hook, feat), it in items.items():
            if hook == h:
                best = sorted((float(a[feat]) for a in acts.values() if a[feat] > 0), reverse=True)[:5]
                assert [ex["activation"] for ex in it["top_activations"]] == pytest.approx([round(v, 4) for v in best], abs=1e-4)
    # the circuit stage describes its nodes live, without the cache: the same examples and promoted answers
    from sae_ooc.circuits.spliced import load_spliced

    wanted = {}
    for h, f in items:
        wanted.setdefault(h, []).append(f)
    live = describe_features(load_spliced(run), ds, vocab, run.sae_eval_dir, wanted, k_examples=5)
    for key, it in items.items():
        assert live[key]["top_activations"] == it["top_activations"] and live[key]["promoted"] == it["promoted"]
        assert live[key]["description"].replace("@", "@pos:") == it["description"]


def test_feature_cache_is_built_once_and_rebuilt_when_inputs_change(run, capsys, monkeypatch):
    ref = _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--full")
    path = cache_path(run)
    assert path.is_file()

    def refuse(*a, **k):
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(FeatureStats, "compute", refuse)
    assert _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--full") == ref
    monkeypatch.undo()

    path.write_bytes(b"garbage")  # a damaged cache is rebuilt, never an error
    assert _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--full") == ref
    assert path.stat().st_size > 100

    calls = []
    real = FeatureStats.compute
    monkeypatch.setattr(FeatureStats, "compute", lambda *a, **k: calls.append(1) or real(*a, **k))
    vocab_file = run.data_dir / "vocab.json"
    vocab_file.write_text(vocab_file.read_text() + "\n")  # any change to an input invalidates the key
    assert _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--full") == ref and calls == [1]


def test_help_shows_defaults_and_only_options_that_mean_something(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["query", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "(default: 3)" in out and "(default: cpu)" in out and "(default: None)" not in out and "(default: False)" not in out
    assert "--force" not in out and "--set" not in out and "--config" not in out and "--full" in out
    with pytest.raises(SystemExit):
        cli_main(["export", "--help"])
    assert "(default: 0)" in capsys.readouterr().out  # a default of 0 is shown like any other
    with pytest.raises(SystemExit) as e:
        cli_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("sae-ooc ")


def test_prompt_index_gives_the_live_numbers_and_needs_no_torch(run, capsys):
    """Compact queries of task prompts are read from the prompt index: the same answers, ranks and features (by an
    independent live computation per prompt), invalidated by a change of labels, and read without importing torch."""
    import subprocess
    import sys

    from sae_ooc.query.session import query
    from sae_ooc.query.index import index_paths, lookup

    ds, vocab = load_task(run.data_dir)
    prompts = [vocab.decode(ds[s][0]["input_ids"]) for s in ("test_id", "train", "atomic_test")]
    for prompt in prompts:
        live = query(run, prompt, top=3).to_json()  # builds the index when it is missing
        got = lookup(run, prompt, 3)
        assert got is not None and got.from_index is True, prompt
        got = got.to_json()
        assert got["truth"]["split"] == live["truth"]["split"] and got["truth"]["answer"] == live["truth"]["answer"]
        for key in ("answer_model", "bridge_model"):
            if live["truth"][key] is not None:
                assert got["truth"][key]["rank"] == live["truth"][key]["rank"]
                assert got["truth"][key]["prob"] == pytest.approx(live["truth"][key]["prob"], abs=1e-5)
        assert [a["token"] for a in got["answers"]] == [a["token"] for a in live["answers"]]
        assert [a["prob"] for a in got["answers"]] == pytest.approx([a["prob"] for a in live["answers"]], abs=1e-5)
        for g, w in zip(got["per_hook"], live["per_hook"], strict=True):
            assert g["feature_attribution"] == pytest.approx(w["feature_attribution"], abs=1e-4)
            assert [(i["feature"], i["position"], i["label"], i["description"]) for i in g["features"]] == \
                   [(i["feature"], i["position"], i["label"], i["description"]) for i in w["features"]]
            assert [i["attribution"] for i in g["features"]] == pytest.approx([i["attribution"] for i in w["features"]], abs=1e-4)
    assert lookup(run, prompts[0], 11) is None  # more than the index keeps: the live path
    code = ("import sys; from pathlib import Path; from sae_ooc.rundir import RunDir; from sae_ooc.config import Config; "
            "from sae_ooc.query.index import lookup; "
            f"r = lookup(RunDir(Path({str(run.root)!r}), Config()), {prompts[0]!r}, 3); "
            "assert r is not None and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    # new labels change the descriptions: the index is stale until a live query rebuilds it
    labels = run.sae_eval_dir / HOOKS[1] / "metrics.json"
    labels.write_text(labels.read_text() + "\n")
    assert lookup(run, prompts[0], 3) is None
    query(run, prompts[0])
    assert lookup(run, prompts[0], 3) is not None and index_paths(run)[0].is_file()
