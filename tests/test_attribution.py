"""Node attribution: splicing, exact patching against independent computations, atp/ig on a linear model,
prompt pairs, and the `attribute` stage's files."""

import json

import numpy as np
import pytest
import torch
from circuit_fixtures import HOOKS, linear_model, linear_sae, make_run, topk_sae
from safetensors import safe_open

from sae_ooc.circuits.effects import EFFECTS_FILE, EFFECTS_JSON, load_node_effects
from sae_ooc.circuits.methods import ATTRIBUTION_METHODS, effects_exact, node_effects
from sae_ooc.circuits.pairs import make_pairs, two_hop_facts
from sae_ooc.circuits.spliced import Spliced, load_spliced
from sae_ooc.circuits.validation import VALIDATION_FILE
from sae_ooc.cli import main as cli_main
from sae_ooc.config import ATTRIBUTION_METHODS as METHOD_NAMES
from sae_ooc.config import load_config
from sae_ooc.errors import UserError
from sae_ooc.models.hooked import build_model
from sae_ooc.pipeline import run_stage
from sae_ooc.stats import rankdata, spearman
from sae_ooc.tasks.data import split_tensors

from conftest import rendered_figures

TINY = load_config(__import__("circuit_fixtures").ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def tiny_spliced(tiny_task):
    ds, vocab = tiny_task
    model = build_model(TINY.model, vocab, seed=0)
    saes = {h: topk_sae(h, TINY.model.d_model, seed=i) for i, h in enumerate(HOOKS)}
    return model, Spliced(model, saes)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("attr"), overrides=["attribution.method=exact", "attribution.validate_pairs=6"])
    with rendered_figures():  # test_attribute_stage_files reads the validation figure
        result = run_stage(run, "attribute", validate=True)
    assert result.ran is True and result.info["method"] == "exact" and result.info["n_pairs"] == 12
    return run


def test_splicing_preserves_logits(tiny_task, tiny_spliced):
    ds, vocab = tiny_task
    model, sp = tiny_spliced
    tokens = split_tensors(ds["train"], vocab).tokens
    with torch.no_grad():
        ref = model(tokens)
        spliced = sp.model(tokens)
        cached, vals = sp.cache(tokens)
    leaves_logits, _, _ = sp.run_leaves(tokens)
    for out in (spliced, cached, leaves_logits.detach()):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the SAEs really are in the forward pass: feature activations are the SAE's encoding of the hook's input
    _, cache = model.run_with_cache(tokens, names_filter=HOOKS[1])
    torch.testing.assert_close(vals.acts[HOOKS[1]], sp.saes[HOOKS[1]].encode(cache[HOOKS[1]]))


def test_pairs_are_known_facts_with_other_bridge_and_answer(tiny_task):
    ds, vocab = tiny_task
    facts = two_hop_facts(ds, vocab)  # keyed by (r1, r2, the relations after r2: none in a two-hop task)
    pairs = make_pairs(ds, vocab, "test_id", 50, seed=3)
    assert 0 < len(pairs) <= 50
    for c, k, a, a2, b, b2 in zip(pairs.clean, pairs.corrupt, pairs.answer, pairs.answer_corrupt, pairs.bridge, pairs.bridge_corrupt):
        assert c[1:].tolist() == k[1:].tolist()
        assert (int(k[0]), int(b2), int(a2)) in facts[(int(c[1]), int(c[2]), ())]
        assert (int(c[0]), int(b), int(a)) in facts[(int(c[1]), int(c[2]), ())]
        assert b != b2 and a != a2
    test_id = {tuple(r) for r in ds["test_id"]["input_ids"]}
    assert all(tuple(c.tolist()) in test_id for c in pairs.clean)
    again = make_pairs(ds, vocab, "test_id", 50, seed=3)
    assert torch.equal(again.clean, pairs.clean) and torch.equal(again.corrupt, pairs.corrupt)
    assert not torch.equal(make_pairs(ds, vocab, "all", 50, seed=4).clean, pairs.clean)


def test_exact_patching_matches_a_single_hooked_patch(tiny_task, tiny_spliced):
    ds, vocab = tiny_task
    _, sp = tiny_spliced
    pairs = make_pairs(ds, vocab, "all", 4, seed=0)
    eff = effects_exact(sp, pairs, "logit_diff", chunk=37)  # an odd chunk size crosses pair boundaries
    h = HOOKS[1]
    _, clean = sp.cache(pairs.clean)
    _, corr = sp.cache(pairs.corrupt)
    b, p, f = (corr.acts[h] != clean.acts[h]).nonzero()[0].tolist()

    def patch(acts, hook):
        acts = acts.clone()
        acts[0, p, f] = corr.acts[h][b, p, f]
        return acts

    one = pairs.subset([b])
    with torch.no_grad():
        m0 = one.metric(sp.model(one.clean), "logit_diff")
        m1 = one.metric(sp.model.run_with_hooks(one.clean, fwd_hooks=[(f"{h}.hook_sae_acts_post", patch)]), "logit_diff")
    assert eff[h][b, p, f].item() == pytest.approx((m1 - m0).item(), abs=1e-5)
    assert eff[h][b, p, f] != 0
    # nodes whose clean and corrupted values agree have no effect
    same = (corr.acts[h] == clean.acts[h])
    assert torch.all(eff[h][..., :-1][same] == 0)


