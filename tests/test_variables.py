"""Variable nodes: grouping by label, group patching and ablation against the single-node paths, group edges against
exact edge patching, the random-group control, and the `variable-circuit` stage's numbers recomputed independently."""

import numpy as np
import pytest
import torch
from circuit_fixtures import HOOKS, make_run

from sae_ooc.circuits.ablation import ABLATIONS, ablated_metric, ablation_values
from sae_ooc.circuits.edges import exact_edges
from sae_ooc.circuits.effects import EFFECTS_FILE, load_node_effects
from sae_ooc.circuits.graph import CircuitGraph
from sae_ooc.circuits.methods import node_effects
from sae_ooc.circuits.nodes import SINK, Node
from sae_ooc.circuits.selection import active_node_masks, keep_masks
from sae_ooc.circuits.spliced import RowPatches, load_spliced
from sae_ooc.circuits.variable_edges import SINK_INDEX, candidate_edges, group_edges
from sae_ooc.circuits.variable_circuit import (
    FAITHFULNESS_FILE,
    GRAPH_FILE,
    VARIABLE_DIR,
    choose_size,
)
from sae_ooc.circuits.variable_faithfulness_result import VariableGroups
from sae_ooc.circuits.variables import (
    Group,
    circuit_keep,
    group_effects,
    group_features,
    group_masks,
    random_groups,
)
from sae_ooc.cli import main as cli_main
from sae_ooc.config import load_config
from sae_ooc.errors import UserError
from sae_ooc.io import read_json
from sae_ooc.pipeline import StageResult, run_stage
from sae_ooc.stages import STAGE_NAMES
from sae_ooc.tasks.data import load_task
from sae_ooc.threads import torch_threads
from sae_ooc.viz.graph_json import validate_graph

from conftest import rendered_figures

D_SAE = 48  # circuit_fixtures.topk_sae
LABELS = {
    HOOKS[1]: [{"feature": f, "variable": "bridge", "position": "r1", "value": f"e{f % 4}", "auroc": 0.95} for f in range(12)]
    + [{"feature": f, "variable": "head", "position": "head", "value": f"e{f}", "auroc": 0.99} for f in range(12, 18)],
    HOOKS[2]: [{"feature": f, "variable": "answer", "position": "r2", "value": f"e{f}", "auroc": 0.92} for f in range(10)]
    + [{"feature": 40, "variable": "r2", "position": "r2", "value": "r1", "auroc": 0.97}],
    "blocks.9.hook_resid_pre": [{"feature": 0, "variable": "head", "position": "head", "value": "e0", "auroc": 1.0}],  # no SAE there
}
SETTINGS = ["variables.random_draws=20", "variables.bootstrap=50", "variables.max_groups=8", "circuit.mean_examples=64"]


def _labels(raw):
    return {h: {lab["feature"]: [lab] for lab in labs} for h, labs in raw.items()}


def _per_pair(masks: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """Per-pair keep masks [n, ...] stacked from one keep_masks result per pair."""
    return tuple({h: torch.stack([m[part][h] for m in masks]) for h in masks[0][part]} for part in (0, 1))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):  # tiny forward passes: two threads on a busy machine are several times slower
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("variables"), train_steps=20, labels=LABELS, overrides=SETTINGS)
    run_stage(run, "attribute", validate=False)
    with rendered_figures():  # test_stage_files_load_back reads its figure files
        result = run_stage(run, "variable-circuit")
    assert result.ran and result.finished
    return run


@pytest.fixture(scope="module")
def parts(run):
    sp = load_spliced(run)
    ds, _ = load_task(run.data_dir)
    ne = load_node_effects(run.attribution_dir / EFFECTS_FILE)
    groups = group_features(_labels(LABELS), sp.hooks, sp.d_sae)
    return sp, ds, ne.pairs, groups


