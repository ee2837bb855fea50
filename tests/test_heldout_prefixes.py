"""Held-out prefixes (issue #9): under causal attention the activation at a position is a function of the token
prefix up to it, so the SAE / probe / feature split is by prefix per position and every metric is measured on
distinct held-out prefixes. These tests check the split against an independent reconstruction of each row's prefix,
that probes on a model that learned nothing (and on shuffled labels) score at chance on held-out prefixes - and well
above it under the old sequence split, which is what made the fix necessary - and the per-position explained
variance against numpy."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from circuit_fixtures import topk_sae
from safetensors.numpy import load_file

from sae_ooc.activations.cache import distinct_rows, heldout_mask, open_cache
from sae_ooc.activations.harvest import token_table
from sae_ooc.config import load_config
from sae_ooc.errors import UserError
from sae_ooc.io import save_tensors
from sae_ooc.models.hooked import build_model
from sae_ooc.saes.controls import prefix_activations
from sae_ooc.saes.eval_sae import heldout_from_disk
from sae_ooc.saes.prefixes import PositionSlice, first_hop_known, position_slices
from sae_ooc.saes.probes import fit_predict, probe_table
from sae_ooc.saes.reconstruction import reconstruction_metrics
from sae_ooc.saes.store import eval_rows
from sae_ooc.tasks.data import generate, split_tensors

HOOK = "blocks.1.hook_resid_post"


def row_prefixes(tok: dict) -> list[tuple]:
    """Each row's (position, tokens up to and including it), rebuilt from the `token` column of the rows of the same
    sequence - not from the head/r1/r2 columns the code under test reads."""
    seq_tokens: dict[tuple, dict[int, int]] = {}
    for s, q, p, t in zip(tok["split"].tolist(), tok["seq"].tolist(), tok["pos"].tolist(), tok["token"].tolist()):
        seq_tokens.setdefault((s, q), {})[p] = t
    return [(p, tuple(seq_tokens[(s, q)][i] for i in range(p + 1)))
            for s, q, p in zip(tok["split"].tolist(), tok["seq"].tolist(), tok["pos"].tolist())]


def sequence_mask(tok: dict, fraction: float, seed: int) -> torch.Tensor:
    """The old split: whole sequences held out."""
    gid = tok["split"].long() * 10_000_000 + tok["seq"].long()
    uniq, inverse = torch.unique(gid, return_inverse=True)
    g = torch.Generator().manual_seed(seed)
    held = torch.zeros(len(uniq), dtype=torch.bool)
    held[torch.randperm(len(uniq), generator=g)[: int(round(fraction * len(uniq)))]] = True
    return held[inverse]


def test_every_prefix_is_on_one_side_and_no_heldout_row_has_a_twin(harvested_run):
    cache = open_cache(harvested_run.activations_dir)
    tok = cache.tokens()
    prefixes = row_prefixes(tok)
    held = heldout_mask(tok, 0.15, 0)
    held_set = {prefixes[i] for i in held.nonzero().squeeze(1).tolist()}
    kept_set = {prefixes[i] for i in (~held).nonzero().squeeze(1).tolist()}
    assert held_set and not held_set & kept_set
    for p in range(3):  # 15% of the distinct prefixes at each position (at least one, all but one)
        n = len({x for x in held_set | kept_set if x[0] == p})
        assert len({x for x in held_set if x[0] == p}) == min(max(round(0.15 * n), 1), n - 1)
    # one row per distinct prefix: a prompt repeated across splits counts once
    rows = distinct_rows(tok, held).tolist()
    assert sorted(prefixes[i] for i in rows) == sorted(held_set)
    # the activations agree: at the last layer no held-out prefix has a bit-identical twin among the training rows,
    # while the old sequence split leaves many (the check can fail)
    x = np.concatenate([load_file(str(cache.shard_path(HOOK, i)))["activations"] for i in range(cache.n_shards)])
    pos = tok["pos"].numpy()

    def twins(h: np.ndarray) -> int:
        out = 0
        for p in range(3):
            kept = {r.tobytes() for r in x[(~h) & (pos == p)]}
            out += sum(r.tobytes() in kept for r in x[h & (pos == p)])
        return out

    assert twins(held.numpy()) == 0
    assert twins(sequence_mask(tok, 0.15, 0).numpy()) > 0.3 * int(sequence_mask(tok, 0.15, 0).sum())


def test_first_hop_known_matches_the_atomic_facts_of_train(tiny_cfg, tiny_task):
    ds, vocab = tiny_task
    codes = {s: i for i, s in enumerate(ds)}
    tok = token_table({s: split_tensors(ds[s], vocab) for s in ds}, codes)
    known = first_hop_known(tok, codes["train"])
    facts = {tuple(ids) for ids, hop in zip(ds["train"]["input_ids"], ds["train"]["hop"]) if hop == 1}
    expect = [(h, r) in facts for h, r in zip(tok["head"].tolist(), tok["r1"].tolist())]
    assert known.tolist() == expect and 0 < sum(expect) < len(expect)
    assert not all(expect[i] for i in (tok["split"] == codes["test_unanswerable"]).nonzero().squeeze(1).tolist())  # some first hops unknown


def test_a_sequence_split_is_refused_by_eval_sae(harvested_run, tmp_path):
    cache = open_cache(harvested_run.activations_dir)
    save_tensors(eval_rows(tmp_path), {"rows": sequence_mask(cache.tokens(), 0.15, 0).nonzero().squeeze(1)})
    with pytest.raises(UserError, match="older train-sae split sequences, not prefixes.*sae-ooc train-sae --force"):
        heldout_from_disk(tmp_path, cache)
    save_tensors(eval_rows(tmp_path), {"rows": heldout_mask(cache.tokens(), 0.15, 0).nonzero().squeeze(1)})
    assert torch.equal(heldout_from_disk(tmp_path, cache), heldout_mask(cache.tokens(), 0.15, 0))


# probes at chance -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bridge_task():
    """A task with enough (head, r1) prefixes to measure chance: 60 entities x 6 facts, 30% of the prefixes held out,
    and a random-weight model of the tiny architecture run on them. No OOD atomic facts: every (head, r1) prefix is then
    the first hop of some two-hop fact, so every prefix at r1 determines its bridge."""
    cfg = load_config("configs/tiny.yaml", ["task.n_entities=60", "task.n_relations=8", "task.facts_per_entity=6", "task.phi=1.0",
                                            "task.ood_fraction=0", "model.d_model=64", "sae_eval.probe_steps=300", "sae_eval.n_controls=3"])
    ds, vocab = generate(cfg.task)
    codes = {s: i for i, s in enumerate(ds)}
    tok = token_table({s: split_tensors(ds[s], vocab) for s in ds}, codes)
    cache = SimpleNamespace(tokens=lambda: tok, manifest=SimpleNamespace(split_codes=codes), roles=("head", "r1", "r2"))  # what position_slices reads
    held = heldout_mask(tok, 0.3, 0)
    r1 = next(s for s in position_slices(cache, held, 10**6, 0) if s.name == "r1")
    model = build_model(cfg.model, vocab, seed=123).eval()
    return SimpleNamespace(cfg=cfg, tok=tok, r1=r1, model=model, n_entities=cfg.task.n_entities)


def binomial_upper(n: int, p: float, alpha: float = 1e-3) -> float:
    """The smallest accuracy k/n with P(Binomial(n, p) > k) < alpha."""
    tail, k = 1.0, 0
    while True:
        tail -= math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if tail < alpha:
            return k / n
        k += 1


def test_a_random_weight_model_reads_the_bridge_at_chance_on_heldout_prefixes(bridge_task):
    t = bridge_task
    sl = t.r1
    x_sel, x_ev = prefix_activations(t.model, [sl], [HOOK])[HOOK][1]
    probes, _ = probe_table(x_sel, x_ev, {"bridge": sl.labels["bridge"]}, sl.known_ev, {}, t.cfg.sae_eval)
    p = probes["bridge"]
    # a held-out prefix's bridge is the tail of its atomic fact, drawn uniformly and independently of everything the
    # probe saw: each held-out prefix is right with probability 1/E whatever the probe predicts
    bound = binomial_upper(p["n_heldout"], 1 / t.n_entities)
    assert p["n_heldout"] >= 100 and p["selection_acc_in_sample"] > 0.8  # it memorised the selection prefixes (chance: 1/60) ...
    assert p["heldout_acc"] <= bound  # ... and learned nothing that carries over
    assert not p["above_controls"]

    # the old split: held-out r1 tokens have twins (same (head, r1)) among the selection tokens, and the same probe on
    # the same random model scores far above chance
    held = sequence_mask(t.tok, 0.3, 0)
    at = (t.tok["pos"] == 1) & (t.tok["bridge"] >= 0)
    sel, ev = (at & ~held).nonzero().squeeze(1), (at & held).nonzero().squeeze(1)
    prefix = torch.stack([t.tok["head"], t.tok["r1"]], 1).long()
    old = PositionSlice(1, "r1", sel, ev, {"bridge": (t.tok["bridge"][sel].long(), t.tok["bridge"][ev].long())}, None, prefix[sel], prefix[ev])
    xs, xe = prefix_activations(t.model, [old], [HOOK])[HOOK][1]
    classes, (logits,) = fit_predict(xs, [xe], {"bridge": old.labels["bridge"][0]}, t.cfg.sae_eval)["bridge"]
    leaky = float((classes[logits.argmax(1)] == old.labels["bridge"][1]).double().mean())
    assert leaky > 5 * binomial_upper(len(ev), 1 / t.n_entities)


def test_shuffled_labels_score_at_chance_even_where_the_stream_carries_the_value(bridge_task):
    t = bridge_task
    sl = t.r1
    y_sel, y_ev = sl.labels["bridge"]
    g = torch.Generator().manual_seed(0)
    # a stream that carries the bridge outright: its one-hot code plus noise
    code = lambda y: torch.nn.functional.one_hot(y, t.n_entities).float() + 0.1 * torch.randn(len(y), t.n_entities, generator=g)  # noqa: E731
    probes, _ = probe_table(code(y_sel), code(y_ev), {"bridge": (y_sel, y_ev)}, None, {}, t.cfg.sae_eval)
    p = probes["bridge"]
    assert p["heldout_acc"] > 0.9 and p["above_controls"]
    # a probe fit on permuted labels learns a random map f from the value to a label; a held-out prefix of value b is
    # right only if f(b) = b, which needs one of b's n_b selection prefixes to have drawn label b: probability at most
    # q_b = n_b^2 / N. Mean and spread of the count of right prefixes follow (prefixes of one value move together).
    n_sel = {int(v): int(c) for v, c in zip(*torch.unique(y_sel, return_counts=True))}
    vals, n_ev = torch.unique(y_ev, return_counts=True)
    q = {int(v): min(1.0, n_sel.get(int(v), 0) ** 2 / len(y_sel)) for v in vals}
    mean = sum(int(c) * q[int(v)] for v, c in zip(vals, n_ev))
    sd = math.sqrt(sum(int(c) ** 2 * q[int(v)] for v, c in zip(vals, n_ev)))
    bound = (mean + 3 * sd) / len(y_ev)
    assert bound < 0.3  # the tolerance is tight enough to mean something
    assert len(p["shuffled_accs"]) == 3 and max(p["shuffled_accs"]) <= bound


# explained variance per position --------------------------------------------------------------------------
def test_explained_variance_per_position_matches_numpy(harvested_run):
    cache = open_cache(harvested_run.activations_dir)
    tok = cache.tokens()
    rows = distinct_rows(tok, heldout_mask(tok, 0.3, 0))
    sae = topk_sae(HOOK, cache.d_model, d_sae=48, k=4)
    m = reconstruction_metrics(sae, cache, HOOK, rows)
    x = np.concatenate([load_file(str(cache.shard_path(HOOK, i)))["activations"] for i in range(cache.n_shards)])[rows.numpy()].astype(np.float64)
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(torch.from_numpy(x).float())).double().numpy()
    pos = tok["pos"].numpy()[rows.numpy()]

    def ev(a, b):
        return 1 - ((a - b) ** 2).sum() / ((a - a.mean(0)) ** 2).sum()

    for p, name in enumerate(("head", "r1", "r2")):
        got = m["by_position"][name]
        assert got["n_tokens"] == int((pos == p).sum())
        assert got["explained_variance"] == pytest.approx(ev(x[pos == p], x_hat[pos == p]), abs=1e-9)
        assert got["l0"] == pytest.approx(float((sae.encode(torch.from_numpy(x[pos == p]).float()) != 0).sum(1).float().mean()), abs=1e-9)
    assert m["explained_variance"] == pytest.approx(ev(x, x_hat), abs=1e-9) and m["n_tokens"] == len(rows)
    # pooling shares one mean: the between-position spread adds to the denominator, so the pooled EV flatters the SAE
    # against the same errors over the within-position variance
    within = sum(((x[pos == p] - x[pos == p].mean(0)) ** 2).sum() for p in range(3))
    assert m["explained_variance"] > 1 - ((x - x_hat) ** 2).sum() / within