def test_error_node_holding_the_whole_activation_patches_like_the_activation(tiny_task):
    ds, vocab = tiny_task
    model = build_model(TINY.model, vocab, seed=1)
    saes = {h: topk_sae(h, TINY.model.d_model, seed=i) for i, h in enumerate(HOOKS)}
    h = HOOKS[1]
    with torch.no_grad():  # reconstruction 0: the error term is the whole activation
        saes[h].W_dec.zero_()
        saes[h].b_dec.zero_()
    sp = Spliced(model, saes)
    pairs = make_pairs(ds, vocab, "all", 5, seed=1)
    eff = effects_exact(sp, pairs, "logit_diff")
    _, corr_cache = model.run_with_cache(pairs.corrupt, names_filter=h)
    with torch.no_grad():
        m0 = pairs.metric(model(pairs.clean), "logit_diff")
        for pos in range(3):
            def patch(x, hook, pos=pos):
                x = x.clone()
                x[:, pos] = corr_cache[h][:, pos]
                return x

            m1 = pairs.metric(model.run_with_hooks(pairs.clean, fwd_hooks=[(h, patch)]), "logit_diff")
            torch.testing.assert_close(eff[h][:, pos, -1], m1 - m0, atol=1e-5, rtol=1e-4)
    assert eff[h][:, 0, -1].abs().max() > 1e-4


def test_atp_and_ig_equal_exact_when_the_metric_is_linear(tiny_task):
    ds, vocab = tiny_task
    model = linear_model(vocab)
    sp = Spliced(model, {h: linear_sae(h, 16, seed=i) for i, h in enumerate(HOOKS)})
    pairs = make_pairs(ds, vocab, "all", 6, seed=2)
    exact = node_effects(sp, pairs, "exact", "logit_diff", progress=False)
    atp = node_effects(sp, pairs, "atp", "logit_diff", progress=False)
    ig = node_effects(sp, pairs, "ig", "logit_diff", ig_steps=3, progress=False)
    scale = max(e.abs().max() for e in exact.values())
    assert scale > 1e-3
    for h in HOOKS:
        torch.testing.assert_close(atp[h], exact[h], atol=1e-4 * scale, rtol=1e-3)
        torch.testing.assert_close(ig[h], exact[h], atol=1e-4 * scale, rtol=1e-3)
    # and the effects of all nodes of one hook add up to the total effect (no nonlinearity anywhere)
    total = pairs.metric(sp.model(pairs.corrupt), "logit_diff") - pairs.metric(sp.model(pairs.clean), "logit_diff")
    torch.testing.assert_close(exact[HOOKS[0]].sum((1, 2)), total.detach(), atol=3e-4, rtol=1e-3)