def test_grouping_by_label_is_exact():
    d_sae = {h: D_SAE for h in HOOKS}
    groups = group_features(_labels(LABELS), HOOKS, d_sae)
    by_id = {g.id: g for g in groups}
    assert by_id[f"bridge@r1@{HOOKS[1]}"].members == tuple(range(12))
    assert by_id[f"head@head@{HOOKS[1]}"].members == tuple(range(12, 18))
    assert by_id[f"answer@r2@{HOOKS[2]}"].members == tuple(range(10))
    assert by_id[f"r2@r2@{HOOKS[2]}"].members == (40,)
    assert len({g.id for g in groups}) == len(groups)
    for g in groups:  # the id names the variable, the position and the hook
        assert g.id == f"{g.name}@{('head', 'r1', 'r2')[g.pos]}@{g.hook}"
    for h in HOOKS:  # every feature of every (hook, position) in exactly one group; one error node per cell
        for p in range(3):
            cell = [g for g in groups if g.hook == h and g.pos == p]
            members = sorted(f for g in cell if g.kind != "error" for f in g.members)
            assert members == list(range(D_SAE))
            assert [g.kind for g in cell].count("error") == 1
    for h, labs in LABELS.items():  # a labelled feature is in its variable's group at its labelled position only
        for lab in labs if h in HOOKS else ():
            [g] = [g for g in groups if g.hook == h and lab["feature"] in g.members and g.kind == "variable"]
            assert (g.name, g.role) == (lab["variable"], lab["position"])
    assert not any(g.hook not in HOOKS for g in groups)
    assert [g.kind for g in groups if g.hook == HOOKS[1] and g.pos == 1] == ["variable", "remainder", "error"]
    with pytest.raises(UserError, match="outside its SAE"):
        group_features(_labels({HOOKS[0]: [{"feature": D_SAE, "variable": "head", "position": "head", "value": "e1"}]}), HOOKS, d_sae)


def test_patching_a_group_sets_all_its_members_and_singletons_match_exact_node_effects(parts):
    sp, _, pairs, groups = parts
    grp = next(g for g in groups if g.id == f"bridge@r1@{HOOKS[1]}")
    got = group_effects(sp, pairs, [grp], "logit_diff", max_rows=5)[:, 0]
    _, corr = sp.cache(pairs.corrupt)
    patches = RowPatches()  # the same patch written node by node
    for f in grp.members:
        patches.add_node(Node(grp.hook, grp.pos, f), torch.arange(len(pairs)), corr.get(Node(grp.hook, grp.pos, f)).cpu())
    with torch.no_grad():
        want = pairs.metric(sp.run_patched(pairs.clean, patches), "logit_diff") - pairs.metric(sp.model(pairs.clean), "logit_diff")
    torch.testing.assert_close(got, want.cpu(), atol=1e-5, rtol=1e-4)
    assert got.abs().max() > 1e-4  # the check above compared something
    singles = [Group("variable", "x", h, p, (i,)) for h in HOOKS for p in range(3) for i in (0, 5, 17)] + [Group("error", "err", HOOKS[2], 2)]
    exact = node_effects(sp, pairs, "exact", "logit_diff", progress=False)
    eff = group_effects(sp, pairs, singles, "logit_diff")
    for j, g in enumerate(singles):
        col = sp.d_sae[g.hook] if g.kind == "error" else g.members[0]
        torch.testing.assert_close(eff[:, j], exact[g.hook][:, g.pos, col], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["mean", "resample"])
def test_ablating_a_group_ablates_exactly_its_active_members(parts, kind):
    sp, ds, pairs, groups = parts
    abl = ablation_values(sp, ds, kind, 64, 0, pairs)
    active = active_node_masks(sp, pairs)
    g = next(i for i, x in enumerate(groups) if x.id == f"bridge@r1@{HOOKS[1]}")
    got = ablated_metric(sp, pairs, circuit_keep(group_masks(sp, groups), [i for i in range(len(groups)) if i != g]), abl, "logit_diff")
    every = [Node(h, p, i) for h in HOOKS for p in range(3) for i in [None, *range(D_SAE)]]
    grp = groups[g]
    on = active[0][grp.hook][:, grp.pos, list(grp.members)]
    assert on.any() and not on.all()  # some members fire, some do not: the rule is put to the test
    if kind == "resample":  # values of another prompt: members active on that prompt are ablated too (switched on)
        other = abl.acts[grp.hook][:, grp.pos, list(grp.members)] != 0
        assert (other & ~on).any()  # some member silent on the clean prompt is switched on
        on = on | other
    keep = []
    for b in range(len(pairs)):  # each pair its own keep mask: every node but the group's members in scope on it
        gone = {Node(grp.hook, grp.pos, f) for f, a in zip(grp.members, on[b].tolist()) if a}
        keep.append(keep_masks(sp, [n for n in every if n not in gone]))
    torch.testing.assert_close(got, ablated_metric(sp, pairs, _per_pair(keep), abl, "logit_diff"), atol=1e-5, rtol=1e-4)
    if kind == "mean":  # and ablating every member (the silent ones to their mean too: no scope) is a different intervention
        whole = ablated_metric(sp, pairs, keep_masks(sp, [n for n in every if not (n.hook == grp.hook and n.pos == grp.pos and n.idx in grp.members)]),
                               abl.unscoped(), "logit_diff")
        assert (whole - got).abs().max() > 1e-4


