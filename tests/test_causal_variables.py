"""Stage `variables` (sae_ooc.causal): plumbing on the tiny run, and the properties its units must have.

The tiny model does not compose, so nothing here is about the numbers' size: the file loads back through its typed
class, switch rates are shares, the residual patch's switch rate is recomputed independently with plain
`run_with_hooks`, DAS at full rank is the residual patch, the class-mean edit at full rank is the class-mean edit, and
LEACE leaves no linear information a refit probe can use.
"""

from __future__ import annotations

import pytest
import torch
from circuit_fixtures import HOOKS, mark_stages, topk_sae
from conftest import copy_run, rendered_figures
from test_stage_outputs import check_line

from sae_ooc.activations.cache import ActivationCache, heldout_mask
from sae_ooc.causal.das import RotatedSubspace, das_delta, logits_from, start_layer, train_das
from sae_ooc.causal.erase import leace, leace_fn, one_hot, probe_accuracy
from sae_ooc.causal.isolation import read_state
from sae_ooc.causal.result import VARIABLES_FILE, VariablesResult
from sae_ooc.causal.units import bootstrap_share, class_means, principal_directions, projected
from sae_ooc.config import load_config
from sae_ooc.errors import UserError
from sae_ooc.io import save_tensors, write_json
from sae_ooc.models.hooked import load_model
from sae_ooc.pipeline import run_stage
from sae_ooc.saes.store import METRICS_FILE, eval_rows
from sae_ooc.tasks.data import load_task
from sae_ooc.typed_yaml import ConfigError

HOOK = HOOKS[1]  # blocks.1.hook_resid_pre
MID = "blocks.1.hook_resid_mid"  # no SAE there: the variable rows keep their SAE-free units
SETTINGS = ("causal.only_correct=false", "causal.heldout_splits=[train,valid_id,test_id]", "causal.das_steps=5",
            "causal.das_batch=64", "causal.ranks=[1,4,32]", "causal.feature_counts=[1,4]", "causal.random_draws=2",
            "causal.probe_steps=20", "causal.bootstrap=50", "causal.erase_rank=4", f"causal.hooks=[{HOOK}]",
            "causal.circuit_patch_min=0", "causal.variables=[r2]", "causal.variable_ranks=[4]", "causal.variable_patch_min=0",
            f"causal.variable_hooks=[{HOOK},{MID}]")


@pytest.fixture(scope="module")
def run(harvested_run, tmp_path_factory):
    """The harvested tiny run with random TopK SAEs, the held-out prefixes train-sae would write, a bridge label; then
    stage variables."""
    run = copy_run(harvested_run, tmp_path_factory.mktemp("variables") / "run", SETTINGS)
    run.check_and_save_config()
    d = load_model(run.model_dir, "cpu").cfg.d_model
    for i, h in enumerate(HOOKS):
        topk_sae(h, d, seed=i).save_model(run.saes_dir / h)
        labels = [{"feature": 0, "variable": "bridge", "position": "r1", "value": load_task(run.data_dir)[1].planted_names[0]}]
        write_json(run.sae_eval_dir / h / METRICS_FILE, {"feature_labels": labels})
    cache = ActivationCache(run.activations_dir)
    save_tensors(eval_rows(run.saes_dir), {"rows": heldout_mask(cache.tokens(), 0.3, 0).nonzero().squeeze(1)})
    mark_stages(run, ("train-sae", "eval-sae"))
    with rendered_figures():  # the tests read its figure files
        run.result = run_stage(run, "variables")
    return run