def test_atp_verified_is_exact_on_its_shortlist_and_atp_elsewhere(tiny_task, tiny_spliced):
    _, sp = tiny_spliced
    pairs = make_pairs(tiny_task[0], tiny_task[1], "all", 8, seed=3)
    _, clean = sp.cache(pairs.clean)
    _, corr = sp.cache(pairs.corrupt)
    moved = {h: torch.cat([corr.acts[h] != clean.acts[h], (corr.errs[h] != clean.errs[h]).any(-1, keepdim=True)], -1) for h in HOOKS}
    exact = node_effects(sp, pairs, "exact", "logit_diff", progress=False)
    atp = node_effects(sp, pairs, "atp", "logit_diff", progress=False)
    k = 5
    ver = node_effects(sp, pairs, "atp_verified", "logit_diff", progress=False, verify_top=k)
    n_exact = 0
    for b in range(len(pairs)):
        flat = lambda e: torch.cat([e[h][b].flatten() for h in HOOKS])  # noqa: E731
        e, a, v, changed = flat(exact), flat(atp), flat(ver), flat(moved)
        # the k changed nodes with the largest |atp| carry their exact effect, every other node its atp value
        short = torch.zeros_like(changed)
        short[torch.where(changed)[0][a[changed].abs().argsort(descending=True, stable=True)[:k]]] = True
        torch.testing.assert_close(v[short], e[short], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(v[~short], a[~short])
        n_exact += int((v[short] != a[short]).sum())
    assert n_exact > 0  # atp and exact really differ on this nonlinear model
    # a shortlist that covers every changed node is exact patching
    full = node_effects(sp, pairs, "atp_verified", "logit_diff", progress=False, verify_top=10**6)
    for h in HOOKS:
        torch.testing.assert_close(full[h], exact[h], atol=1e-5, rtol=1e-4)


def test_spearman_matches_its_definition():
    assert rankdata(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_attribute_stage_files(run):
    ne = load_node_effects(run.attribution_dir / EFFECTS_FILE)
    assert ne.hooks == HOOKS and ne.method == "exact"
    n = len(ne.pairs)
    assert n == 12
    with safe_open(str(run.attribution_dir / EFFECTS_FILE), framework="pt") as f:
        keys = set(f.keys())
        for h in HOOKS:
            assert f.get_tensor(f"effects.{h}").shape == (3, 48 + 1)
            torch.testing.assert_close(f.get_tensor(f"effects.{h}"), f.get_tensor(f"per_prompt.{h}").mean(0))
    assert {"pairs.clean", "pairs.corrupt", "metric.clean", "metric.corrupt"} <= keys
    # the per-prompt effects are what exact patching gives on those pairs
    sp = load_spliced(run)
    again = effects_exact(sp, ne.pairs.subset(slice(0, 3)), "logit_diff")
    for h in HOOKS:
        torch.testing.assert_close(again[h], ne.per_prompt[h][:3], atol=1e-5, rtol=1e-4)
    s = json.loads((run.attribution_dir / EFFECTS_JSON).read_text())
    effects = [abs(x["mean_effect"]) for x in s["nodes"]]
    assert effects == sorted(effects, reverse=True) and len(s["nodes"][0]["per_prompt"]) == n
    top = s["nodes"][0]
    col = ne.d_sae[top["hook"]] if top["feature"] == "error" else top["feature"]
    assert top["mean_effect"] == pytest.approx(float(ne.mean[top["hook"]][top["position"], col]))
    torch.testing.assert_close(torch.tensor(s["total_effect_mean"]), (ne.metric_corrupt - ne.metric_clean).mean())
    v = json.loads((run.attribution_dir / VALIDATION_FILE).read_text())
    assert v["n_pairs"] == 6 and v["n_active_nodes"] > 50
    for m in ("atp", "ig", "atp_verified"):
        r = v["methods"][m]
        assert 0 <= r["recall_top10"] <= 1 and 0 <= r["recall_top50"] <= 1 and len(r["per_pair"]["recall_top50"]) == 6
        assert r["trusted"] == (r["recall_top50"] >= 0.9 and (r["spearman_not_exact"] is None or r["spearman_not_exact"] >= 0.9))
        assert r["speedup_vs_batched_exact"] == pytest.approx(v["timing_s"]["exact"] / v["timing_s"][m])
    # atp is judged on every changed node, atp_verified only on those outside its shortlist of verify_top per pair
    assert v["methods"]["atp"]["n_not_exact_mean"] == v["n_changed_nodes"] / 6
    assert v["methods"]["atp_verified"]["n_not_exact_mean"] == pytest.approx(
        np.mean([max(n - v["verify_top"], 0) for n in v["methods"]["atp"]["per_pair"]["n_not_exact"]]))
    assert (run.attribution_dir / "validation.png").exists() and (run.attribution_dir / "validation.svg").exists()
    assert run_stage(run, "attribute", validate=True).ran is False  # unchanged inputs: skipped


def test_attribute_cli(run, capsys):
    before = (run.attribution_dir / VALIDATION_FILE).stat().st_mtime_ns
    assert cli_main(["attribute", "--run", str(run.root)]) == 0
    out = capsys.readouterr().out
    assert "unchanged, skipped" in out and "exact on 12 pairs" in out and "atp vs exact on 6 pairs" in out
    assert (run.attribution_dir / VALIDATION_FILE).stat().st_mtime_ns == before  # validation up to date: not redone
    assert cli_main(["attribute", "--run", str(run.root), "--no-validate", "--set", "attribution.validate_pairs=4"]) == 0
    assert "atp vs exact" not in capsys.readouterr().out
    assert cli_main(["attribute", "--run", str(run.root), "--set", "attribution.validate_pairs=4"]) == 0
    assert "atp vs exact on 4 pairs" in capsys.readouterr().out


def test_attribute_without_saes_is_a_one_line_error(tmp_path, capsys):
    run = make_run(tmp_path, saes={})
    assert cli_main(["attribute", "--run", str(run.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train-sae" in err


def test_fast_exact_path_equals_patching_the_spliced_model(tiny_task, tiny_spliced, monkeypatch):
    ds, vocab = tiny_task
    _, sp = tiny_spliced
    pairs = make_pairs(ds, vocab, "all", 3, seed=5)
    assert sp.decode_is_stateless
    fast = effects_exact(sp, pairs, "logit_diff")
    monkeypatch.setattr(Spliced, "decode_is_stateless", property(lambda self: False))
    slow = effects_exact(sp, pairs, "logit_diff")
    for h in HOOKS:
        torch.testing.assert_close(fast[h], slow[h], atol=1e-5, rtol=1e-4)


def test_method_registry_is_the_configs_list_and_unknown_methods_are_one_line_errors(tiny_task, tiny_spliced):
    ATTRIBUTION_METHODS.check()
    assert ATTRIBUTION_METHODS.names() == METHOD_NAMES
    _, sp = tiny_spliced
    pairs = make_pairs(tiny_task[0], tiny_task[1], "all", 2, seed=0)
    with pytest.raises(UserError) as e:
        node_effects(sp, pairs, "gradient_magic", "logit_diff", progress=False)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "gradient_magic" in msg and all(m in msg for m in METHOD_NAMES)
