"""Circuits: faithfulness end points, ablation against hand-made hooks, gradient edges against exact edge
patching on a linear model, edge ablation, and the `circuit` stage's files."""

import json
import shutil

import pytest
import torch
from circuit_fixtures import HOOKS, ROOT, linear_model, linear_sae, make_run, topk_sae
from conftest import rendered_figures
from safetensors.torch import load_file

from sae_ooc.circuits.ablation import ABLATIONS, ablated_metric, ablation_values
from sae_ooc.circuits.circuit import FAITHFULNESS_FILE
from sae_ooc.circuits.edges import (
    ablate_edge_sets,
    ablate_edges,
    edge_ablation_test,
    edge_weights,
    exact_edges,
)
from sae_ooc.circuits.effects import EFFECTS_FILE, NodeEffects, load_node_effects
from sae_ooc.circuits.faithfulness import Faith, circuit_scores
from sae_ooc.circuits.graph import (
    CIRCUIT_FILE,
    PROMPT_CIRCUIT_FILE,
    CircuitGraph,
    load_circuit,
    load_prompt_circuit,
)
from sae_ooc.circuits.methods import node_effects
from sae_ooc.circuits.nodes import SINK, Node
from sae_ooc.circuits.pairs import make_pairs
from sae_ooc.circuits.selection import keep_masks, prompt_keep_masks, select_nodes
from sae_ooc.circuits.spliced import Spliced, load_spliced
from sae_ooc.cli import main as cli_main
from sae_ooc.config import ABLATIONS as ABLATION_NAMES
from sae_ooc.config import load_config
from sae_ooc.errors import UserError
from sae_ooc.models.hooked import build_model
from sae_ooc.pipeline import run_stage
from sae_ooc.tasks.data import load_task

TINY = load_config(ROOT / "configs" / "tiny.yaml")
CIRCUIT_SETTINGS = ["circuit.top_n=6", "circuit.curve_sizes=[0,3,6,1000]", "circuit.edge_counts=[2,4]", "circuit.random_edge_sets=3",
                    "circuit.edge_check=6", "circuit.mean_examples=64", "circuit.edge_pool_nodes=20"]


def _with_effects(ds, vocab, sp, n_pairs: int, seed: int, method: str):
    """(sp, pairs, node effects by `method` on them) for unit tests; the pair metrics are left at zero."""
    pairs = make_pairs(ds, vocab, "all", n_pairs, seed=seed)
    ne = NodeEffects(sp.hooks, sp.d_sae, method, "logit_diff", node_effects(sp, pairs, method, "logit_diff", progress=False), pairs,
                     torch.zeros(len(pairs)), torch.zeros(len(pairs)))
    return sp, pairs, ne


@pytest.fixture(scope="module")
def setup(tiny_task):
    ds, vocab = tiny_task
    model = build_model(TINY.model, vocab, seed=0)
    return _with_effects(ds, vocab, Spliced(model, {h: topk_sae(h, TINY.model.d_model, seed=i) for i, h in enumerate(HOOKS)}), 8, 0, "atp")


@pytest.fixture(scope="module")
def linear(tiny_task):
    ds, vocab = tiny_task
    return _with_effects(ds, vocab, Spliced(linear_model(vocab), {h: linear_sae(h, 16, seed=i) for i, h in enumerate(HOOKS)}), 6, 1, "exact")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("circ"), train_steps=20, overrides=CIRCUIT_SETTINGS)
    run_stage(run, "attribute", validate=False)
    with rendered_figures():  # test_circuit_stage_files reads them
        result = run_stage(run, "circuit")
    assert result.ran is True and result.info["n_feature_nodes"] == 6
    return run


