"""The threehop family: its facts and splits checked against the atomic facts of train (an independent composition),
and the plumbing that reads its layout (pairs, planted questions and the variables stage's donors, the cache's extra
columns) on its tiny config's data; no model is trained here."""

import pytest
import torch

from sae_ooc.causal.planted import FIELDS, draw, spec_of, specs
from sae_ooc.causal.variables import two_hop_questions
from sae_ooc.circuits.pairs import make_pairs
from sae_ooc.config import load_config
from sae_ooc.errors import UserError
from sae_ooc.interventions.facts import Facts
from sae_ooc.tasks.data import generate, split_tensors
from sae_ooc.tasks.families import extra_sets, threehop_facts
from sae_ooc.tasks.layout import THREEHOP_LAYOUT, TOY_LAYOUT

HELD = ("valid_id", "test_id", "test_ood_sys", "test_unanswerable")


def _facts(ds):
    return [dict(zip(ds.column_names, row)) for row in zip(*(ds[c] for c in ds.column_names))]


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("configs/threehop_tiny.yaml").task
    cfg.max_test = 10_000  # every held-out fact: the split rules are checked on all of them
    ds, vocab = generate(cfg)
    return cfg, ds, vocab


@pytest.fixture(scope="module")
def questions(tiny):
    """The variables stage's facts and three-hop questions of train and test_id (two tests read them)."""
    cfg, ds, vocab = tiny
    return Facts.from_dataset(ds, vocab, cfg.family), two_hop_questions(ds, vocab, ["train", "test_id"])


def test_threehop_answers_compose_three_trained_facts_and_keep_wang_et_al_s_splits(tiny):
    cfg, ds, vocab = tiny
    assert vocab.layout == THREEHOP_LAYOUT and vocab.layout.variables == ("head", "r1", "r2", "r3", "bridge", "bridge2", "answer")
    A = {(f["head"], f["r1"]): f["answer"] for f in _facts(ds["train"]) if f["hop"] == 1}
    assert len(A) == len(ds["atomic_test"])
    train = _facts(ds["train"])
    two, three = [f for f in train if f["hop"] == 2], [f for f in train if f["hop"] == 3]
    for f in two:  # (h, r1, r2) -> b2, whose bridge2 is its answer
        h, r1, r2 = f["input_ids"]
        assert f["bridge"] == A[(h, r1)] and f["answer"] == f["bridge2"] == A[(A[(h, r1)], r2)]
    used = set()  # the atomic facts some inferred training fact needs
    for f in two + three:
        ids = f["input_ids"]
        e = ids[0]
        for r in ids[1:]:
            used.add((e, r))
            e = A[(e, r)]
    ood = set()
    for split in ("train",) + HELD:
        for f in (f for f in _facts(ds[split]) if f["hop"] == 3):
            h, r1, r2, r3 = f["input_ids"]
            needs = [(h, r1), (f["bridge"], r2), (f["bridge2"], r3)]
            if split == "test_unanswerable":  # an atomic fact on the chain was never trained
                assert any(k not in A for k in needs)
                continue
            b1 = A[(h, r1)]
            b2 = A[(b1, r2)]
            assert (f["bridge"], f["bridge2"], f["answer"]) == (b1, b2, A[(b2, r3)])
            if split == "test_ood_sys":  # Wang et al.: trained, but no inferred training fact uses any of them
                assert not set(needs) & used
                ood |= set(needs)
    for split in ("valid_id", "test_id"):
        for f in (f for f in _facts(ds[split]) if f["hop"] == 3):
            h, r1, r2, r3 = f["input_ids"]
            assert not {(h, r1), (f["bridge"], r2), (f["bridge2"], r3)} & ood
    assert all(len(ds[s]) > 0 for s in HELD)
    # phi per in-distribution atomic fact, of each of two and three hops
    facts = threehop_facts(cfg)
    n_train = round(cfg.phi * (len(facts["atomic"]) - len(facts["unanswerable"]) - len(facts["ood"])))
    assert len(two) == len(three) == n_train > 0
    prompts = [tuple(x) for s in ("train",) + HELD for x in ds[s]["input_ids"] if len(x) == 4]
    assert len(prompts) == len(set(prompts))  # a three-hop question is in one split at most
    # the two-hop facts held out of train: composed from trained facts, none of them in train
    held2 = _facts(extra_sets(cfg)["two_hop_heldout"])
    assert held2 and not {tuple(f["input_ids"]) for f in held2} & {tuple(f["input_ids"]) for f in two}
    assert all(f["answer"] == A[(A[tuple(f["input_ids"][:2])], f["input_ids"][2])] for f in held2)