def test_group_edges_of_single_nodes_equal_exact_edge_patching(parts):
    sp, _, pairs, _ = parts
    singles = [Group("variable", "x", h, p, (i,)) for h in HOOKS for p in range(3) for i in (1,)] + [Group("error", "err", HOOKS[1], 1)]
    edges = candidate_edges(sp.hooks, singles, 2, sp.base.cfg.n_layers)
    assert edges and any(d == SINK_INDEX for _, d in edges)
    for u, d in edges:  # direct paths only: consecutive residual hooks, causal positions; the metric from the last hook at r2
        gu = singles[u]
        if d == SINK_INDEX:
            assert gu.hook == HOOKS[-1] and gu.pos == 2
        else:
            assert HOOKS.index(singles[d].hook) == HOOKS.index(gu.hook) + 1 and gu.pos <= singles[d].pos
    got = group_edges(sp, pairs, singles, edges, "logit_diff", max_rows=7).mean(0)

    def nid(g):
        return Node(g.hook, g.pos, None if g.kind == "error" else g.members[0]).id

    want = exact_edges(sp, pairs, [(nid(singles[u]), SINK if d == SINK_INDEX else nid(singles[d])) for u, d in edges], "logit_diff")
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=1e-4)
    assert np.abs(want).max() > 1e-4


def test_random_groups_draw_no_circuit_feature_and_stay_at_their_places_while_they_can():
    d_sae = {h: D_SAE for h in HOOKS}
    groups = group_features(_labels(LABELS), HOOKS, d_sae)
    chosen = [i for i, g in enumerate(groups) if g.kind == "variable" or (g.kind == "error" and g.hook == HOOKS[0])]
    inside = {(groups[i].hook, groups[i].pos, f) for i in chosen for f in groups[i].members}
    per_cell = {}
    for i in chosen:
        if groups[i].kind != "error":
            per_cell[(groups[i].hook, groups[i].pos)] = per_cell.get((groups[i].hook, groups[i].pos), 0) + groups[i].size
    rng = np.random.default_rng(0)
    for _ in range(5):
        rand, at_place = random_groups(groups, chosen, d_sae, rng)
        drawn = [(g.hook, g.pos, f) for g in rand for f in g.members]
        assert len(set(drawn)) == len(drawn) and not set(drawn) & inside and at_place == 1.0  # enough features outside the circuit
        assert {(g.hook, g.pos): g.size for g in rand if g.kind != "error"} == per_cell
        assert [g for g in rand if g.kind == "error"] == [groups[i] for i in chosen if groups[i].kind == "error"]
    # the circuit holds a whole cell (a remainder group does): the control goes to the hook's other positions, never into
    # the circuit (the old control drew 100% circuit features here)
    full = [i for i, g in enumerate(groups) if g.hook == HOOKS[1] and g.pos == 1 and g.kind != "error"]
    inside = {(groups[i].hook, groups[i].pos, f) for i in full for f in groups[i].members}
    rand, at_place = random_groups(groups, full, d_sae, rng)
    drawn = [(g.hook, g.pos, f) for g in rand for f in g.members]
    assert len(drawn) == D_SAE and len(set(drawn)) == len(drawn) and not set(drawn) & inside and at_place == 0.0
    assert {g.hook for g in rand} == {HOOKS[1]} and {g.pos for g in rand} <= {0, 2}
    everything = [i for i, g in enumerate(groups) if g.kind != "error"]
    with pytest.raises(ValueError, match="too few features outside"):
        random_groups(groups, everything, d_sae, rng)


def test_choose_size_smallest_reaching_target_else_most_faithful():
    assert choose_size([0.0, 0.5, 0.85, 0.9], 0.8) == (2, True)
    assert choose_size([0.0, 0.5, 0.7, 0.7, float("nan")], 0.8) == (2, False)