def test_faithfulness_is_one_for_the_model_and_zero_for_the_empty_circuit(tiny_task, setup):
    ds, _ = tiny_task
    sp, pairs, ne = setup
    for kind in ("mean", "zero", "resample", "corrupt"):
        abl = ablation_values(sp, ds, kind, 64, seed=0, pairs=pairs)
        m_full = ablated_metric(sp, pairs, None, abl, "logit_diff")
        m_empty = ablated_metric(sp, pairs, keep_masks(sp, []), abl, "logit_diff")
        faith = Faith(m_full, m_empty)
        everything = [Node(h, p, i) for h in HOOKS for p in range(3) for i in [None, *range(sp.d_sae[h])]]
        s = circuit_scores(sp, pairs, everything, abl, "logit_diff", faith)
        assert s["faithfulness"] == pytest.approx(1.0, abs=1e-4)
        assert s["completeness"] == pytest.approx(0.0, abs=1e-6)
        assert circuit_scores(sp, pairs, [], abl, "logit_diff", faith)["faithfulness"] == pytest.approx(0.0, abs=1e-6)
        if kind == "corrupt":  # every node at its corrupted value is the corrupted run
            torch.testing.assert_close(m_empty, pairs.metric(sp.model(pairs.corrupt), "logit_diff").detach(), atol=1e-4, rtol=1e-4)


def test_mean_ablation_sets_nodes_to_their_task_mean(tiny_task, setup):
    ds, _ = tiny_task
    sp, pairs, _ = setup
    abl = ablation_values(sp, ds, "mean", 10**6, seed=0, pairs=pairs)
    two_hop = torch.tensor([ids for ids, hop in zip(ds["train"]["input_ids"], ds["train"]["hop"]) if hop == 2])
    _, vals = sp.cache(two_hop)
    torch.testing.assert_close(abl.acts[HOOKS[1]], vals.acts[HOOKS[1]].mean(0), atol=1e-5, rtol=1e-4)
    # keeping everything but one error node equals overwriting that error term by hand
    h, keep = HOOKS[1], [Node(h2, p, None) for h2 in HOOKS for p in range(3)]
    keep += [Node(h2, p, i) for h2 in HOOKS for p in range(3) for i in range(sp.d_sae[h2])]
    keep.remove(Node(h, 1, None))
    got = ablated_metric(sp, pairs, keep_masks(sp, keep), abl, "logit_diff")

    def overwrite(e, hook):
        e = e.clone()
        e[:, 1] = abl.errs[h][1]
        return e

    with torch.no_grad():
        want = pairs.metric(sp.model.run_with_hooks(pairs.clean, fwd_hooks=[(f"{h}.hook_sae_error", overwrite)]), "logit_diff")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_selection_by_top_n_threshold_and_error_rule(setup):
    _, _, ne = setup
    ranked = [(h, p, i, v) for h, p, i, v in ne.ranked() if i is not None]
    nodes = select_nodes(ne, 5, errors="none")
    assert [(n.hook, n.pos, n.idx) for n in nodes] == [r[:3] for r in ranked[:5]]
    cut = abs(ranked[4][3])
    errs = [n for n in select_nodes(ne, 5, errors="threshold") if n.is_error]
    assert all(abs(float(ne.mean[n.hook][n.pos, -1])) >= cut for n in errs)
    thr = select_nodes(ne, 0, node_threshold=cut, errors="none")
    assert len(thr) == 5
    assert len([n for n in select_nodes(ne, 0, errors="all") if n.is_error]) == len(HOOKS) * 3


