"""ROME rank-one edits and causal tracing: the closed form against an independent constrained least-squares solve, the
edited layer mapping the key to the value, batched edits against weight edits, known answers on hand-built models
(a dead MLP, a model whose positions never talk), a zero edit keeping everything, and the `edit` stage's files."""

import pytest
import torch
from circuit_fixtures import make_run
from test_stage_outputs import check_line
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_ooc.interventions.editing import (
    KINDS,
    EvalSet,
    build_eval_set,
    choose_edits,
    edited_logits,
    row_outcomes,
)
from sae_ooc.interventions.facts import Facts, answer_logits, atomic_template
from sae_ooc.interventions.rome import (
    RankOneEdits,
    applied,
    key_second_moment,
    mlp_keys,
    optimise_values,
    out_hook,
    rank_one,
)
from sae_ooc.analyses.tracing import trace_effects
from sae_ooc.io import read_json
from sae_ooc.models.hooked import load_model
from sae_ooc.pipeline import run_stage
from sae_ooc.tasks.data import SEQ_LEN, load_task


def hand_model(vocab, dead_layer: int | None = None, no_flow: bool = False, seed: int = 0) -> HookedTransformer:
    """2 layers, ReLU MLPs, no LayerNorm. `dead_layer`: that MLP's hidden activation is always exactly 0. `no_flow`:
    attention writes a constant (W_V = 0), so no position ever reads another."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=vocab.d_vocab, d_vocab_out=vocab.d_vocab,
                                  n_ctx=SEQ_LEN, act_fn="relu", normalization_type=None, seed=seed, default_prepend_bos=False)
    m = HookedTransformer(cfg)
    with torch.no_grad():
        if dead_layer is not None:
            m.blocks[dead_layer].mlp.W_in.zero_()
            m.blocks[dead_layer].mlp.b_in.fill_(-1.0)
        if no_flow:
            for b in m.blocks:
                b.attn.W_V.zero_()
                b.attn.b_V.zero_()
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def task(tiny_task):
    ds, vocab = tiny_task
    return ds, vocab, Facts.from_dataset(ds, vocab, "twohop")


def test_closed_form_is_the_constrained_least_squares_solution():
    """k @ W' = v exactly, and W' - W is the smallest change in the C-norm that does it (KKT system solved directly)."""
    g = torch.Generator().manual_seed(0)
    d_mlp, d_model = 6, 4
    A = torch.randn(d_mlp, d_mlp, generator=g, dtype=torch.float64)
    C = A @ A.T + 0.1 * torch.eye(d_mlp, dtype=torch.float64)
    W, k, v = (torch.randn(s, generator=g, dtype=torch.float64) for s in ((d_mlp, d_model), (1, d_mlp), (1, d_model)))
    ed = rank_one(W, C, k, v, 0)
    W2 = W + torch.outer(ed.u[0].double(), ed.d[0].double())
    assert torch.allclose(k @ W2, v, atol=1e-5)
    # each column j of the change: min delta^T C delta subject to k . delta = v_j - (k @ W)_j
    kkt = torch.zeros(d_mlp + 1, d_mlp + 1, dtype=torch.float64)
    kkt[:d_mlp, :d_mlp], kkt[:d_mlp, d_mlp], kkt[d_mlp, :d_mlp] = 2 * C, k[0], k[0]
    rhs = torch.zeros(d_mlp + 1, d_model, dtype=torch.float64)
    rhs[d_mlp] = (v - k @ W)[0]
    delta = torch.linalg.solve(kkt, rhs)[:d_mlp]
    assert torch.allclose(W2 - W, delta, atol=1e-5)


def test_edited_layer_maps_the_key_to_the_value_and_is_restored(task):
    ds, vocab, facts = task
    model = hand_model(vocab)
    (h, r, t), = facts.atomic()[:1]
    tok, pos = facts.tokens([(h, r)])
    L = 1
    keys = mlp_keys(model, facts.tokens([a[:2] for a in facts.atomic()])[0], [L])[L]
    C = key_second_moment(keys, torch.ones(keys.shape[:2], dtype=torch.bool), 1e-3)
    k, v = optimise_values(model, tok, pos, 1, L, torch.tensor([(t + 1) % vocab.n_entities]), 30, 0.2, 4.0, 0.01)
    ed = rank_one(model.blocks[L].mlp.W_out, C, k, v, L)
    before = model.blocks[L].mlp.W_out.clone()
    with applied(model, ed, 0):
        _, cache = model.run_with_cache(tok, names_filter=out_hook(L))
        assert torch.allclose(cache[out_hook(L)][0, 1], v[0] + model.blocks[L].mlp.b_out, atol=1e-4)
    assert torch.equal(model.blocks[L].mlp.W_out, before)


def test_batched_edits_equal_weight_edits_one_at_a_time(task):
    ds, vocab, facts = task
    model = hand_model(vocab)
    edits = choose_edits(facts, model, 4, 0) or [{"h": a[0], "r1": a[1], "b": a[2], "b2": (a[2] + 1) % 12} for a in facts.atomic()[:4]]
    es = build_eval_set(facts, model, edits, 3, 0)
    L = 0
    g = torch.Generator().manual_seed(1)
    ed = RankOneEdits(L, torch.randn(len(edits), 32, generator=g), torch.randn(len(edits), 16, generator=g))
    batched = edited_logits(model, es, ed, batch=7)
    for e in range(len(edits)):
        rows = es.edit == e
        with applied(model, ed, e):
            one = answer_logits(model, es.tokens[rows], es.answer_pos[rows])
        assert torch.allclose(batched[rows], one, atol=1e-4)


def test_zero_edit_keeps_every_fact(task):
    """An edit whose value is the key's own output changes nothing: specificity 1.0 and KL 0."""
    ds, vocab, facts = task
    model = hand_model(vocab)
    edits = [{"h": a[0], "r1": a[1], "b": a[2], "b2": (a[2] + 1) % vocab.n_entities} for a in facts.atomic()[:5]]
    es = build_eval_set(facts, model, edits, 8, 0)
    L = 1
    tok, pos = facts.tokens([(e["h"], e["r1"]) for e in edits])
    k = mlp_keys(model, tok, [L])[L][:, 1]
    C = key_second_moment(k[:, None], torch.ones(len(k), 1, dtype=torch.bool), 1e-3)
    ed = rank_one(model.blocks[L].mlp.W_out, C, k, k @ model.blocks[L].mlp.W_out, L)
    assert ed.d.abs().max() < 1e-5
    out = row_outcomes(es, edited_logits(model, es, ed))
    for kind in ("same_head", "atomic", "two_hop"):
        m = es.kind == KINDS.index(kind)
        assert m.any() and bool(out["kept"][m].all()), kind
        assert float(out["kl"][m].abs().max()) < 1e-6