def test_stage_numbers_equal_an_independent_recomputation(run, parts):
    sp, ds, pairs, _ = parts
    c = run.cfg.circuit
    out = run.root / VARIABLE_DIR
    f = read_json(out / FAITHFULNESS_FILE)
    graph = CircuitGraph.load(out / GRAPH_FILE)
    sel_pairs, held_pairs = pairs.split(c.heldout_fraction, c.seed)
    sel, held = pairs.split_indices(c.heldout_fraction, c.seed)
    # held-out pairs share no head entity (so no head or r1 activation) with the selection pairs
    assert not set(pairs.clean[held, 0].tolist()) & set(pairs.clean[sel, 0].tolist())
    assert torch.equal(pairs.subset(held).clean, held_pairs.clean) and torch.equal(pairs.subset(sel).clean, sel_pairs.clean)
    assert f["n_heldout"] == len(held_pairs) and f["n_selection"] == len(sel_pairs)
    # the circuit's nodes, read back from the saved graph: members at their cell, or the error node
    circuit = [Node(n.hook, n.position, None) if n.type == "error" else Node(n.hook, n.position, i)
               for n in graph.nodes for i in (n.extra["members"] if n.type != "error" else [None])]
    assert [n.id for n in graph.nodes] == f["circuit"]["groups"]
    with torch.no_grad():
        m_full = pairs.metric(sp.base(pairs.clean), "logit_diff")
    for kind in ABLATIONS.names():
        abl = ablation_values(sp, ds, kind, c.mean_examples, c.seed, pairs)
        # the circuit's nodes kept, every other node ablated (each feature by the ablation's scope), as single nodes
        m_c = ablated_metric(sp, pairs, keep_masks(sp, circuit), abl, "logit_diff")
        m_0 = ablated_metric(sp, pairs, keep_masks(sp, []), abl, "logit_diff")
        for name, idx in (("heldout", held), ("selection", sel)):
            want = float((m_c[idx].mean() - m_0[idx].mean()) / (m_full[idx].mean() - m_0[idx].mean()))
            got = f["by_ablation"][kind][name]
            assert got["faithfulness"] == pytest.approx(want, abs=1e-4, rel=1e-4)
            assert got["m_empty"] == pytest.approx(float(m_0[idx].mean()), abs=1e-4)
            assert got["ci95"][0] <= got["ci95"][1] and got["n_pairs"] == len(idx)
        assert f["by_ablation"][kind]["selection"]["in_sample"] is True and f["by_ablation"][kind]["heldout"]["in_sample"] is False
        rnd = f["by_ablation"][kind]["random_groups"]
        n_feat = sum(n.extra["size"] for n in graph.nodes if n.type != "error")
        assert sum(rnd["group_sizes"]) == n_feat + sum(n.type == "error" for n in graph.nodes) and len(rnd["heldout"]["values"]) == 20
    main = f["by_ablation"][f["selection"]["ablation"]]
    assert graph.scores.faithfulness == main["heldout"]["faithfulness"]
    assert f["selection"]["n_groups"] == len(graph.nodes) <= 8
    # the size was chosen on the selection pairs' curve
    assert choose_size(main["curve"]["selection"], f["selection"]["target"])[0] == f["selection"]["n_groups"]


def test_stage_files_load_back(run):
    out = run.root / VARIABLE_DIR
    g = VariableGroups.load(out).groups
    assert sum(r.in_circuit for r in g) == len(CircuitGraph.load(out / GRAPH_FILE).nodes)
    assert all(isinstance(getattr(g[0], f"{m}_{s}"), float) for m in ("effect", "ablation_effect", "patching_effect") for s in ("heldout", "selection"))
    assert validate_graph(read_json(out / "variable_graph.json")) == []
    for name in ("variable_circuit.png", "variable_circuit.svg", "variable_circuit.html", "variable_circuit.dot", "variable_faithfulness.png"):
        assert (out / name).stat().st_size > 0


def test_registered_as_a_stage_with_a_command_that_names_every_file(run, capsys):
    from test_stage_outputs import check_line

    assert STAGE_NAMES.index("variable-circuit") == STAGE_NAMES.index("circuit") + 1
    assert cli_main(["variable-circuit", "--run", str(run.root)]) == 0
    out = capsys.readouterr().out
    assert "unchanged, skipped" in out and "faithful on" in out  # the fixture ran it with this config
    check_line(run, "variable-circuit", StageResult("variable-circuit", ran=True))


def test_one_line_errors(tmp_path, capsys):
    assert cli_main(["variable-circuit", "--run", str(tmp_path / "r"), "--set", "variables.random_draws=5"]) == 2
    assert "variables.random_draws" in capsys.readouterr().err
    with pytest.raises(Exception, match="variables.kinds"):
        load_config(None, ["variables.kinds=[nodes]"])