def test_per_prompt_circuits_keep_each_pairs_own_top_nodes(tiny_task, setup):
    ds, _ = tiny_task
    sp, pairs, ne = setup
    ka, ke = prompt_keep_masks(sp, ne, 4, "none")
    for b in range(len(pairs)):
        eff = torch.cat([ne.per_prompt[h][b, :, :-1].flatten() for h in HOOKS]).abs()
        kept = torch.cat([ka[h][b].flatten() for h in HOOKS])
        assert kept.sum() == 4 and eff[kept].min() >= eff[~kept].max()
        assert not any(ke[h][b].any() for h in HOOKS)
    # a per-pair mask that equals the shared one gives the same metric
    abl = ablation_values(sp, ds, "mean", 64, 0, pairs)
    shared = keep_masks(sp, select_nodes(ne, 3, errors="none"))
    per = ({h: m.expand(len(pairs), *m.shape).clone() for h, m in shared[0].items()}, {h: m.expand(len(pairs), *m.shape).clone() for h, m in shared[1].items()})
    torch.testing.assert_close(ablated_metric(sp, pairs, per, abl, "logit_diff", batch=3), ablated_metric(sp, pairs, shared, abl, "logit_diff"))


def test_gradient_edges_agree_with_exact_edge_patching_on_a_linear_model(linear):
    sp, pairs, ne = linear
    nodes = select_nodes(ne, 12, errors="all")
    edges = edge_weights(sp, pairs, nodes, "logit_diff")
    assert any(d == SINK for _, d in edges) and any(d != SINK for _, d in edges)
    keys = sorted(edges, key=lambda e: -abs(edges[e]))[:30]
    exact = exact_edges(sp, pairs, keys, "logit_diff")
    scale = max(abs(edges[k]) for k in keys)
    for k, x in zip(keys, exact):
        assert edges[k] == pytest.approx(x, abs=1e-3 * scale), k
    # edges only run forward: from an earlier SAE layer, never to an earlier position
    order = {h: i for i, h in enumerate(HOOKS)}
    for u, d in edges:
        if d != SINK:
            hu, pu, hd, pd = u.split(":")[0], int(u.split(":")[1]), d.split(":")[0], int(d.split(":")[1])
            assert order[hu] < order[hd] and pu <= pd


def test_edges_into_a_node_add_up_to_its_linearised_effect(linear):
    sp, pairs, ne = linear
    nodes = select_nodes(ne, 10**6, errors="all")  # every node: nothing upstream is left out
    edges = edge_weights(sp, pairs, [n for n in nodes if n.hook != HOOKS[2]] + [n for n in nodes if n.hook == HOOKS[2]][:3], "logit_diff")
    d = next(n for n in nodes if n.hook == HOOKS[2] and any(t == n.id for _, t in edges))
    incoming = sum(w for (u, t), w in edges.items() if t == d.id and u.startswith(HOOKS[1]))
    assert incoming == pytest.approx(float(ne.mean[d.hook][d.pos, d.idx if d.idx is not None else -1]), rel=1e-3, abs=1e-6)


def test_ablating_no_edges_is_the_model_and_ablating_sink_edges_is_ablating_the_nodes(tiny_task, linear):
    ds, _ = tiny_task
    sp, pairs, ne = linear
    abl = ablation_values(sp, ds, "mean", 64, 0, pairs)
    clean = pairs.metric(sp.model(pairs.clean), "logit_diff").detach()
    torch.testing.assert_close(ablate_edges(sp, pairs, [], abl, "logit_diff"), clean, atol=1e-5, rtol=1e-4)
    # the last SAE layer only reaches the metric directly, so ablating its edges to the metric = ablating its nodes
    last = [Node(HOOKS[2], p, i) for p in range(3) for i in range(3)]
    got = ablate_edges(sp, pairs, [(n.id, SINK) for n in last], abl, "logit_diff")
    everything = [Node(h, p, i) for h in HOOKS for p in range(3) for i in [None, *range(sp.d_sae[h])]]
    want = ablated_metric(sp, pairs, keep_masks(sp, [n for n in everything if n not in last]), abl, "logit_diff")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # many edge sets in one pass (split over chunks and pair batches) are each ablated as if alone
    edges = sorted(edge_weights(sp, pairs, select_nodes(ne, 8, errors="all"), "logit_diff"))
    sets = [edges[i::5][: 1 + i] for i in range(5)] + [[]]
    together = ablate_edge_sets(sp, pairs, sets, abl, "logit_diff", batch=4, max_rows=40)
    for s_, row in zip(sets, together):
        torch.testing.assert_close(row, ablate_edges(sp, pairs, s_, abl, "logit_diff"), atol=1e-5, rtol=1e-4)
    assert len({tuple(r.tolist()) for r in together}) > 2  # the sets differ in what they do