def _edit_efficacy(model, facts, layer: int, key_pos: int, n: int = 6) -> tuple[float, float, float]:
    """(efficacy of the rank-one edits, of the optimised values themselves, of no edit) of n edits at `layer`."""
    edits = [{"h": a[0], "r1": a[1], "b": a[2], "b2": (a[2] + 5) % facts.n_entities} for a in facts.atomic()[:n]]
    tok, pos = facts.tokens([(e["h"], e["r1"]) for e in edits])
    target = torch.tensor([e["b2"] for e in edits])
    k, v = optimise_values(model, tok, pos, key_pos, layer, target, 60, 0.3, 10.0, 0.0)
    keys = mlp_keys(model, facts.tokens([a[:2] for a in facts.atomic()])[0], [layer])[layer]
    C = key_second_moment(keys, torch.ones(keys.shape[:2], dtype=torch.bool), 1e-3)
    ed = rank_one(model.blocks[layer].mlp.W_out, C, k, v, layer)
    es = EvalSet(tok, pos, torch.arange(n), torch.zeros(n, dtype=torch.long), target, target, answer_logits(model, tok, pos))
    eff = float((edited_logits(model, es, ed).argmax(-1) == target).float().mean())
    b_out = model.blocks[layer].mlp.b_out

    def put(out, hook=None):
        out = out.clone()
        out[:, key_pos] = v + b_out
        return out

    direct = answer_logits(model, tok, pos, fwd_hooks=[(out_hook(layer), put)])
    pre = float((es.pre.argmax(-1) == target).float().mean())
    return eff, float((direct.argmax(-1) == target).float().mean()), pre


