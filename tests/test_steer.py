"""Feature steering: b' = b changes nothing, a steering delta on the plain model equals the same feature change in the
spliced model (error term kept), the random control's counts and norms, and the `steer` stage's files."""

import pytest
import torch
from circuit_fixtures import HOOKS, make_run, mark_stages, topk_sae
from test_stage_outputs import check_line

from sae_ooc.circuits.spliced import load_spliced
from sae_ooc.interventions.facts import Facts, atomic_template, wilson
from sae_ooc.interventions.prompts import read_batched
from sae_ooc.interventions.steer import steer_prompts
from sae_ooc.interventions.steering import (
    bridge_feature_matrix,
    decode_delta,
    logits_with_delta,
    matched_norm,
    random_masks,
    steering_masks,
    switched,
    typical_activation,
)
from sae_ooc.io import read_json, write_json
from sae_ooc.models.evaluate import answer_scores
from sae_ooc.models.hooked import load_model
from sae_ooc.pipeline import run_stage
from sae_ooc.saes.store import METRICS_FILE
from sae_ooc.tasks.data import load_task, split_tensors

LABELS = {HOOKS[1]: [{"feature": f, "variable": "bridge", "position": "r1", "value": f"e{f % 6}", "auroc": 0.95} for f in range(18)]
          + [{"feature": 30, "variable": "head", "position": "r1", "value": "e0", "auroc": 0.99}]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("steer"), train_steps=100, labels=LABELS,
                    overrides=("steer.only_correct=false", "steer.random_draws=3", "steer.typical_examples=64"))


def test_bridge_matrix_reads_only_bridge_labels_at_the_position():
    labels = {3: [{"variable": "bridge", "position": "r1", "value": "e2"}], 4: [{"variable": "bridge", "position": "r2", "value": "e2"}],
              5: [{"variable": "head", "position": "r1", "value": "e2"}]}
    M = bridge_feature_matrix(labels, "r1", {"e2": 2}, 4, 8)
    assert M.nonzero().tolist() == [[2, 3]]


def test_steering_on_the_plain_model_equals_the_spliced_model(run):
    """The delta added to the residual is exactly the feature change made inside the spliced model, error term kept."""
    sp = load_spliced(run)
    ds, vocab = load_task(run.data_dir)
    st = split_tensors(ds["test_id"], vocab)
    hook, pos = HOOKS[1], 1
    _, vals = sp.cache(st.tokens)
    f = vals.acts[hook][:, pos]
    M = bridge_feature_matrix({k: [v] for k, v in ((lab["feature"], lab) for lab in LABELS[hook])}, "r1",
                              {f"e{i}": i for i in range(vocab.n_entities)}, vocab.n_entities, f.shape[1])
    b2 = (st.bridge + 1) % 6
    off, on = steering_masks(M, st.bridge, b2)
    typ = typical_activation(f) + 0.5
    new = switched(f, off, on, typ)
    assert (new != f).any()
    ours = logits_with_delta(sp.base, st.tokens, st.answer_pos, hook, pos, decode_delta(sp.saes[hook], f, new))

    def acts_fn(h, a):
        if h != hook:
            return None
        a = a.clone()
        a[:, pos] = new
        return a

    lg = sp.run(st.tokens, acts_fn=acts_fn)
    theirs = lg[torch.arange(len(st)), st.answer_pos]
    assert torch.allclose(ours, theirs, atol=1e-4)
    # b' = b: nothing to switch, the logits are the model's own, bit for bit
    off, on = steering_masks(M, st.bridge, st.bridge)
    assert not off.any() and not on.any()
    same = logits_with_delta(sp.base, st.tokens, st.answer_pos, hook, pos, decode_delta(sp.saes[hook], f, switched(f, off, on, typ)))
    assert torch.equal(same, logits_with_delta(sp.base, st.tokens, st.answer_pos, hook, pos, None))


def test_random_control_switches_as_many_unlabelled_features_at_matched_norm():
    g = torch.Generator().manual_seed(0)
    f = torch.relu(torch.randn(5, 40, generator=g))
    labelled = torch.zeros(40, dtype=torch.bool)
    labelled[:6] = True
    typ = torch.rand(40, generator=g) + 0.1
    n_off, n_on = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([2, 2, 0, 1, 3])
    off, on = random_masks(f, n_off, n_on, labelled, typ, g)
    assert off.sum(1).tolist() == n_off.tolist() and on.sum(1).tolist() == n_on.tolist()
    assert not (off | on)[:, :6].any() and (f[off] > 0).all() and (f[on] == 0).all()
    ref = torch.randn(5, 7, generator=g)
    m = matched_norm(torch.randn(5, 7, generator=g), ref)
    assert torch.allclose(m.norm(dim=-1), ref.norm(dim=-1))