def test_circuit_stage_files(run):
    c = json.loads((run.circuit_dir / CIRCUIT_FILE).read_text())
    f = json.loads((run.circuit_dir / FAITHFULNESS_FILE).read_text())
    ne_all = load_node_effects(run.attribution_dir / EFFECTS_FILE)
    sel, held = f["pairs"]["selection"], f["pairs"]["heldout"]
    assert (len(sel), len(held)) == (f["n_selection_pairs"], f["n_heldout_pairs"]) and len(sel) + len(held) == 12 and not set(sel) & set(held)
    assert abs(len(held) - 6) <= 2  # whole head entities per side: about the configured half
    ne = ne_all.subset(torch.tensor(sel))  # everything below is chosen on the selection pairs
    feats = [n for n in c["nodes"] if n["type"] == "feature"]
    assert len(feats) == 6 == f["n_feature_nodes"]
    top6 = [(h, p, i) for h, p, i, _ in ne.ranked() if i is not None][:6]
    assert [(n["hook"], n["position"], n["feature"]) for n in feats] == top6
    for n in c["nodes"]:
        col = ne.d_sae[n["hook"]] if n["type"] == "error" else n["feature"]
        assert n["effect"] == pytest.approx(float(ne.mean[n["hook"]][n["position"], col]))
        assert "description" in n and "top_activations" in n and "promoted" in n
    ids = {n["id"] for n in c["nodes"]} | {SINK}
    assert c["edges"] and all(e["source"] in ids and e["target"] in ids for e in c["edges"])
    h = f["heldout"]
    assert c["scores"]["faithfulness"] == h["faithfulness"] and c["metadata"]["n_pairs"] == len(sel) and c["scores"]["n_pairs"] == len(held)
    sizes = [r["n_features"] for r in h["curve"]]
    assert sizes == sorted(set(sizes)) and sizes[0] == 0 and 6 in sizes
    assert h["curve"][0]["faithfulness"] == pytest.approx(0.0, abs=1e-6)
    assert h["curve"][-1]["n_features"] == len([r for r in ne.ranked() if r[2] is not None])
    assert [r["n_features"] for r in f["selection"]["curve"]] == sizes and f["selection"]["in_sample"] is True
    chk = f["edges"]["exact_check"]
    assert f["edges"]["weights"] == "exact" and chk["n_edges"] == len(c["edges"]) and len(chk["edges"]) == min(6, len(c["edges"]))
    # every edge weight is exact edge patching on the selection pairs, recomputed here edge by edge; the gradient weight is kept beside it
    sp = load_spliced(run)
    for e in c["edges"][:3]:
        assert e["weight"] == pytest.approx(exact_edges(sp, ne.pairs, [(e["source"], e["target"])], "logit_diff")[0], abs=1e-5)
        assert isinstance(e["gradient"], float)
    assert set(f["edges"]["ablation_by_kind"]) == {"mean", "zero"} and f["edges"]["n_candidate_edges"] > len(c["edges"])
    for row in f["edges"]["ablation_by_kind"]["mean"] + f["edges"]["ablation_by_kind"]["zero"]:
        assert len(row["random_edges_drops"]) == 3 and 0 <= row["percentile"] <= 100
        assert row["pool_size"] == f["edges"]["n_candidate_edges"] - row["k"]
    assert set(h["target"]) >= {"faithfulness", "max_feature_nodes", "min_feature_nodes_reaching", "met"}
    assert set(f["by_ablation"]) == {"mean", "zero", "resample", "corrupt"}
    mean = f["by_ablation"]["mean"]
    assert mean["m_full"] == pytest.approx(h["m_full"]) and mean["m_empty"] == pytest.approx(h["m_empty"])
    i6 = mean["sizes"].index(6)
    assert mean["faithfulness"][i6] == pytest.approx(h["faithfulness"], abs=1e-6)
    assert len(mean["faithfulness_per_prompt_circuits_in_sample"]) == len(mean["sizes"])
    # zero ablation of TopK features leaves inactive ones where they are: the check passes, and says it could not fail
    zero = f["by_ablation"]["zero"]["inactive_check"]
    assert zero["passes"] is True and zero["can_fail"] is False and zero["max_abs_change"] == 0.0
    assert f["by_ablation"]["mean"]["inactive_check"]["can_fail"] is True
    pr = f["pruned_per_prompt"]
    assert pr["ablation"] == "zero" and pr["n_pairs"] == len(sel) and pr["source_pairs"] == sel and pr["in_sample"] is True
    assert pr["rounds"][0]["faithfulness"] == pytest.approx(1.0, abs=1e-5) and pr["rounds"][-1]["max_nodes"] == 0
    tr = pr["transfer"]  # each pruned circuit on the 11 other pairs, split by whether they share its (r1, r2)
    assert tr["same_relations"]["n_rows"] + tr["other_relations"]["n_rows"] == len(sel) * 11
    for ext in ("png", "svg"):
        assert (run.circuit_dir / f"faithfulness_curve.{ext}").stat().st_size > 0
    assert run_stage(run, "circuit").ran is False