def test_stage_writes_a_file_that_loads_back(run):
    assert run.result.ran and run.result.finished
    check_line(run, "variables", run.result)
    res = VariablesResult.load(run.variables_dir)
    (row,) = [r for r in res.rows if not r.pairs]
    assert (row.variable, row.position, row.hook) == ("bridge", "r1", HOOK)
    r2, r2_mid = [r for r in res.rows if r.pairs]
    assert (r2.variable, r2.position, r2.hook, r2.pairs.name) == ("r2", "r2", HOOK, "r2")
    assert (r2_mid.variable, r2_mid.hook) == ("r2", MID)
    assert {"resid_patch", "das_rank4", "random_rank4"} <= set(r2_mid.units) and "sae_code_swap" not in r2_mid.units
    assert all(0.0 <= r2_mid.units[u].switch <= 1.0 for u in ("resid_patch", "das_rank4"))
    for name in ("resid_patch", "sae_opt1", "sae_opt4", "das_rank4", "random_rank4", "sae_code_swap"):
        assert 0.0 <= r2.units[name].switch <= 1.0, name
    assert row.n_heldout == len(res.heldout_pairs) > 0
    for name in ("resid_patch", "labelled_features", "top1_features", "top4_features", "sae_code_swap", "supervised",
                 "supervised_rank4", "das_rank1", "das_rank32", "random_rank4", "random_features4", "sae_opt1", "sae_opt4"):
        assert 0.0 <= row.units[name].switch <= 1.0, name
    for kind, names in row.curves.items():
        assert names and all(n in row.units for n in names), kind
    assert row.units["random_rank4"].min <= row.units["random_rank4"].switch <= row.units["random_rank4"].max
    assert row.isolation.read_at == "blocks.1.hook_resid_post"
    assert all(0.0 <= v <= 1.0 for v in [row.isolation.clean, *row.isolation.units.values()])
    assert {"resid_patch", "supervised", "das_rank4", "random_rank4"} <= set(row.isolation.units)
    assert (run.variables_dir / "control_curves.png").exists() and (run.variables_dir / "control_curves.svg").exists()
    bad = run.root / "other" / VARIABLES_FILE
    bad.parent.mkdir()
    bad.write_text('{"format": "something else"}')
    with pytest.raises(UserError, match="not a sae_ooc.variables"):
        VariablesResult.load(bad.parent)


def test_resid_patch_matches_plain_run_with_hooks(run):
    """The stage's residual-patch switch rate, recomputed from its held-out pairs with TransformerLens alone."""
    res = VariablesResult.load(run.variables_dir)
    ds, vocab = load_task(run.data_dir)
    tail = {(int(h), int(r)): int(a) for h, r, a, hop in zip(ds["train"]["head"], ds["train"]["r1"], ds["train"]["answer"],
                                                             ds["train"]["hop"]) if hop == 1}
    model = load_model(run.model_dir, "cpu")
    pairs = torch.tensor(res.heldout_pairs)
    base = torch.tensor([vocab.question_ids(h, r1, r2) for h, r1, r2 in pairs[:, :3].tolist()])
    donor = torch.tensor([vocab.question_ids(h, r1, r2) for h, r1, r2 in pairs[:, [5, 6, 2]].tolist()])
    _, cache = model.run_with_cache(donor, names_filter=HOOK)
    pos = vocab.layout.index("r1")

    def patch(x, hook):
        x = x.clone()
        x[:, pos] = cache[HOOK][:, pos]
        return x

    logits = model.run_with_hooks(base, fwd_hooks=[(HOOK, patch)])[:, vocab.layout.answer_pos]
    want = torch.tensor([vocab.answer_token_ids(tail[(b2, r2)])[0] for b2, r2 in pairs[:, [4, 2]].tolist()])
    share = float((logits.argmax(-1) == want).float().mean())
    assert res.rows[0].units["resid_patch"].switch == pytest.approx(share)