def test_threehop_plumbing_reads_the_layout_roles(tiny, questions):
    """Pairs, the cache's columns and the variables stage's donors on three-hop questions: each checked against the data."""
    from sae_ooc.activations.harvest import token_table

    cfg, ds, vocab = tiny
    A = {(f["head"], f["r1"]): f["answer"] for f in _facts(ds["train"]) if f["hop"] == 1}

    def chain(e, rels):
        for r in rels:
            e = A[(e, r)]
        return e

    pairs = make_pairs(ds, vocab, "test_id", 16, 0)  # clean (h, r1, r2, r3) and corrupt (h', r1, r2, r3), a known fact each
    answer_of = {tuple(ids): a for s in ds for ids, a in zip(ds[s]["input_ids"], ds[s]["answer"])}
    assert pairs.clean.shape[1] == 4 and bool((pairs.clean[:, 1:] == pairs.corrupt[:, 1:]).all())
    for c, k, t, t2 in zip(pairs.clean.tolist(), pairs.corrupt.tolist(), pairs.answer.tolist(), pairs.answer_corrupt.tolist()):
        assert t != t2 and t2 == answer_of[tuple(k)] and t == chain(c[0], c[1:])
    st = split_tensors(ds["test_id"], vocab)
    assert bool((st.variable("r3") == st.tokens[:, 3]).all()) and st.variable("bridge2").tolist() == ds["test_id"]["bridge2"]
    tok = token_table({"test_id": st}, {"test_id": 0}, ("r3", "bridge2"))
    assert tok["r3"].tolist() == [r for ids in ds["test_id"]["input_ids"] for r in [ids[3]] * len(ids)]
    facts, q = questions
    assert len(q) == sum(1 for s in ("train", "test_id") for h in ds[s]["hop"] if h == 3)
    assert all(facts.chain(b, (r2, r3)) == a for b, r2, r3, a in zip(q.bridge.tolist(), q.r2.tolist(), q.r3.tolist(), q.answer.tolist()))
    sp = specs(THREEHOP_LAYOUT)
    assert list(specs(TOY_LAYOUT)) == ["head", "r1", "r2", "bridge@answer", "answer"]
    with pytest.raises(UserError, match="bridge2@r2 is not a variable of this task's question"):
        spec_of(TOY_LAYOUT, "bridge2@r2")  # a two-hop task has no second bridge
    vals = {f: getattr(q, f).tolist() for f in FIELDS}
    every = torch.ones(len(q), dtype=torch.bool)
    for name in ("bridge@r2", "bridge2@r2", "bridge2@answer", "r3", "head"):
        spec = sp[name]
        base, donor = draw(q, spec, torch.arange(len(q)), every, None, 0)
        assert len(base) > 0, name
        for i, j in zip(base.tolist(), donor.tolist()):
            # the high-level model with the donor's value of the variable gives the donor's answer (not the base's)
            v = vals[spec.variable][j]
            rels = {"head": (q.r1[i], q.r2[i], q.r3[i]), "bridge": (q.r2[i], q.r3[i]), "bridge2": (q.r3[i],)}.get(spec.variable)
            expect = chain(v, [int(r) for r in rels]) if rels else chain(q.head[i].item(), [q.r1[i].item(), q.r2[i].item(), v])
            assert expect == vals["answer"][j] != vals["answer"][i], name


def test_interchange_counterfactual_follows_every_relation_after_r1(tiny, questions):
    """The circuit's pairs (sae_ooc.causal.circuit.PairStates) score the donor's bridge b' through r2 and r3: t(t(b', r2),
    r3), composed here from train's atomic facts, not t(b', r2) (the second bridge, the two-hop answer)."""
    from types import SimpleNamespace

    from sae_ooc.causal.circuit import _counter
    from sae_ooc.causal.pairs import FIT, draw_pairs

    cfg, ds, vocab = tiny
    A = {(f["head"], f["r1"]): f["answer"] for f in _facts(ds["train"]) if f["hop"] == 1}
    facts, q = questions
    groups = {(int(h), int(r)): FIT for h, r in zip(q.head, q.r1)}
    P = draw_pairs(facts, q, torch.arange(len(q)), groups, FIT, 1, 0)
    assert len(P) > 0 and bool((P.r3 >= 0).all())
    expect = [A[(A[(b2, r2)], r3)] for b2, r2, r3 in zip(P.b2.tolist(), P.r2.tolist(), P.r3.tolist())]
    assert _counter(SimpleNamespace(facts=facts), P).tolist() == expect
    assert any(e != A[(b2, r2)] for e, b2, r2 in zip(expect, P.b2.tolist(), P.r2.tolist()))  # the two-hop answer would differ


def test_three_hop_circuit_graph_chains_the_two_bridges():
    """The drawing of the three-hop circuit (sae_ooc.causal.graph): bridge@r1 -> bridge2@r2 -> bridge2@answer -> answer,
    with r2 into the second bridge and r3 into the answer; each edge weighs its source's IIA."""
    from sae_ooc.causal.chain import HIGH_LEVEL_MODEL
    from sae_ooc.causal.circuit_result import CausalCircuit
    from sae_ooc.causal.graph import causal_graph
    from sae_ooc.circuits.nodes import SINK

    def node(hook, pos, iia):
        return {"hook": hook, "position": pos, "rank": 4, "unit": {"switch": iia}, "resid_patch": {"switch": 1.0}, "random": {}}

    c = CausalCircuit.from_json({"status": "ok", "high_level_model": HIGH_LEVEL_MODEL, "n_heldout": 5,
                                 "nodes": {"bridge@r1": node("blocks.1.hook_resid_pre", 1, 0.5),
                                           "bridge2@r2": node("blocks.2.hook_resid_pre", 2, 0.25),
                                           "bridge2@answer": node("blocks.3.hook_resid_mid", 3, 0.75)},
                                 "inputs": {k: node("blocks.0.hook_resid_pre", p, 1.0) for k, p in (("head", 0), ("r1", 1), ("r2", 2), ("r3", 3))}})
    g = causal_graph(c, ["head", "r1", "r2", "r3"])
    assert {(e.source, e.target, e.weight) for e in g.edges} == {
        ("head", "bridge@r1", 1.0), ("r1", "bridge@r1", 1.0), ("bridge@r1", "bridge2@r2", 0.5), ("r2", "bridge2@r2", 1.0),
        ("bridge2@r2", "bridge2@answer", 0.25), ("bridge2@answer", SINK, 0.75), ("r3", SINK, 1.0)}
    assert g.metadata.sink.description == "answer = t(t(bridge, r2), r3)"