@pytest.mark.parametrize("n", [2, 7, 11, 124])
def test_share_interval_contains_the_share_at_0_and_1(n):
    # at k = 0 the Wilson lower end came out 2.8e-17 for n = 11: the steer figure's error bar went negative and the
    # stage stopped on an untrained model (no prompt switched)
    for k in (0, n):
        lo, hi = wilson(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo, hi = wilson(n // 2, n)
    assert 0.0 < lo < n // 2 / n < hi < 1.0  # interior shares keep a proper interval


def test_steer_stage(run):
    result = run_stage(run, "steer")
    s = read_json(run.steer_dir / "steer.json")
    rows = {(r["hook"], r["position"]): r for r in s["rows"]}
    assert set(rows) == {(h, p) for h in HOOKS for p in ("r1", "r2")}
    r = rows[(HOOKS[1], "r1")]
    assert r["covered_by_features"] > 0 and r["n_bridge_features"] == 18
    m = r["methods"]
    assert m["features_same_bridge"]["max_abs_logit_change"] == 0.0  # b' = b changes nothing
    assert m["features_same_bridge"]["consistent_logit_change"]["mean"] == 0.0
    assert m["random"]["n_draws"] == 3 and len(m["random"]["draws"]) == 3
    for key in ("features", "resid_patch"):
        sh = m[key]
        assert sh["consistent"]["share"] + sh["unchanged"]["share"] + sh["other"]["share"] == pytest.approx(1.0)
    assert "features" not in rows[(HOOKS[0], "r1")]["methods"]  # no labels there: baselines only
    check_line(run, "steer", result)
    # the labels were chosen on prefixes that include most of the steered prompts' prefixes: every steer number is in-sample
    from sae_ooc.report.doc import Doc
    from sae_ooc.report.interventions import steer_section

    doc = Doc(run)
    steer_section(doc)
    steer = [n for n in doc.numbers if n["name"].startswith("steer.")]
    assert {n["name"] for n in steer} >= {f"steer.{HOOKS[1]}@r1.features_consistent", f"steer.{HOOKS[1]}@r1.resid_patch_consistent"}
    assert all(n["in_sample"] for n in steer)


# --- a natural-language task: prompts are the task's questions, answers whole names, labels name entities -------------


@pytest.fixture(scope="module")
def natural(natural_trained, tmp_path_factory):
    """The small natural run with random TopK SAEs and bridge labels that name entities (as eval-sae writes them)."""
    from conftest import NATURAL, copy_run

    run = copy_run(natural_trained, tmp_path_factory.mktemp("steer_nat") / "run", config=NATURAL,
                   overrides=("steer.only_correct=false", "steer.random_draws=3", "steer.typical_examples=64"))
    ds, vocab = load_task(run.data_dir)
    d = load_model(run.model_dir, "cpu").cfg.d_model
    labels = [{"feature": f, "variable": "bridge", "position": "r1", "value": vocab.entity_name(f % 6), "auroc": 0.95} for f in range(12)]
    for i, h in enumerate(HOOKS):
        topk_sae(h, d, seed=i).save_model(run.saes_dir / h)
        write_json(run.sae_eval_dir / h / METRICS_FILE, {"feature_labels": labels if h == HOOKS[1] else []})
    mark_stages(run, ("harvest", "train-sae", "eval-sae"))
    return run, ds, vocab


def test_natural_steered_prompts_are_the_task_questions(natural):
    """Every steered prompt is its test_id row's question token for token, and the clean answers (greedy decoding of
    whole names) agree with the teacher-forced evaluation of the dataset rows."""
    run, ds, vocab = natural
    facts = Facts.from_dataset(ds, vocab, "twohop", atomic_template(run.cfg.task))
    model = load_model(run.model_dir, "cpu")
    P = steer_prompts(run, facts, model, run.cfg.steer)
    rows = {(r["head"], r["r1"], r["r2"]): r for r in ds["test_id"] if r["hop"] == 2}
    assert len(P["tokens"]) > 0 and P["tokens"].shape[1] >= vocab.layout.seq_len
    for tok, pos, (h, r1, r2), a in zip(P["tokens"], P["answer_pos"], P["planted"].tolist(), P["answer"]):
        row = rows[(h, r1, r2)]
        assert tok[: int(pos) + 1].tolist() == row["input_ids"] == vocab.question_ids(h, r1, r2)
        assert facts.answer_ids([a])[0].tolist() == row["answer_ids"]
        assert int(pos) == vocab.layout.answer_pos
    st = split_tensors(ds["test_id"], vocab)
    st = st.subset((st.hop == 2).nonzero().squeeze(1))
    with torch.no_grad():
        lp, hit = answer_scores(model(st.tokens), st.answer_pos, st.answer_ids)
    assert P["n_correct"] == int(hit.sum())
    # the teacher-forced log-probability read_answers gives equals the one of the dataset's own rows
    tok, pos = facts.tokens([tuple(p) for p in P["planted"].tolist()])
    order = [[tuple(r) for r in zip(st.variable("head").tolist(), st.variable("r1").tolist(), st.variable("r2").tolist())].index(tuple(p))
             for p in P["planted"].tolist()]
    ours = read_batched(model, tok, pos, facts.answer_len, 7, targets=facts.answer_ids(P["answer"])).logprob
    assert torch.allclose(ours, lp[order], atol=1e-4)


def test_natural_steer_stage(natural):
    run, _, vocab = natural
    result = run_stage(run, "steer")
    s = read_json(run.steer_dir / "steer.json")
    positions = run.cfg.steer.positions  # configs/natural_tiny.yaml: r1 and last
    assert s["settings"]["position_index"] == {p: vocab.layout.index(p) for p in positions}
    assert s["settings"]["position_index"].get("last", vocab.layout.answer_pos) == vocab.layout.answer_pos
    rows = {(r["hook"], r["position"]): r for r in s["rows"]}
    assert set(rows) == {(h, p) for h in HOOKS for p in positions}
    r = rows[(HOOKS[1], "r1")]
    assert r["n_bridge_features"] == 12 and r["n_labelled_bridges"] == 6 and r["covered_by_features"] > 0  # labels read by name
    m = r["methods"]
    assert m["features_same_bridge"]["max_abs_logit_change"] == 0.0  # b' = b changes nothing
    assert m["features_same_bridge"]["consistent_logprob_change"]["mean"] == 0.0
    for key in ("features", "resid_patch", "resid_patch_same_bridge"):
        sh = m[key]
        assert sh["consistent"]["share"] + sh["unchanged"]["share"] + sh["other"]["share"] == pytest.approx(1.0)
        assert sh["consistent_logprob"]["mean"] < 0
    assert "features" not in rows[(HOOKS[0], "r1")]["methods"]
    check_line(run, "steer", result)