def test_das_at_full_rank_is_the_residual_patch(run):
    model = load_model(run.model_dir, "cpu")
    ds, vocab = load_task(run.data_dir)
    tok = torch.tensor([vocab.question_ids(h, r, r2) for h, r, r2 in [(0, vocab.relation_id(0), vocab.relation_id(1))] * 4])
    _, cache = model.run_with_cache(tok, names_filter=HOOK)
    base = cache[HOOK]
    xd = torch.randn(4, base.shape[-1])
    d = base.shape[-1]
    mod = train_das(model, HOOK, base, 1, torch.full((4,), 2), xd, torch.zeros(4, dtype=torch.long), d, 3, 4, 0.1, 0)
    assert all(p.requires_grad for p in model.parameters())  # frozen only while training
    delta = das_delta(mod, base[:, 1], xd)
    torch.testing.assert_close(base[:, 1] + delta, xd, atol=1e-4, rtol=1e-4)
    # and the model run from the hook on equals the whole model with the residual patched by a hook
    r = base.clone()
    r[:, 1] = base[:, 1] + delta
    patched = model.run_with_hooks(tok, fwd_hooks=[(HOOK, lambda x, hook: torch.cat([x[:, :1], xd[:, None], x[:, 2:]], 1))])
    torch.testing.assert_close(logits_from(model, r, start_layer(HOOK, model.cfg.n_layers)), patched, atol=1e-3, rtol=1e-3)
    # below full rank the interchange is not the patch
    low = RotatedSubspace(d, 2, 0)
    assert (das_delta(low, base[:, 1], xd) - (xd - base[:, 1])).norm() > 1e-2


def test_isolation_reads_the_state_the_model_computes(run):
    """read_state with no delta is the cached activation; with a delta at r1 it is what run_with_hooks computes."""
    model = load_model(run.model_dir, "cpu")
    _, vocab = load_task(run.data_dir)
    tok = torch.tensor([vocab.question_ids(h, vocab.relation_id(0), vocab.relation_id(1)) for h in range(3)])
    apos = torch.full((3,), vocab.layout.answer_pos)
    read = "blocks.1.hook_resid_post"
    _, cache = model.run_with_cache(tok, names_filter=read)
    torch.testing.assert_close(read_state(model, tok, apos, HOOK, 1, None, read, 2), cache[read][:, -1])
    delta = torch.randn(3, model.cfg.d_model)
    got = read_state(model, tok, apos, HOOK, 1, delta, read, 2)
    store = {}
    model.run_with_hooks(tok, fwd_hooks=[(HOOK, lambda x, hook: torch.cat([x[:, :1], x[:, 1:2] + delta[:, None], x[:, 2:]], 1)),
                                         (read, lambda x, hook: store.setdefault("x", x))])
    torch.testing.assert_close(got, store["x"][:, -1])
    assert (got - cache[read][:, -1]).norm() > 1e-3


def test_class_mean_edit_at_full_rank_is_the_class_mean_edit():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 16, generator=g), torch.randint(0, 7, (200,), generator=g)
    x += torch.randn(7, 16, generator=g)[y] * 3
    mu, has = class_means(x, y, 9)
    assert has.tolist() == [True] * 7 + [False] * 2
    torch.testing.assert_close(mu[3], x[y == 3].mean(0))
    U, share = principal_directions(mu, has)
    edit = mu[torch.tensor([1, 2])] - mu[torch.tensor([4, 0])]
    torch.testing.assert_close(projected(edit, U), edit, atol=1e-4, rtol=1e-4)
    assert share.sum() == pytest.approx(1.0, abs=1e-5) and (projected(edit, U[:2]) - edit).norm() > 1e-2


def test_leace_leaves_a_refit_probe_at_chance():
    g = torch.Generator().manual_seed(0)
    k = 4
    y = torch.randint(0, k, (600,), generator=g)
    x = torch.randn(600, 12, generator=g) + torch.randn(k, 12, generator=g)[y] * 2
    fit, ev = slice(0, 400), slice(400, 600)
    before = probe_accuracy(x[fit], y[fit], x[ev], y[ev], 300, 0)
    erase = leace_fn(leace(x[fit], one_hot(y[fit], k)))
    after = probe_accuracy(erase(x[fit]), y[fit], erase(x[ev]), y[ev], 300, 0)
    majority = float((y[ev] == torch.bincount(y[fit]).argmax()).float().mean())
    assert before > 0.9
    assert after < max(1 / k, majority) + 0.12