def test_example_prompt_circuit_is_the_pruned_circuit_of_the_first_selection_pair(run):
    ex = json.loads((run.circuit_dir / "prompt_circuit.json").read_text())
    snap = load_file(str(run.circuit_dir / "prompt_circuits.safetensors"))
    ne = load_node_effects(run.attribution_dir / EFFECTS_FILE)
    first = json.loads((run.circuit_dir / FAITHFULNESS_FILE).read_text())["pairs"]["selection"][0]
    assert int(snap["pairs"][0]) == first
    sp = load_spliced(run)
    ds = load_task(run.data_dir)[0]
    feats = [n for n in ex["nodes"] if n["type"] == "feature"]
    assert 0 < len(feats) <= 50 and int(snap["keep"][0].sum()) == len(ex["nodes"])
    # its faithfulness, recomputed from its nodes under zero ablation, on that pair alone (in-sample: it was pruned there)
    one = ne.pairs.subset([first])
    nodes = [Node(n["hook"], n["position"], n["feature"]) for n in ex["nodes"]]
    abl = ablation_values(sp, ds, "zero", 64, 0, one)
    ka, ke = keep_masks(sp, nodes)
    m_c = ablated_metric(sp, one, ({h: m[None] for h, m in ka.items()}, {h: m[None] for h, m in ke.items()}), abl, "logit_diff")
    m_full = ablated_metric(sp, one, None, abl, "logit_diff")
    m_empty = ablated_metric(sp, one, keep_masks(sp, []), abl, "logit_diff")
    assert ex["scores"]["faithfulness"] == pytest.approx(float((m_c - m_empty) / (m_full - m_empty)), abs=1e-4)
    assert ex["scores"]["in_sample"] is True
    for e in ex["edges"][:3]:
        assert e["weight"] == pytest.approx(exact_edges(sp, one, [(e["source"], e["target"])], "logit_diff")[0], abs=1e-5)
    assert ex["metadata"]["prompt"] == " ".join(ex["metadata"]["prompt"].split()) and ex["metadata"]["answer"].startswith("e")