def test_an_edit_where_the_answer_does_not_pass_cannot_work(task):
    ds, vocab, facts = task
    dead = hand_model(vocab, dead_layer=0)
    eff, direct, pre = _edit_efficacy(dead, facts, 0, 1)
    assert direct == 1.0 and pre < 0.5  # the value itself would make the model say b'
    assert eff == pre  # but no change of W_out can write it (the key is 0): the edit changes nothing
    assert _edit_efficacy(dead, facts, 1, 1)[0] == 1.0  # the live layer of the same model can be edited
    # positions that never talk: an edit at the head position cannot reach the answer, read at r1
    flat = hand_model(vocab, no_flow=True)
    for L in (0, 1):
        eff, direct, pre = _edit_efficacy(flat, facts, L, 0)
        assert eff == direct == pre < 0.5


def test_causal_tracing_known_answers(task):
    ds, vocab, facts = task
    atomic = facts.atomic()[:6]
    tok, pos = facts.tokens([a[:2] for a in atomic])
    ans = torch.tensor([a[2] for a in atomic])
    flat = hand_model(vocab, no_flow=True)  # the head's noise never reaches the answer position
    tr = trace_effects(flat, tok, ans, pos, vocab.n_entities, 1, [0, 1], samples=3)
    assert torch.allclose(tr["p_clean"], tr["p_corrupt"], atol=1e-6) and tr["mlp"].abs().max() < 1e-6
    m = hand_model(vocab)  # restoring the last residual at the answer position restores everything
    tr = trace_effects(m, tok, ans, pos, vocab.n_entities, 1, [0, 1], samples=3)
    assert torch.allclose(tr["resid"][:, 1], tr["p_clean"] - tr["p_corrupt"], atol=1e-5)
    assert (tr["p_clean"] - tr["p_corrupt"]).abs().max() > 1e-4  # the noise did something


def test_edit_stage_on_the_tiny_task(tmp_path):
    run = make_run(tmp_path, saes={}, train_steps=150, overrides=("edit.n_edits=6", "edit.value_steps=30", "edit.bootstrap=50",
                                                                   "edit.specificity_prompts=8"))
    result = run_stage(run, "edit")
    e = read_json(run.edit_dir / "edit.json")
    assert e["settings"]["n_edits"] >= 1 and [r["layer"] for r in e["by_layer"]] == [0, 1]
    per = read_json(run.edit_dir / "edits.json")
    for j, r in enumerate(e["by_layer"]):
        assert r["efficacy"]["n"] == len(per)
        assert r["efficacy"]["share"] == pytest.approx(sum(p["by_layer"][j]["efficacy"] for p in per) / len(per))
        assert 0 <= r["specificity_atomic"]["share"] <= 1
    assert set(e["localization"]["correlation"]) >= {"rewrite", "propagation"}
    check_line(run, "edit", result)
    # propagation apart on the two-hop facts held out of training: the edited facts' two-hop prompts, split by the train split
    ds, vocab = load_task(run.data_dir)
    facts = Facts.from_dataset(ds, vocab, "twohop")
    d = ds["train"]
    trained = {(h, r1, r2) for h, r1, r2, hop in zip(d["head"], d["r1"], d["r2"], d["hop"]) if hop == 2}
    prompts = [(p["h"], p["r1"], r2) for p in per for r2 in facts.shared_relations(p["b"], p["b2"])]
    n_trained = sum(q in trained for q in prompts)
    assert 0 < n_trained < len(prompts)  # both kinds are there
    for r in e["by_layer"]:
        ph, pt = r["propagation_heldout"], r["propagation_trained"]
        assert ph["n"] + pt["n"] == r["propagation"]["n"] and pt["n"] <= n_trained and ph["n"] <= len(prompts) - n_trained
        assert r["propagation"]["share"] * r["propagation"]["n"] == pytest.approx((ph["share"] or 0) * ph["n"] + (pt["share"] or 0) * pt["n"])
    from sae_ooc.report.doc import Doc
    from sae_ooc.report.interventions import edit_section

    doc = Doc(run)
    edit_section(doc)
    flags = {n["name"]: (n["in_sample"], n["value"]) for n in doc.numbers}
    for r in e["by_layer"]:
        L = r["layer"]
        assert flags[f"edit.layer{L}.efficacy"][0] is True and flags[f"edit.layer{L}.propagation"][0] is True  # fitted on / trained on
        assert flags[f"edit.layer{L}.propagation_heldout"] == (False, r["propagation_heldout"]["share"])


