"""The fine-tuning comparison (sae_ooc.compare.finetune, issue 24 section 2) on the tiny harvested run and a fine-tuning
run's data built from it: the pretrained DAS subspace's switch rate recomputed here by hand with a hook, the new-bridge
pairs checked against the facts, and the SAE feature shift against numpy. No training: the "fine-tuned" model is the
pretrained one with its last MLP perturbed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from sae_ooc.causal.pairs import HELD, draw_pairs
from sae_ooc.causal.result import VariablesResult
from sae_ooc.causal.variables import two_hop_questions
from sae_ooc.compare import finetune as cf
from sae_ooc.compare.finetune_text import render_finetune
from sae_ooc.config import load_config
from sae_ooc.interventions.facts import Facts
from sae_ooc.io import save_tensors, write_json
from sae_ooc.models.hooked import load_model, save_model
from sae_ooc.tasks.data import load_task, save_task
from sae_ooc.tasks.finetune import FINETUNE_FILE, finetune_task

from circuit_fixtures import topk_sae
from conftest import ROOT

HOOK, POS, RANK = "blocks.1.hook_resid_pre", 1, 4


@pytest.fixture(scope="module")
def pair(harvested_run, tmp_path_factory):
    """(pre, ft): a copy of the tiny run with a bridge@r1 node of a random rank-4 basis, and a fine-tuning run of it."""
    root = tmp_path_factory.mktemp("ftcmp")
    pre, ft = root / "pre", root / "ft"
    for sub in ("data", "model"):
        shutil.copytree(harvested_run.root / sub, pre / sub)
    shutil.copy(harvested_run.root / "config.yaml", pre / "config.yaml")
    ds, vocab = load_task(pre / "data")
    facts = Facts.from_dataset(ds, vocab, "twohop")
    q = two_hop_questions(ds, vocab, ["test_id"])
    held = {(int(h), int(r)) for h, r in zip(q.head, q.r1)}
    P = draw_pairs(facts, q, torch.arange(len(q)), {p: HELD for p in held}, HELD, 2, 0)
    rows = [[int(v) for v in (h, a, c, b, b2, dh, da)] for h, a, c, b, b2, (dh, da) in
            zip(P.head, P.r1, P.r2, P.b, P.b2, P.donor.tolist())]
    W = torch.linalg.qr(torch.randn(32, RANK, generator=torch.Generator().manual_seed(1)))[0].T.contiguous()
    # a real variables.json (tests/data/outputs) with its bridge@r1 node moved to HOOK and POS and these held-out pairs
    res = VariablesResult.load(ROOT / "tests" / "data" / "outputs" / "variables")
    node = res.circuit.nodes["bridge@r1"]
    node.hook, node.position, node.rank = HOOK, POS, RANK
    res.heldout_pairs = rows
    res.save(pre / "variables")
    save_tensors(pre / "variables" / "circuit_units.safetensors", {"bridge@r1": W})
    cfg = load_config(ROOT / "configs" / "finetune_toy_tiny.yaml", [f"model.run={pre}"])
    fds, fvocab, meta = finetune_task(cfg, pre, load_task)
    save_task(fds, fvocab, ft / "data", extra={FINETUNE_FILE: lambda path: write_json(path, meta)})
    model = load_model(pre / "model")
    with torch.no_grad():
        model.blocks[1].mlp.W_out.add_(0.05 * torch.randn_like(model.blocks[1].mlp.W_out))
    save_model(model, ft / "model")
    shutil.copy(pre / "config.yaml", ft / "config.yaml")
    return pre, ft, W


def _by_hand(model, facts, rows, W, full: bool) -> tuple[float, int]:
    """Switch rate over the bases the model answers right, each pair run alone with a hook that interchanges W's span
    (or the whole state) of the donor's r1 state at HOOK."""
    hits = n = 0
    for h, r1, r2, b, b2, dh, dr in rows:
        tok, apos = facts.tokens([(h, r1, r2)])
        dtok, _ = facts.tokens([(dh, dr, r2)])
        with torch.no_grad():
            if model(tok)[0, apos[0]].argmax() != facts.tail[(b, r2)]:
                continue
            _, cache = model.run_with_cache(dtok, names_filter=HOOK)
            xd = cache[HOOK][0, POS]

            def swap(act, hook):
                x = act[0, POS]
                act[0, POS] = xd if full else x + (xd - x) @ W.T @ W
                return act

            out = model.run_with_hooks(tok, fwd_hooks=[(HOOK, swap)])[0, apos[0]].argmax()
        n += 1
        hits += int(out == facts.tail[(b2, r2)])
    return hits / max(n, 1), n


