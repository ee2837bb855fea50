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
from sae_ooc.tasks.rows import columns

CFG = TaskConfig(n_entities=30, n_relations=6, facts_per_entity=4, phi=2.0, ood_fraction=0.1, unanswerable_fraction=0.05, seed=3)


def _facts(ds):
    return [dict(zip(ds.column_names, row)) for row in zip(*(ds[c] for c in ds.column_names))]


@pytest.fixture(scope="module")
def twohop():
    return generate(CFG)


def test_split_sizes_match_config(twohop):
    ds, vocab = twohop
    E, k = CFG.n_entities, CFG.facts_per_entity
    n_un, n_ood = round(CFG.unanswerable_fraction * E * k), round(CFG.ood_fraction * E * k)
    train = _facts(ds["train"])
    assert sum(f["hop"] == 1 for f in train) == E * k - n_un == len(ds["atomic_test"])  # OOD atomic facts are trained
    assert sum(f["hop"] == 2 for f in train) == round(CFG.phi * (E * k - n_un - n_ood))  # phi counts ID atomic facts (Wang et al.)
    # every (h, r1) has exactly k continuations r2 through its bridge: E*k*k two-hop facts in all, less those that
    # touch an OOD atomic fact without being made of OOD facts only (left out, as Wang et al. do)
    n_inferred = sum(len(ds[s]) for s in ("valid_id", "test_id", "test_ood_sys", "test_unanswerable")) + sum(f["hop"] == 2 for f in train)
    assert n_inferred < E * k * k
    assert len(ds["test_id"]) > 0 and len(ds["test_unanswerable"]) > 0 and len(ds["test_ood_sys"]) > 0
    # valid_id takes task.valid_fraction of the held-out in-distribution pool, test_id the rest
    held = len(ds["valid_id"]) + len(ds["test_id"])
    assert len(ds["valid_id"]) == round(CFG.valid_fraction * held) > 0


def test_inferred_answers_follow_from_atomic_facts(twohop):
    ds, _ = twohop
    atomic = {(f["head"], f["r1"]): f["answer"] for f in _facts(ds["atomic_test"])}
    for split in ("train", "valid_id", "test_id"):
        for f in _facts(ds[split]):
            if f["hop"] == 2:
                assert atomic[(f["head"], f["r1"])] == f["bridge"]
                assert atomic[(f["bridge"], f["r2"])] == f["answer"]
                assert f["input_ids"] == [f["head"], f["r1"], f["r2"]]


def test_systematic_ood_facts_are_made_of_trained_atomic_facts_no_inferred_training_fact_uses(twohop):
    """Wang et al. 2024's OOD split: both atomic facts trained, neither used by a two-hop training fact."""
    ds, _ = twohop
    atomic = _atomic_in_train(ds)
    used = {k for f in _facts(ds["train"]) if f["hop"] == 2 for k in ((f["head"], f["r1"]), (f["bridge"], f["r2"]))}
    sys_facts = _facts(ds["test_ood_sys"])
    assert sys_facts
    ood = set()
    for f in sys_facts:
        first, second = (f["head"], f["r1"]), (f["bridge"], f["r2"])
        assert atomic[first] == f["bridge"] and atomic[second] == f["answer"] and f["hop"] == 2
        assert first not in used and second not in used
        ood |= {first, second}
    assert len(ood) <= round(CFG.ood_fraction * CFG.n_entities * CFG.facts_per_entity)
    for s in ("valid_id", "test_id"):  # the ID splits use no OOD atomic fact
        assert not any({(f["head"], f["r1"]), (f["bridge"], f["r2"])} & ood for f in _facts(ds[s]))


def test_unanswerable_facts_use_a_held_out_atomic_fact(twohop):
    ds, _ = twohop
    atomic = {(f["head"], f["r1"]): f["answer"] for f in _facts(ds["atomic_test"])}
    for f in _facts(ds["test_unanswerable"]):
        first_known = (f["head"], f["r1"]) in atomic
        second_known = first_known and (f["bridge"], f["r2"]) in atomic
        assert not (first_known and second_known)
        if first_known:  # the part that is known must still agree with the fact
            assert atomic[(f["head"], f["r1"])] == f["bridge"]


def test_no_test_fact_leaks_into_train(twohop):
    ds, _ = twohop
    train = {tuple(f["input_ids"]) for f in _facts(ds["train"])}
    for split in ("valid_id", "test_id", "test_ood_sys", "test_unanswerable"):
        for f in _facts(ds[split]):
            assert tuple(f["input_ids"]) not in train
    atomic_train = {(f["head"], f["r1"]) for f in _facts(ds["train"]) if f["hop"] == 1}
    assert atomic_train == {(f["head"], f["r1"]) for f in _facts(ds["atomic_test"])}


def _atomic_in_train(ds) -> dict:
    return {(f["head"], f["r1"]): f["answer"] for f in _facts(ds["train"]) if f["hop"] == 1}