def test_bootstrap_resamples_head_entities():
    v = torch.tensor([1.0, 1.0, 1.0, 0.0])
    heads = torch.tensor([0, 0, 0, 1])  # two heads: a resample has the three ones, the zero, or both
    lo, hi = bootstrap_share(v, heads, 400, 0)
    assert lo == 0.0 and hi == 1.0
    lo, hi = bootstrap_share(v, torch.arange(4), 400, 0)
    assert 0.0 <= lo < 0.75 < hi <= 1.0 and bootstrap_share(v[:0], heads[:0], 10, 0) is None


def test_config_refuses_a_non_residual_hook():
    with pytest.raises(ConfigError, match="causal.hooks"):
        load_config(None, ["causal.hooks=[blocks.0.attn.hook_z]"])


def _circuit_check(run):
    """The circuit's record, its saved units, and the held-out pairs rebuilt with the task's own facts."""
    from sae_ooc.io import load_tensors

    res = VariablesResult.load(run.variables_dir)
    units = load_tensors(run.variables_dir / "circuit_units.safetensors")
    ds, vocab = load_task(run.data_dir)
    tail = {(int(h), int(r)): int(a) for h, r, a, hop in zip(ds["train"]["head"], ds["train"]["r1"], ds["train"]["answer"],
                                                             ds["train"]["hop"]) if hop == 1}
    pairs = torch.tensor(res.heldout_pairs)
    base = torch.tensor([vocab.question_ids(h, r1, r2) for h, r1, r2 in pairs[:, :3].tolist()])
    donor = torch.tensor([vocab.question_ids(h, r1, r2) for h, r1, r2 in pairs[:, [5, 6, 2]].tolist()])
    first = {k: torch.tensor([vocab.answer_token_ids(tail[(b, r2)])[0] for b, r2 in pairs[:, [i, 2]].tolist()]) for k, i in
             (("answer", 3), ("counter", 4))}
    return res.circuit, units, load_model(run.model_dir, "cpu"), base, donor, first, vocab.layout.answer_pos


def test_circuit_iia_matches_plain_run_with_hooks(run):
    """Each node's IIA recomputed from the saved unit with TransformerLens alone: the donor's coordinates in the subspace
    replace the base's at (hook, position), the answer compared with t(b', r2)."""
    c, units, model, base, donor, first, apos = _circuit_check(run)
    assert c.ok and set(c.nodes) == {"bridge@r1", "bridge@answer", "r2@answer"}
    bridge = {k: c.nodes[k] for k in ("bridge@r1", "bridge@answer")}
    assert c.iia == min(n.unit.switch for n in bridge.values())
    r2 = c.nodes["r2@answer"]  # scored on section 1's r2 pairs; its unit is the r2 span kept for the ablation
    assert r2.hook == bridge["bridge@answer"].hook and units[f"r2@{r2.hook}"].shape[0] == r2.rank > 0
    assert set(c.inputs) == {"r2"} and c.inputs["r2"].unit.switch == c.inputs["r2"].resid_patch.switch
    for key, node in bridge.items():
        hook, pos, W = node.hook, node.position, units[key]
        assert W.shape[0] == node.rank
        _, cache = model.run_with_cache(donor, names_filter=hook)

        def interchange(x, hook=None, hook_name=hook, pos=pos, W=W):
            x = x.clone()
            x[:, pos] = x[:, pos] + ((cache[hook_name][:, pos] - x[:, pos]) @ W.T) @ W
            return x

        logits = model.run_with_hooks(base, fwd_hooks=[(hook, interchange)])[:, apos]
        share = float((logits.argmax(-1) == first["counter"]).float().mean())
        assert node.unit.switch == pytest.approx(share), key
    o = c.nodes["bridge@answer"].other_r2
    assert 0 < o.n <= len(base) and all(0 <= x <= 1 for x in (o.resid_patch, o.resid_patch_donor_answer, o.unit_donor_answer))