def test_the_pretrained_subspace_switch_rate_matches_a_hand_computation(pair):
    pre, ft, W = pair
    res = cf.compare_finetune(pre, ft, samples=2, bootstrap=20, random_draws=2, probe_steps=20)
    ds, vocab = load_task(ft / "data")
    facts = Facts.from_dataset(ds, vocab, "twohop")
    rows = VariablesResult.load(pre / "variables").heldout_pairs
    for case, model_dir in (("old@pretrained", pre), ("old@finetuned", ft)):
        c = res["das"]["cases"][case]
        model = load_model(model_dir / "model")
        rate, n = _by_hand(model, facts, rows, W, full=False)
        assert c["n_pairs"] == len(rows) and c["n_correct_bases"] == n > 0
        assert c["unit"]["switch"] == pytest.approx(rate)
        assert c["resid_patch"]["switch"] == pytest.approx(_by_hand(model, facts, rows, W, full=True)[0])
    # the new-bridge pairs: base first fact new (its bridge a new fact's tail), donor a new fact's prefix into b'
    new = {(h, r): t for h, r, t in zip(ds["atomic_test"]["head"], ds["atomic_test"]["r1"], ds["atomic_test"]["answer"])}
    P, _ = cf.new_bridge_pairs(facts, ds, vocab, 0)
    assert len(P) > 0 and res["das"]["cases"]["new@finetuned"]["n_pairs"] == len(P)
    for h, r1, r2, b, b2, (dh, dr) in zip(P.head.tolist(), P.r1.tolist(), P.r2.tolist(), P.b.tolist(), P.b2.tolist(), P.donor.tolist()):
        assert new[(h, r1)] == b and new[(dh, dr)] == b2 and facts.tail[(b2, r2)] != facts.tail[(b, r2)]
    # tracing: old facts on both models, new facts on the fine-tuned one; the bridge probe scored on both fact sets
    assert set(res["tracing"]) == {"old@pretrained", "old@finetuned", "new@finetuned"}
    assert res["tracing"]["new@finetuned"]["n_prompts"] == len(new)
    assert set(res["bridge_probe"]["acc"][HOOK]) == {"old@pretrained", "new@pretrained", "old@finetuned", "new@finetuned"}
    held = {(r[0], r[1]) for r in rows} | {(r[5], r[6]) for r in rows}
    Pm, _ = cf.new_bridge_pairs(facts, ds, vocab, 0, held)
    assert len(Pm) > 0 and all((dh, dr) in held and (dh, dr) not in new for dh, dr in Pm.donor.tolist())
    assert res["das"]["cases"]["new, old donors@finetuned"]["n_pairs"] == len(Pm)
    assert "no trained SAEs" in res["sae_features"]["skipped"]
    md = "\n".join(render_finetune({"ft": res}))
    assert f"{res['das']['cases']['old@pretrained']['unit']['switch']:.3f}" in md and "Not measured: " in md
    assert cf.finetune_pairs([ft, pre]) == [(1, 0)]


def test_feature_shift_matches_numpy():
    sae = topk_sae(HOOK, 8, d_sae=16, k=3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)
    rows = {"old": {"pretrained": x, "finetuned": x + 0.3 * torch.randn(50, 8, generator=g)}}
    res = cf.feature_shift(sae, rows, {}, str)["old"]
    with torch.no_grad():
        f = {m: sae.encode(v).numpy() for m, v in rows["old"].items()}
        xf = rows["old"]["finetuned"]
        fvu = float(((sae.decode(sae.encode(xf)) - xf) ** 2).sum() / ((xf - xf.mean(0)) ** 2).sum())
    assert res["fvu"]["finetuned"] == pytest.approx(fvu, rel=1e-5)
    live = (f["pretrained"].std(0) > 0) & (f["finetuned"].std(0) > 0)
    r = [np.corrcoef(f["pretrained"][:, i], f["finetuned"][:, i])[0, 1] for i in np.flatnonzero(live)]
    assert res["median_corr"] == pytest.approx(float(np.median(r)), abs=1e-6)
    top = res["top_changed"][0]
    assert abs(top["mean_finetuned"] - top["mean_pretrained"]) == pytest.approx(
        float(np.abs(f["finetuned"].mean(0) - f["pretrained"].mean(0)).max()), rel=1e-5)
