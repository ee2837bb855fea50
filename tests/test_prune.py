"""Per-prompt circuits by backward elimination: exact end points on a real (nonlinear) tiny model, and on a
linear model, where the metric is a sum of node contributions, every round equals the same greedy search run
on independently computed contributions."""

import pytest
import torch
from circuit_fixtures import HOOKS, ROOT, linear_model, linear_sae, topk_sae

from sae_ooc.circuits import prune
from sae_ooc.circuits.ablation import ablated_metric, ablation_values
from sae_ooc.circuits.faithfulness import Faith
from sae_ooc.circuits.nodes import Node
from sae_ooc.circuits.pairs import make_pairs
from sae_ooc.circuits.prune import (
    NodeLayout,
    candidate_nodes,
    prune_circuits,
    summarize,
    transfer,
)
from sae_ooc.circuits.selection import keep_masks
from sae_ooc.circuits.spliced import Spliced
from sae_ooc.config import load_config
from sae_ooc.models.hooked import build_model

TINY = load_config(ROOT / "configs" / "tiny.yaml")


def _faith(sp, pairs, abl):
    return Faith(ablated_metric(sp, pairs, None, abl, "logit_diff"), ablated_metric(sp, pairs, keep_masks(sp, []), abl, "logit_diff"))


@pytest.fixture(scope="module")
def tiny_sp(tiny_task):
    return Spliced(build_model(TINY.model, tiny_task[1], seed=0), {h: topk_sae(h, TINY.model.d_model, seed=i) for i, h in enumerate(HOOKS)})


def test_rounds_run_from_the_whole_model_to_the_empty_circuit(tiny_task, tiny_sp, monkeypatch):
    ds, vocab = tiny_task
    sp = tiny_sp
    pairs = make_pairs(ds, vocab, "all", 5, seed=0)
    abl = ablation_values(sp, ds, "zero", 64, 0, pairs)
    bars = []

    def bar(items, **kw):  # the progress bar: what it is told to expect, and what it is given
        items = list(items)
        bars.append((kw.get("total", len(items)), len(items)))
        return items

    monkeypatch.setattr(prune, "tqdm", bar)
    res = prune_circuits(sp, pairs, abl, "logit_diff", _faith(sp, pairs, abl), step=0.2, progress=True)
    r = res["rounds"]
    assert bars == [(len(r) - 1, len(r) - 1)]  # one step per round after the first
    # zero ablation: the candidates are the active features and the error nodes, i.e. the whole model
    assert r[0]["faithfulness"] == pytest.approx(1.0, abs=1e-5)
    assert r[0]["mean_features"] == pytest.approx(sum(6 * 3 for _ in HOOKS))  # k = 6 active features per (hook, position)
    assert r[-1]["budget"] == 0 and r[-1]["max_nodes"] == 0 and r[-1]["faithfulness"] == pytest.approx(0.0, abs=1e-6)
    budgets = [x["budget"] for x in r]
    assert budgets == sorted(budgets, reverse=True) and len(set(budgets)) == len(budgets)
    assert all(x["max_nodes"] <= x["budget"] for x in r)
    s = summarize(res, 0.8, 10)
    assert s["faithfulness_within_max"] == next(x["faithfulness"] for x in r if x["max_features"] <= 10)