def test_circuit_no_remainder_matches_plain_run_with_hooks(run):
    """The circuit with no remainder, recomputed with TransformerLens alone from the saved bases and means: every position
    of each hook mean-ablated but the kept units; and its validity controls are what they claim."""
    c, units, model, base, donor, first, apos = _circuit_check(run)
    f = c.faithfulness
    cut = f.circuit
    assert cut.identity.kept == pytest.approx(float((model(base)[:, apos].argmax(-1) == first["answer"]).float().mean()))
    assert cut.identity.max_abs_logit_change < 1e-3
    hooks = []
    for hook, kept in cut.units.items():
        mu = units[f"mean@{hook}"]
        bases = {int(p): (units["bridge@r1"] if (hook, int(p)) == (c.nodes["bridge@r1"].hook, c.r1_position) else None)
                 for p in kept}
        if int(apos) in bases:
            answer_unit = [units["bridge@answer"]] if hook == c.nodes["bridge@answer"].hook else []
            a = torch.cat([*answer_unit, units[f"r2@{hook}"]])
            bases[int(apos)] = torch.linalg.svd(a, full_matrices=False)[2][: kept[str(apos)]]

        def ablate(x, hook=None, mu=mu, bases=bases):
            out = mu[None].expand_as(x).clone()
            for p, W in bases.items():
                out[:, p] = x[:, p] @ W.T @ W + mu[p] - mu[p] @ W.T @ W
            return out

        hooks.append((hook, ablate))
        assert sum(kept.values()) == sum(len(W) for W in bases.values())
    logits = model.run_with_hooks(base, fwd_hooks=hooks)[:, apos]
    assert cut.unit.kept == pytest.approx(float((logits.argmax(-1) == first["answer"]).float().mean()))
    for name in ("cut_r1", "cut_answer", "circuit"):
        assert isinstance(getattr(f, name).valid, bool) and 0 <= getattr(f, name).random.kept <= 1


