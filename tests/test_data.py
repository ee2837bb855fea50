"""Invariants of the generated tasks, checked against the facts themselves."""

import json

import numpy as np
import pytest
from datasets import load_from_disk

from sae_ooc.config import TaskConfig
from sae_ooc.errors import UserError
from sae_ooc.tasks.data import (
    SPLITS,
    generate,
    load_task,
    majority_rate,
    save_task,
    split_tensors,
)

CFG = TaskConfig(n_entities=30, n_relations=6, facts_per_entity=4, phi=2.0, ood_fraction=0.1, seed=3)


def _facts(ds):
    return [dict(zip(ds.column_names, row)) for row in zip(*(ds[c] for c in ds.column_names))]


@pytest.fixture(scope="module")
def twohop():
    return generate(CFG)


def test_split_sizes_match_config(twohop):
    ds, vocab = twohop
    E, k = CFG.n_entities, CFG.facts_per_entity
    n_atomic_train = E * k - round(CFG.ood_fraction * E * k)
    train = _facts(ds["train"])
    assert sum(f["hop"] == 1 for f in train) == n_atomic_train == len(ds["atomic_test"])
    assert sum(f["hop"] == 2 for f in train) == round(CFG.phi * n_atomic_train)
    # every (h, r1) has exactly k continuations r2 through its bridge: E*k*k two-hop facts in all
    n_inferred = sum(f["hop"] == 2 for f in train) + len(ds["test_id"]) + len(ds["test_ood"])
    assert n_inferred == E * k * k
    assert len(ds["test_id"]) > 0 and len(ds["test_ood"]) > 0


def test_inferred_answers_follow_from_atomic_facts(twohop):
    ds, _ = twohop
    atomic = {(f["head"], f["r1"]): f["answer"] for f in _facts(ds["atomic_test"])}
    for split in ("train", "test_id"):
        for f in _facts(ds[split]):
            if f["hop"] == 2:
                assert atomic[(f["head"], f["r1"])] == f["bridge"]
                assert atomic[(f["bridge"], f["r2"])] == f["answer"]
                assert f["input_ids"] == [f["head"], f["r1"], f["r2"]]


def test_ood_facts_use_a_held_out_atomic_fact(twohop):
    ds, _ = twohop
    atomic = {(f["head"], f["r1"]): f["answer"] for f in _facts(ds["atomic_test"])}
    for f in _facts(ds["test_ood"]):
        first_known = (f["head"], f["r1"]) in atomic
        second_known = first_known and (f["bridge"], f["r2"]) in atomic
        assert not (first_known and second_known)
        if first_known:  # the part that is known must still agree with the fact
            assert atomic[(f["head"], f["r1"])] == f["bridge"]


def test_no_test_fact_leaks_into_train(twohop):
    ds, _ = twohop
    train = {tuple(f["input_ids"]) for f in _facts(ds["train"])}
    for split in ("test_id", "test_ood"):
        for f in _facts(ds[split]):
            assert tuple(f["input_ids"]) not in train
    atomic_train = {(f["head"], f["r1"]) for f in _facts(ds["train"]) if f["hop"] == 1}
    assert atomic_train == {(f["head"], f["r1"]) for f in _facts(ds["atomic_test"])}


def test_each_entity_has_k_distinct_relations(twohop):
    ds, vocab = twohop
    seen = {}
    for split in ("atomic_test",):
        for f in _facts(ds[split]):
            seen.setdefault(f["head"], []).append(f["r1"])
    for h, rels in seen.items():
        assert len(rels) == len(set(rels)) <= CFG.facts_per_entity
        assert all(vocab.n_entities <= r < vocab.n_entities + vocab.n_relations for r in rels)


def test_deterministic_from_seed():
    a, _ = generate(CFG)
    b, _ = generate(CFG)
    c, _ = generate(TaskConfig(**{**CFG.__dict__, "seed": CFG.seed + 1}))
    for s in SPLITS:
        assert a[s]["input_ids"] == b[s]["input_ids"] and a[s]["answer"] == b[s]["answer"]
    assert a["train"]["input_ids"] != c["train"]["input_ids"]


def test_phi_too_large_is_a_user_error():
    with pytest.raises(UserError, match="task.phi"):
        generate(TaskConfig(n_entities=10, n_relations=3, facts_per_entity=2, phi=50.0))


def test_reversal_holds_out_inverse_facts():
    cfg = TaskConfig(family="reversal", n_entities=20, n_relations=3, facts_per_entity=2, ood_fraction=0.1, seed=1)
    ds, vocab = generate(cfg)
    R = cfg.n_relations
    fwd = {(f["head"], f["r1"]): f["answer"] for f in _facts(ds["atomic_test"])}
    train = {tuple(f["input_ids"]) for f in _facts(ds["train"])}
    assert len(ds["test_id"]) == round(cfg.reversal_holdout * (len(fwd)))
    for f in _facts(ds["test_id"]):
        b, r_inv, a = f["head"], f["r1"], f["answer"]
        r = r_inv - R  # inverse relation token r{R+i} undoes r{i}
        assert fwd[(a, r)] == b
        assert (b, r_inv) not in train
    for f in _facts(ds["test_ood"]):
        assert (f["answer"], f["r1"] - R) not in fwd  # neither direction was trained
    assert vocab.n_relations == 2 * R


def test_round_trip_through_datasets(tmp_path, twohop):
    ds, vocab = twohop
    save_task(ds, vocab, tmp_path / "data")
    again = load_from_disk(str(tmp_path / "data"))
    assert set(again) == set(SPLITS)
    for s in SPLITS:
        assert again[s]["input_ids"] == ds[s]["input_ids"]
    names = json.loads((tmp_path / "data" / "vocab.json").read_text())
    assert names["id_of"]["e0"] == 0 and names["names"][vocab.pad_id] == "<pad>"
    _, v2 = load_task(tmp_path / "data")
    assert v2.encode("e3 r1 r2") == [3, CFG.n_entities + 1, CFG.n_entities + 2]


def test_split_tensors_pad_right_and_read_last_position(twohop):
    ds, vocab = twohop
    t = split_tensors(ds["train"], vocab.pad_id)
    hops = np.asarray(ds["train"]["hop"])
    assert (t.answer_pos.numpy() == hops).all()  # hop 1: [h, r] -> pos 1; hop 2: [h, r1, r2] -> pos 2
    assert (t.tokens[hops == 1, 2] == vocab.pad_id).all()
    assert (t.tokens[:, : 2] != vocab.pad_id).all()


def test_unknown_token_suggests_close_names(twohop):
    _, vocab = twohop
    with pytest.raises(UserError, match="did you mean"):
        vocab.encode("e12 r3 rr2")


def test_majority_rate_is_the_most_common_answer_share(twohop):
    ds, _ = twohop
    answers = ds["test_id"]["answer"]
    best = max(answers.count(a) for a in set(answers))
    assert majority_rate(ds["test_id"]) == pytest.approx(best / len(answers))