def test_valid_id_is_held_out_like_test_id_and_disjoint_from_it(twohop):
    ds, _ = twohop
    train = {tuple(f["input_ids"]) for f in _facts(ds["train"])}
    valid = _facts(ds["valid_id"])
    test = {tuple(f["input_ids"]) for f in _facts(ds["test_id"])}
    atomic = _atomic_in_train(ds)  # read from train itself, not from atomic_test
    assert valid and all(f["hop"] == 2 for f in valid)
    for f in valid:
        ids = tuple(f["input_ids"])
        assert ids not in train and ids not in test
        # both atomic facts it composes are trained on, and they lead to its answer
        assert atomic[(f["head"], f["r1"])] == f["bridge"] and atomic[(f["bridge"], f["r2"])] == f["answer"]
    assert len({tuple(f["input_ids"]) for f in valid}) == len(valid)


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_valid_fraction_sets_the_size_and_leaves_train_and_the_pool_unchanged(twohop, fraction):
    ds, _ = twohop
    other, _ = generate(TaskConfig(**{**CFG.__dict__, "valid_fraction": fraction}))
    pool = {tuple(x) for s in ("valid_id", "test_id") for x in ds[s]["input_ids"]}
    assert {tuple(x) for s in ("valid_id", "test_id") for x in other[s]["input_ids"]} == pool
    assert len(other["valid_id"]) == round(fraction * len(pool))
    assert other["train"]["input_ids"] == ds["train"]["input_ids"]  # the model trains on the same data


def test_default_experiment_sizes():
    from sae_ooc.config import load_config

    ds, _ = generate(load_config("configs/default.yaml").task)
    # 10% of atomic facts OOD (Wang et al.'s split: ~100 test_ood_sys facts), 2% never trained; a fifth of the
    # held-out in-distribution pool to stop and tune on
    assert (len(ds["valid_id"]), len(ds["test_id"]), len(ds["test_ood_sys"]), len(ds["test_unanswerable"])) == (142, 566, 98, 372)


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
    n_held = round(cfg.reversal_holdout * (len(fwd) - len(ds["test_ood_sys"])))
    assert len(ds["valid_id"]) + len(ds["test_id"]) == n_held
    assert len(ds["valid_id"]) == round(cfg.valid_fraction * n_held) > 0
    assert not {tuple(x) for x in ds["valid_id"]["input_ids"]} & {tuple(x) for x in ds["test_id"]["input_ids"]}
    for f in _facts(ds["valid_id"]) + _facts(ds["test_id"]):
        b, r_inv, a = f["head"], f["r1"], f["answer"]
        r = r_inv - R  # inverse relation token r{R+i} undoes r{i}
        assert fwd[(a, r)] == b and (a, r) in train  # its forward fact is trained on
        assert (b, r_inv) not in train
    for f in _facts(ds["test_unanswerable"]):
        assert (f["answer"], f["r1"] - R) not in fwd  # neither direction was trained
    for f in _facts(ds["test_ood_sys"]):  # forward trained, inverse not
        assert fwd[(f["answer"], f["r1"] - R)] == f["head"] and tuple(f["input_ids"]) not in train
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
    t = split_tensors(ds["train"], vocab)
    hops = np.asarray(ds["train"]["hop"])
    assert (t.answer_pos.numpy() == hops).all()  # hop 1: [h, r] -> pos 1; hop 2: [h, r1, r2] -> pos 2
    assert (t.tokens[hops == 1, 2] == vocab.pad_id).all()
    assert (t.tokens[:, : 2] != vocab.pad_id).all()


def test_columns_read_in_one_batch_equal_the_rows(twohop):
    """`columns` (one batch) gives each split's values row for row as datasets' own row access does, for a loaded
    Dataset, a subset of one (an indices mapping), an empty one and the dict of lists a split is built from; and
    split_tensors built on it matches a tensor made row by row."""
    ds, vocab = twohop
    names = ("input_ids", "answer_ids", "head", "r1", "r2", "answer", "bridge", "hop")
    for split in (ds["train"], ds["test_id"].select([5, 0, 3]), ds["train"].select([])):
        rows = [split[i] for i in range(len(split))]  # datasets' row access, not its column access
        assert columns(split, *names) == tuple([r[n] for r in rows] for n in names)
        assert columns({n: [r[n] for r in rows] for n in names}, "hop", "head") == ([r["hop"] for r in rows], [r["head"] for r in rows])
        t = split_tensors(split, vocab)
        assert t.tokens.shape == (len(rows), vocab.layout.seq_len)
        for i, r in enumerate(rows):
            row = r["input_ids"] + r["answer_ids"][:-1]
            assert t.tokens[i].tolist() == row + [vocab.pad_id] * (vocab.layout.seq_len - len(row))
            assert (t.answer_pos[i], t.answer[i], t.bridge[i], t.hop[i]) == (len(r["input_ids"]) - 1, r["answer"], r["bridge"], r["hop"])