def test_circuit_drawn_in_every_format(run):
    """The export stage's own formats, read back by their own readers: PNG and SVG, DOT (every edge's ends declared), the
    self-contained HTML page (its inline SVG well-formed XML), graph.json against circuit-tracer's schema, the full JSON as
    a CircuitGraph with a node per unit of the circuit record."""
    import re
    import xml.etree.ElementTree as ET

    from sae_ooc.circuits.graph import CircuitGraph
    from sae_ooc.io import read_json
    from sae_ooc.viz.graph_json import validate_graph

    out = run.variables_dir
    circuit = VariablesResult.load(out).circuit
    assert (out / "causal_circuit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ET.parse(out / "causal_circuit.svg")
    dot = (out / "causal_circuit.dot").read_text()
    assert dot.startswith("digraph circuit {") and dot.rstrip().endswith("}") and dot.count("{") == dot.count("}")
    declared = set(re.findall(r'^\s*("(?:[^"\\]|\\.)*") \[label=', dot, re.M))
    edges = re.findall(r'^\s*("(?:[^"\\]|\\.)*") -> ("(?:[^"\\]|\\.)*")', dot, re.M)
    assert edges and all(a in declared and b in declared for a, b in edges)
    page = (out / "causal_circuit.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)  # nothing loaded from elsewhere
    ET.fromstring(page[page.index("<svg"): page.index("</svg>") + 6])
    assert validate_graph(read_json(out / "causal_graph.json")) == []
    g = CircuitGraph.load(out / "causal_circuit_full.json")
    units = circuit.every_node()
    assert {n.id for n in g.nodes} == set(units)
    assert all(n.effect == units[n.id].unit.switch for n in g.nodes)


def test_a_das_subspace_depends_on_its_seed_not_on_the_global_rng():
    """torch's orthogonal parametrization draws from the global RNG when it completes a non-square basis; two trainings
    with the same seed in one process must still agree (the variables stage and dynamics train many in one process)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_ooc.causal.das import train_das

    torch.manual_seed(0)
    m = HookedTransformer(HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=4, d_vocab=20,
                                                  act_fn="gelu")).eval()
    toks = torch.randint(20, (40, 4))
    _, cache = m.run_with_cache(toks)
    args = (cache["blocks.1.hook_resid_pre"], 1, torch.full((40,), 3), torch.randn(40, 16), torch.randint(20, (40,)), 3, 7, 16, 0.01, 5)
    bases = []
    for state in (1, 2):
        torch.manual_seed(state)  # a different global RNG state before each training
        bases.append(train_das(m, "blocks.1.hook_resid_pre", *args).basis)
    assert torch.equal(bases[0], bases[1])


def test_sae_opt_picks_the_features_that_match_the_difference_and_stops():
    """Makelov et al.'s greedy edit on a dictionary with orthonormal decoder rows: the target is the exchange of features 3
    and 1 (contributions 3 and 2), so it picks 3, then 1, then stops (exchanging feature 0 moves away from the target)."""
    from types import SimpleNamespace

    from sae_ooc.causal.units import first_n_mask, greedy_feature_order

    sae = SimpleNamespace(W_dec=torch.eye(6))
    f = torch.tensor([[1.0, 0, 0, 0, 0, 0]])
    fd = torch.tensor([[0.0, 2, 0, 3, 0, 0]])
    target = torch.tensor([[0.0, 2, 0, 3, 0, 0]])
    order = greedy_feature_order(sae, f, fd, target, 4)
    assert order.tolist() == [[3, 1, -1, -1]]
    assert first_n_mask(order, 1, 6).nonzero().tolist() == [[0, 3]]
    assert first_n_mask(order, 4, 6).nonzero()[:, 1].tolist() == [1, 3]
    # with the base's own feature in the target too, all three are taken, largest first
    order = greedy_feature_order(sae, f, fd, fd - f, 4)
    assert order.tolist() == [[3, 1, 0, -1]]


def test_report_records_every_variable_and_node_held_out(run):
    """The report's sections put each other variable's switch rates and each circuit node's IIA into summary.json under
    their documented names, equal to variables.json's, measured on held-out pairs and not in-sample."""
    from sae_ooc.report.causal_circuit import causal_circuit_section
    from sae_ooc.report.doc import Doc
    from sae_ooc.report.variables_control import variables_control_section

    res = VariablesResult.load(run.variables_dir)
    r2, r2_mid = [r for r in res.rows if r.pairs]
    doc = Doc(run)
    variables_control_section(doc)
    causal_circuit_section(doc)
    got = {n["name"]: n for n in doc.numbers}
    for unit in ("resid_patch", "das_rank4", "sae_code_swap", "random"):
        n = got[f"control.r2.r2.{HOOK}.{unit}.switch"]
        assert n["value"] == pytest.approx(r2.units[unit].switch) and not n["in_sample"] and "held-out" in n["measured_on"]
    assert got[f"control.r2.r2.{MID}.resid_patch.switch"]["value"] == pytest.approx(r2_mid.units["resid_patch"].switch)
    for key in ("r2", "r2_answer", "bridge_r1", "bridge_answer"):
        assert not got[f"circuit.causal.node_iia.{key}"]["in_sample"]
    assert got["circuit.causal.node_iia.r2"]["value"] == pytest.approx(res.circuit.inputs["r2"].unit.switch)
    assert any(line.startswith("**r2** (at r2;") for line in doc.lines)


def test_default_variable_hooks_add_every_middle_in_forward_order_and_seeds_do_not_move():
    from sae_ooc.causal.variables import default_variable_hooks
    from sae_ooc.hooks import hook_seed

    assert default_variable_hooks(["blocks.2.hook_resid_pre", "blocks.1.hook_resid_pre"], 3) == [
        "blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.2.hook_resid_pre",
        "blocks.2.hook_resid_mid", "blocks.2.hook_resid_post"]
    names = [f"blocks.{i}.hook_resid_{k}" for i in range(4) for k in ("pre", "mid", "post")]
    assert [hook_seed(h) for h in names] == list(range(12))  # one seed per hook, whatever list it is in
    cfg = load_config("configs/tiny.yaml", [f"causal.variable_hooks=[{MID}]"])
    assert cfg.causal.variable_hooks == [MID]
    with pytest.raises(ConfigError, match="causal.hooks"):  # the bridge's hooks need an SAE, and none is trained at mid
        load_config("configs/tiny.yaml", [f"causal.hooks=[{MID}]"])