def test_on_a_linear_model_the_search_matches_one_on_the_analytic_contributions(tiny_task):
    ds, vocab = tiny_task
    model = linear_model(vocab)
    h = HOOKS[1]
    sae = linear_sae(h, 16, seed=3)
    sp = Spliced(model, {h: sae})
    pairs = make_pairs(ds, vocab, "all", 6, seed=4)
    abl = ablation_values(sp, ds, "zero", 64, 0, pairs)
    res = prune_circuits(sp, pairs, abl, "logit_diff", _faith(sp, pairs, abl), step=0.1, progress=False)

    # independent: the metric is affine in the activation x at h, so a node's contribution is grad . (its part of x)
    x = {}

    def grab(act, hook):
        act.retain_grad()
        x["x"] = act
        return act

    logits = model.run_with_hooks(pairs.clean, fwd_hooks=[(h, grab)])
    pairs.metric(logits, "logit_diff").sum().backward()
    xv, g = x["x"].detach(), x["x"].grad
    with torch.no_grad():
        f = sae.encode(xv)  # [n, P, d_sae]
        err = xv - sae.decode(f)
        contrib = torch.cat([f * (g @ sae.W_dec.T), (g * err).sum(-1, keepdim=True)], -1).flatten(1)  # [n, P * (d_sae + 1)]
    total = contrib.sum(1)
    layout = NodeLayout(sp)
    assert int(candidate_nodes(sp, pairs, abl, layout).sum(1).max()) == contrib.shape[1]  # every feature is always on
    # the same greedy search on the analytic contributions: m(C) = m(empty) + sum of the kept contributions
    kept = torch.ones_like(contrib, dtype=torch.bool)
    budget, expected = contrib.shape[1], []
    while budget > 0:
        budget = min(budget - 1, int(budget * 0.9))
        for p in range(len(pairs)):
            idx = kept[p].nonzero(as_tuple=True)[0]
            if len(idx) > budget:
                now = contrib[p][kept[p]].sum()
                dist = (now - contrib[p, idx] - total[p]).abs()
                kept[p, idx[dist.argsort(stable=True)[: len(idx) - budget]]] = False
        expected.append((budget, float((contrib * kept).sum() / total.sum())))
    assert [r["budget"] for r in res["rounds"][1:]] == [b for b, _ in expected]
    for rnd, (_, want) in zip(res["rounds"][1:], expected):
        assert rnd["faithfulness"] == pytest.approx(want, rel=1e-3, abs=1e-3), rnd["budget"]
    assert res["rounds"][0]["faithfulness"] == pytest.approx(1.0, abs=1e-5)


def test_a_prompts_circuit_is_scored_on_the_other_prompts_by_whether_they_share_its_relations(tiny_task, tiny_sp):
    ds, vocab = tiny_task
    sp = tiny_sp
    pairs = make_pairs(ds, vocab, "all", 12, seed=0)
    rel = pairs.relations()
    sources = [i for i in range(len(pairs)) if rel.count(rel[i]) > 1][:2] + [i for i in range(len(pairs)) if rel.count(rel[i]) == 1][:1]
    assert len(sources) == 3  # two prompts with partners that share (r1, r2), one without
    abl = ablation_values(sp, ds, "mean", 64, 0, pairs)
    faith = _faith(sp, pairs, abl)
    every = [Node(h, p, i) for h in HOOKS for p in range(3) for i in [None, *range(sp.d_sae[h])]]
    g = torch.Generator().manual_seed(0)
    circuits = [[every[j] for j in torch.randperm(len(every), generator=g)[:150].tolist()] for _ in sources]
    layout = NodeLayout(sp)
    keep = torch.cat([layout.flatten(*({h: m[None] for h, m in part.items()} for part in keep_masks(sp, c))) for c in circuits])
    got = transfer(sp, pairs, sources, keep, abl, "logit_diff", faith)
    for name, same in (("same_relations", True), ("other_relations", False)):
        rows = [(k, j) for k, i in enumerate(sources) for j in range(len(pairs)) if j != i and (rel[j] == rel[i]) == same]
        m = torch.cat([ablated_metric(sp, pairs.subset([j]), tuple({h: x[None] for h, x in part.items()} for part in keep_masks(sp, circuits[k])),
                                      abl.rows([j]), "logit_diff") for k, j in rows])
        idx = torch.tensor([j for _, j in rows])
        want = float((m.mean() - faith.m_empty[idx].mean()) / (faith.m_full[idx].mean() - faith.m_empty[idx].mean()))
        assert got[name]["n_rows"] == len(rows) and got[name]["faithfulness"] == pytest.approx(want, rel=1e-4, abs=1e-5)
        assert got[name]["per_source"]["n"] == len({k for k, _ in rows})
    assert got["same_relations"]["per_source"]["n"] == 2 and got["other_relations"]["n_rows"] + got["same_relations"]["n_rows"] == 3 * 11