def test_gradient_edge_weights_are_checked_on_a_sample(tmp_path):
    run = make_run(tmp_path, train_steps=20, overrides=CIRCUIT_SETTINGS + ["circuit.edge_weights=gradient", "circuit.prune_ablation=none"])
    run_stage(run, "attribute", validate=False)
    run_stage(run, "circuit")
    c = json.loads((run.circuit_dir / CIRCUIT_FILE).read_text())
    f = json.loads((run.circuit_dir / FAITHFULNESS_FILE).read_text())
    chk = f["edges"]["exact_check"]
    assert f["edges"]["weights"] == "gradient" and chk["n_edges"] == min(6, len(c["edges"])) and f["pruned_per_prompt"] is None
    assert all(e["weight"] == e["gradient"] for e in c["edges"])


def test_circuit_cli(run, capsys):
    assert cli_main(["circuit", "--run", str(run.root)]) == 0
    out = capsys.readouterr().out
    assert "faithfulness" in out and "mean ablation of the top 2 edges" in out and "zero ablation of the top 2 edges" in out


def test_circuit_needs_attribution(tmp_path, capsys):
    run = make_run(tmp_path)
    assert cli_main(["circuit", "--run", str(run.root)]) == 2
    assert "sae-ooc attribute" in capsys.readouterr().err


def test_saved_graphs_load_and_save_back_unchanged(run, tmp_path):
    for path, graph in ((run.circuit_dir / CIRCUIT_FILE, load_circuit(run)), (run.circuit_dir / PROMPT_CIRCUIT_FILE, load_prompt_circuit(run))):
        raw = json.loads(path.read_text())
        assert isinstance(graph, CircuitGraph) and graph.to_json() == raw
        assert list(graph.to_json()["nodes"][0]) == list(raw["nodes"][0])  # the same keys in the same order
        assert graph.save(tmp_path / path.name).read_bytes() == path.read_bytes()
        assert [n.id for n in graph.nodes] == [n["id"] for n in raw["nodes"]]
        assert all(n.node.id == n.id for n in graph.nodes)
    assert "activation" in raw["nodes"][0] and "rank" not in raw["nodes"][0]  # the prompt circuit
    assert "rank" in json.loads((run.circuit_dir / CIRCUIT_FILE).read_text())["nodes"][0]


def test_ablation_registry_is_the_configs_list_and_unknown_kinds_are_one_line_errors(tiny_task, setup):
    ABLATIONS.check()
    assert ABLATIONS.names() == ABLATION_NAMES
    sp, pairs, _ = setup
    with pytest.raises(UserError) as e:
        ablation_values(sp, tiny_task[0], "median", 64, 0, pairs)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "median" in msg and all(k in msg for k in ABLATION_NAMES)


@pytest.mark.parametrize("setting", ["circuit.top_n=0", "circuit.node_threshold=1e9"])
def test_a_circuit_of_no_nodes_is_a_one_line_error(run, tmp_path, capsys, setting):
    shutil.copytree(run.root, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "circuit").iterdir()}
    assert cli_main(["circuit", "--run", str(tmp_path / "run"), "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no nodes" in err and "circuit.top_n" in err, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "run" / "circuit").iterdir()} == before


def test_the_edge_ablation_bar_says_which_ablation_and_counts_the_sizes_it_tests(tiny_task, linear, monkeypatch):
    import sae_ooc.circuits.edges as edges_mod

    ds, _ = tiny_task
    sp, pairs, ne = linear
    edges = edge_weights(sp, pairs, select_nodes(ne, 8, errors="all"), "logit_diff")
    bars = []

    def bar(items, **kw):
        bars.append((kw.get("desc"), len(items)))
        return items

    monkeypatch.setattr(edges_mod, "tqdm", bar)
    for kind in ("mean", "zero"):
        abl = ablation_values(sp, ds, kind, 32, 0, pairs)
        edge_ablation_test(sp, pairs, edges, sorted(edges), abl, "logit_diff", [1, 2, 10**6], 2, 0, label=f"{kind} ablation")
    # two bars, told apart by their ablation; sizes beyond the number of edges are not counted as steps
    assert bars == [("edge ablation (mean ablation)", 2), ("edge ablation (zero ablation)", 2)]