def test_unknown_token_suggests_close_names(twohop):
    _, vocab = twohop
    with pytest.raises(UserError, match="did you mean"):
        vocab.encode("e12 r3 rr2")


def test_majority_rate_is_the_most_common_answer_share(twohop):
    ds, _ = twohop
    answers = ds["test_id"]["answer"]
    best = max(answers.count(a) for a in set(answers))
    assert majority_rate(ds["test_id"]) == pytest.approx(best / len(answers))


@pytest.mark.parametrize("value", ["0", "1", "1.5"])
def test_valid_fraction_outside_0_1_is_a_config_error(value):
    from sae_ooc.config import load_config
    from sae_ooc.typed_yaml import ConfigError

    with pytest.raises(ConfigError, match="task.valid_fraction"):
        load_config(None, [f"task.valid_fraction={value}"])


def test_a_pool_of_two_still_gives_valid_id_and_test_id_one_fact_each():
    # phi at its largest: exactly two inferred facts left out of train
    probe, _ = generate(TaskConfig(n_entities=6, n_relations=2, facts_per_entity=2, phi=0.0, ood_fraction=0.0, seed=1))
    n_pool, n_atomic = len(probe["valid_id"]) + len(probe["test_id"]), len(probe["atomic_test"])
    ds, _ = generate(TaskConfig(n_entities=6, n_relations=2, facts_per_entity=2, phi=(n_pool - 2) / n_atomic, ood_fraction=0.0, seed=1))
    assert (len(ds["valid_id"]), len(ds["test_id"])) == (1, 1)


def test_data_written_before_valid_id_existed_asks_for_a_rebuild(tmp_path, twohop):
    from datasets import DatasetDict

    ds, vocab = twohop
    save_task(DatasetDict({s: ds[s] for s in SPLITS if s != "valid_id"}), vocab, tmp_path / "data")
    with pytest.raises(UserError, match=r"no split valid_id .*sae-ooc data --run .* --force"):
        load_task(tmp_path / "data")


def test_comparison_answers_compare_trained_values_and_keeps_wang_et_al_s_splits():
    cfg = TaskConfig(family="comparison", n_entities=16, n_relations=3, facts_per_entity=2, n_values=4, phi=2.0,
                     ood_fraction=0.2, unanswerable_fraction=0.1, max_test=10_000, seed=2)
    ds, vocab = generate(cfg)
    atomic = _atomic_in_train(ds)
    assert len(atomic) == len(ds["atomic_test"]) == 32 - round(0.1 * 32)
    assert all(vocab.name(v).startswith("v") and vocab.name(r).startswith("r") for (_, r), v in atomic.items())
    used = {k for f in _facts(ds["train"]) if f["hop"] == 2 for k in ((f["head"], f["r1"]), (f["r2"], f["r1"]))}
    ood = {k for f in _facts(ds["test_ood_sys"]) for k in ((f["head"], f["r1"]), (f["r2"], f["r1"]))}
    for split in ("train", "valid_id", "test_id", "test_ood_sys", "test_unanswerable"):
        for f in (f for f in _facts(ds[split]) if f["hop"] == 2):
            e1, attr, e2 = f["input_ids"]
            assert e1 != e2 and (f["head"], f["r1"], f["r2"]) == (e1, attr, e2)
            v1, v2 = f["bridge"], f["bridge2"]
            assert vocab.name(f["answer"]) == ("lt", "eq", "gt")[(v1 > v2) - (v1 < v2) + 1]
            known = [atomic.get((e, attr)) for e in (e1, e2)]
            if split == "test_unanswerable":
                assert None in known
            else:  # both values trained, and they are the fact's
                assert known == [v1, v2]
            if split == "test_ood_sys":  # Wang et al.'s OOD: no inferred training fact uses either atomic fact
                assert (e1, attr) not in used and (e2, attr) not in used
            elif split != "test_unanswerable":
                assert not {(e1, attr), (e2, attr)} & ood
    assert len(ds["test_ood_sys"]) > 0 and len(ds["test_id"]) > 0
    # every ordered pair of distinct entities sharing an attribute is asked once, in one split at most
    prompts = [tuple(x) for s in ("train", "valid_id", "test_id", "test_ood_sys", "test_unanswerable") for x in ds[s]["input_ids"] if len(x) == 3]
    assert len(prompts) == len(set(prompts))


def test_an_empty_split_saves_and_loads_back(tmp_path):
    """No OOD atomic facts: test_ood_sys is empty, and datasets must still find it on disk (it wrote no data file for
    an empty split before save_task asked for one shard a split)."""
    ds, vocab = generate(TaskConfig(n_entities=8, n_relations=2, facts_per_entity=2, phi=1.0, ood_fraction=0.0, seed=1))
    assert len(ds["test_ood_sys"]) == 0
    save_task(ds, vocab, tmp_path / "data")
    again, _ = load_task(tmp_path / "data")
    assert len(again["test_ood_sys"]) == 0 and again["test_id"]["input_ids"] == ds["test_id"]["input_ids"]
