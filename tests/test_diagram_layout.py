"""The circuit diagram's layout: for a circuit with many nodes and long labels no two labels overlap and none
leaves the figure (measured in display coordinates by matplotlib's renderer), nodes without a drawn edge are
drawn and counted, labels name the position they are measured at, and the barycenter ordering removes crossings."""

import json
import random
import re
import xml.etree.ElementTree as ET

import sae_ooc.viz.train_plots as tp
from sae_ooc.viz.diagram import draw_diagram, plan_diagram
from sae_ooc.viz.diagram_layout import budgets, layered_layout, n_tiers
from sae_ooc.viz.circuit_files import ExportOptions, export_circuit, select_drawn, without_edges
from sae_ooc.viz.node_labels import node_caption, node_title, wrap
from sae_ooc.viz.plots import lay_out

HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre", "blocks.3.hook_resid_pre",
         "blocks.3.hook_resid_post"]
ROLES = ["head", "r1", "r2"]
LONG = "fires on the bridge entity of every two-hop prompt whose first relation is r3 and promotes e17,e42,e99 strongly"


def big_circuit(n_features: int = 66, n_orphans: int = 4, seed: int = 0) -> dict:
    """Every hook x position, many nodes per cell (most in layer 0 at head, like the real circuits), long labels,
    an error node per hook, edges only forward; the last `n_orphans` feature nodes get no edge."""
    rng = random.Random(seed)
    nodes = []
    for k in range(n_features):
        h, p = (0, 0) if k < 24 else (k % len(HOOKS), k % 3)
        desc = LONG if k % 5 == 0 else f"on e{k}@{ROLES[p]} → e{k + 1},e{k + 2}"
        label = f"bridge=e{k}@{ROLES[(p + k) % 3]}" if k % 7 == 0 else None
        nodes.append({"id": f"{HOOKS[h]}:{p}:{k}", "hook": HOOKS[h], "hook_index": h, "position": p, "role": ROLES[p], "type": "feature",
                      "feature": k, "effect": rng.uniform(-1, 1), "effect_std": 0.1, "label": label, "description": label or desc})
    for h, hook in enumerate(HOOKS):
        nodes.append({"id": f"{hook}:{h % 3}:err", "hook": hook, "hook_index": h, "position": h % 3, "role": ROLES[h % 3], "type": "error",
                      "feature": None, "effect": rng.uniform(-1, 1), "effect_std": 0.1, "label": None,
                      "description": "SAE error: what the SAE does not reconstruct"})
    orphans = {n["id"] for n in nodes[n_features - n_orphans: n_features]}
    linked = [n for n in nodes if n["id"] not in orphans]
    edges = []
    for n in linked:
        later = [m for m in linked if m["hook_index"] > n["hook_index"]]
        for m in rng.sample(later, min(2, len(later))):
            edges.append({"source": n["id"], "target": m["id"], "weight": rng.uniform(-1, 1)})
        if n["hook_index"] >= 3 or not later:
            edges.append({"source": n["id"], "target": "metric", "weight": rng.uniform(-1, 1)})
    meta = {"config": "big", "method": "atp", "metric": "logit_diff", "n_pairs": 16, "hooks": HOOKS, "positions": ROLES,
            "sink": {"id": "metric", "description": "logit(t2) - logit(t2')"}, "example_prompt": "e1 r0 r1"}
    return {"metadata": meta, "scores": {"faithfulness": 0.5, "completeness": 0.2}, "nodes": nodes, "edges": edges}, orphans


def overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_many_nodes_no_label_overlaps_and_all_inside_the_figure():
    circuit, orphans = big_circuit()
    nodes, edges = select_drawn(circuit, ExportOptions(edge_threshold=0.0, max_edges=1000))
    unlinked = without_edges(nodes, edges)
    assert len(nodes) == len(circuit["nodes"]) >= 60 and set(unlinked) == orphans and len(orphans) == 4
    d = draw_diagram(circuit, nodes, edges, len(unlinked))
    assert set(d.node_patch) == {n["id"] for n in circuit["nodes"]}  # the orphans too
    d.fig.canvas.draw()
    r = d.fig.canvas.get_renderer()
    fig_box = d.fig.bbox
    labels = {f"node {i}": t.get_window_extent(r) for i, t in d.node_text.items()}
    labels.update({f"text {t.get_text()[:30]!r}": t.get_window_extent(r) for t in d.texts})
    labels["legend"] = d.legend.get_window_extent(r)
    names = list(labels)
    clashes = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if overlap(labels[a], labels[b])]
    assert clashes == []
    outside = [k for k, b in labels.items() if b.x0 < fig_box.x0 or b.y0 < fig_box.y0 or b.x1 > fig_box.x1 or b.y1 > fig_box.y1]
    assert outside == []
    boxes = {i: p.get_window_extent(r) for i, p in d.node_patch.items()}
    ids = list(boxes)
    assert [(a, b) for k, a in enumerate(ids) for b in ids[k + 1:] if overlap(boxes[a], boxes[b])] == []
    for i, t in labels.items():  # every node's text lies inside its own box
        if i.startswith("node "):
            b = boxes[i[5:]]
            assert b.x0 <= t.x0 and t.x1 <= b.x1 and b.y0 <= t.y0 and t.y1 <= b.y1, i
    # readable at 100%: 8 pt at the saved 130 dpi is ~14 px; the long description wraps instead of being cut
    assert all(t.get_fontsize() >= 8 for t in d.node_text.values())
    long_texts = [d.node_text[n["id"]].get_text() for n in nodes if n["description"] == LONG]
    assert long_texts and all(LONG in " ".join(t.split()) and max(map(len, t.split("\n"))) < len(LONG) for t in long_texts)
    assert "4 nodes of these without an edge at or above the drawing threshold" in " ".join(d.texts[0].get_text().split())
    d.fig.clf()


def test_nodes_without_a_drawn_edge_are_drawn_and_recorded(tmp_path):
    circuit, orphans = big_circuit(n_features=20, n_orphans=3)
    export_circuit(circuit, tmp_path, ExportOptions(edge_threshold=0.0, max_edges=1000))
    full = json.loads((tmp_path / "circuit_full.json").read_text())
    assert set(full["drawn"]["without_drawn_edges"]) == orphans
    assert set(full["drawn"]["nodes"]) == {n["id"] for n in circuit["nodes"]}
    page = (tmp_path / "circuit.html").read_text()
    drawn_ids = set(re.findall(r'<g class="node" data-id="([^"]+)"', page))
    assert drawn_ids == set(full["drawn"]["nodes"]) | {"metric"}
    assert "3 nodes of these without an edge at or above the drawing threshold" in page
    svg = ET.fromstring(page[page.index("<svg"): page.index("</svg>") + 6])
    assert "width" not in svg.attrib and float(svg.attrib["viewBox"].split()[2]) <= 1345  # scales; fits a 1400 px window


def test_a_circuit_of_one_node_and_no_edge_draws_that_node(tmp_path):
    """Issue 19: the tiny run's variable circuit (one group, no edge) was drawn as the metric alone."""
    circuit, _ = big_circuit(n_features=1, n_orphans=0)
    node = dict(circuit["nodes"][0], id="r2@r2@blocks.0.hook_resid_pre", type="variable", feature=None, name="r2")
    circuit.update(nodes=[node], edges=[])
    export_circuit(circuit, tmp_path, prefix="variable_")
    page = (tmp_path / "variable_circuit.html").read_text()
    assert set(re.findall(r'<g class="node" data-id="([^"]+)"', page)) == {node["id"], "metric"}
    assert 'data-id="r2@r2@blocks.0.hook_resid_pre"><rect' in page  # a box, not just an entry in the hover data
    assert json.loads((tmp_path / "variable_circuit_full.json").read_text())["drawn"]["nodes"] == [node["id"]]
    d = draw_diagram(circuit, [node], [], 1)
    assert list(d.node_patch) == [node["id"]] and "L0 pre r2 @head" in d.node_text[node["id"]].get_text()
    d.fig.clf()


def test_labels_name_the_position_they_are_measured_at():
    n = {"id": "x", "hook": "blocks.1.hook_resid_pre", "hook_index": 1, "position": 2, "role": "r2", "type": "feature", "feature": 411,
         "effect": -0.1, "label": "head=e23@head", "labels": [{"position": "head", "text": "head=e23@head"}]}
    assert node_title(n) == "L1 pre #411 @r2"
    assert node_caption(n, ROLES) == "labelled at head: head=e23"
    n["labels"].append({"position": "r2", "text": "r2=r1@r2"})
    assert node_caption(n, ROLES) == "r2=r1@r2"  # a label found at the node's own position wins
    head = {**n, "position": 0, "role": "head", "labels": [], "label": "r2=r2@pos:r2"}
    assert node_caption(head, ROLES) == "labelled at r2: r2=r2"  # the issue's `r2=r2@r2` in the head column
    var = {"id": "bridge@r1@blocks.2.hook_resid_pre", "hook": "blocks.2.hook_resid_pre", "hook_index": 2, "position": 1, "role": "r1",
           "type": "variable", "feature": None, "effect": 0.3, "description": "the bridge entity"}
    assert node_title(var) == "L2 pre bridge @r1" and node_caption(var) == "the bridge entity"
    # captions wrap at spaces and never lose text; only a word over twice the width is split
    assert wrap("on e29@head → e96,e8,e61 and bridge=e12@r1", 12) == ["on e29@head", "→ e96,e8,e61", "and", "bridge=e12@r1"]
    assert "".join(wrap("x" * 61, 10)) == "x" * 61 and max(map(len, wrap("x" * 61, 10))) == 20


def test_variable_level_circuit_draws(tmp_path):
    """Nodes that are ground-truth variables (ids like bridge@r1@hook, no feature) go through every exporter."""
    circuit, _ = big_circuit(n_features=6, n_orphans=0)
    renamed = {}
    for k, n in enumerate(circuit["nodes"]):
        if n["type"] == "feature":
            renamed[n["id"]] = f"var{k}@{n['role']}@{n['hook']}"
            n.update(id=renamed[n["id"]], type="variable", feature=None, label=None, name=f"var{k}")
    for e in circuit["edges"]:
        e["source"], e["target"] = renamed.get(e["source"], e["source"]), renamed.get(e["target"], e["target"])
    export_circuit(circuit, tmp_path)
    graph = json.loads((tmp_path / "graph.json").read_text())
    variables = [n for n in graph["nodes"] if n["node_id"] in renamed.values()]
    assert variables and all(n["feature"] == -1 and n["clerp"].startswith("L") and " var" in n["clerp"] for n in variables)
    nodes, edges = select_drawn(circuit, ExportOptions())
    d = draw_diagram(circuit, nodes, edges)
    texts = [t.get_text() for t in d.node_text.values()]
    assert any(t.startswith("L0 pre var0 @head") for t in texts)
    assert any("variable node" in t.get_text() for t in d.legend.get_texts())
    d.fig.clf()


def test_water_filling_and_tiers():
    assert budgets([100, 50, 30], 400) == [100, 50, 30]  # fits: natural widths
    assert budgets([1000, 50, 30], 400) == [320, 50, 30]  # narrow columns keep theirs, the wide one gets the rest
    assert budgets([600, 600, 30], 430) == [200, 200, 30]
    assert n_tiers([100] * 3, 400, 10) == 1
    # 10 boxes of 100 with gap 10 in 400: width (n-1)*110/t + 100 <= 400 needs t >= 3.3
    assert n_tiers([100] * 10, 400, 10) == 4


def crossings(lay, edges) -> int:
    segs = [(lay.boxes[s].cx, lay.boxes[t].cx) for s, t in edges]
    return sum((a0 - b0) * (a1 - b1) < 0 for i, (a0, a1) in enumerate(segs) for b0, b1 in segs[i + 1:])


def test_barycenter_ordering_uncrosses_edges():
    # row 0: a b c, row 1: z y x (in priority order) with a->x, b->y, c->z: fully crossed before any sweep
    nodes = [(i, 0, 0) for i in "abc"] + [(i, 1, 0) for i in "zyx"]
    sizes = {i: (40.0, 20.0) for i, _, _ in nodes}
    edges = [("a", "x"), ("b", "y"), ("c", "z")]
    assert crossings(layered_layout(nodes, sizes, edges, 2, 1, 1000, sweeps=0), edges) == 3
    lay = layered_layout(nodes, sizes, edges, 2, 1, 1000)
    assert crossings(lay, edges) == 0
    assert lay.boxes["a"].y == lay.boxes["b"].y < lay.boxes["x"].y  # rows in forward order, bottom up


def test_same_circuit_same_layout():
    circuit, _ = big_circuit(n_features=30, n_orphans=0)
    nodes, edges = select_drawn(circuit, ExportOptions())
    a, b = plan_diagram(circuit, nodes, edges), plan_diagram(circuit, nodes, edges)
    assert a.layout.boxes == b.layout.boxes


def test_training_figure_axis_and_lines_are_readable(tmp_path, monkeypatch):
    """accuracy.png: a linear step axis from 0 with several labelled ticks; every split its own marker and line style;
    the legend outside both panels."""
    drawn = {}
    monkeypatch.setattr(tp, "save_figure", lambda fig, stem, tight_layout=False: drawn.setdefault("fig", lay_out(fig, tight_layout) or fig))
    recs = [{"step": s, **{f"{k}_{m}": 0.5 for k, *_ in tp.SPLITS for m in ("acc", "loss")}} for s in range(0, 5001, 250)]
    tp.plot_training(recs, tmp_path / "accuracy")
    fig = drawn["fig"]
    fig.canvas.draw()
    ax_acc, _ = fig.axes
    assert ax_acc.get_xscale() == "linear" and ax_acc.get_xlim()[0] == 0
    ticks = [t for t in ax_acc.get_xticks() if ax_acc.get_xlim()[0] <= t <= ax_acc.get_xlim()[1]]
    assert len(ticks) >= 4
    styles = {(ln.get_marker(), str(ln.get_linestyle())) for ln in ax_acc.get_lines()}
    assert len(ax_acc.get_lines()) == len(tp.SPLITS) == len(styles)  # identical values, still told apart
    r = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(r)
    assert not any(legend.overlaps(ax.get_window_extent(r)) for ax in fig.axes)


def test_faithfulness_curve_axis_is_labelled_and_legends_stay_off_the_data(tmp_path, monkeypatch):
    """faithfulness_curve.png: symlog's own ticks label a 50-node curve only at 0 and 10; and the legends (they
    covered the curves) sit outside both panels."""
    from conftest import typed

    import sae_ooc.viz.circuit_plots as cp
    from sae_ooc.circuits.faithfulness_result import AblationCurve, Scores

    drawn = {}
    monkeypatch.setattr(cp, "save_figure", lambda fig, stem, tight_layout=False: drawn.setdefault("fig", lay_out(fig, tight_layout) or fig))
    sizes = [0, 1, 2, 3, 5, 10, 20, 50]
    rows = [{"n_features": n, "faithfulness": n / 50, "completeness": 1 - n / 50} for n in sizes]
    curves = {k: {"sizes": sizes, "faithfulness": [n / 50 for n in sizes], "faithfulness_per_prompt_circuits_in_sample": [n / 60 for n in sizes]}
              for k in ("mean", "zero")}
    scores = typed(Scores, {"curve": rows})
    cp.plot_curve({"heldout": scores, "selection": scores}, {k: typed(AblationCurve, v) for k, v in curves.items()}, "mean", tmp_path / "f", "t")
    fig = drawn["fig"]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        labels = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()]
        assert len(labels) >= 5 and {"0", "10", "50"} <= set(labels), labels
        assert not ax.get_legend().get_window_extent(r).overlaps(ax.get_window_extent(r))


def crowded_circuit(n: int = 15) -> dict:
    """natural_tiny's shape: nine positions, three hooks, n nodes in each of three cells, the other positions empty."""
    positions = ["bos", "head.0", "head", "'s", "r1", "'s#2", "r2", "last", "answer.1"]
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    nodes, edges = [], []
    for h, p in ((0, 2), (1, 7), (2, 7)):
        for k in range(n):
            nid = f"{hooks[h]}:{p}:{k}"
            nodes.append({"id": nid, "hook": hooks[h], "hook_index": h, "position": p, "role": positions[p], "type": "feature", "feature": k,
                          "effect": -1.0 - k / n, "effect_std": 0.1, "label": None, "description": f"on Name{k}@pos4, Name{k}@head → A, B, C"})
            edges.append({"source": nid, "target": "metric", "weight": -1.0})
    meta = {"config": "crowded", "method": "atp", "metric": "logit_diff", "n_pairs": 16, "hooks": hooks, "positions": positions,
            "sink": {"id": "metric", "description": "log p(t2) - log p(t2')"}, "example_prompt": "x"}
    return {"metadata": meta, "scores": {"faithfulness": 0.5}, "nodes": nodes, "edges": edges}


def test_crowded_cells_widen_the_png_instead_of_a_staircase():
    """Many boxes in few cells folded one per tier (a 2001x5382 px staircase) before; now the PNG widens, at most
    twice, until the node area is no taller than TALL times its width, and no column is a sliver."""
    from sae_ooc.viz.diagram import COL_MIN, FONT, PNG_MAX_WIDTH, TALL, WIDEN

    c = crowded_circuit()
    d = draw_diagram(c, c["nodes"], c["edges"])
    w, h = d.fig.get_size_inches() * 72
    assert w <= WIDEN[-1] * PNG_MAX_WIDTH + 200 and h <= 1.6 * w, (w, h)
    lay = plan_diagram(c, c["nodes"], c["edges"], max_width=w).layout
    assert lay.height <= TALL * lay.width * 1.05
    assert min(b - a for a, b in lay.cols) >= COL_MIN * FONT - 1e-6


def test_every_node_type_has_its_own_legend_symbol():
    """variable and remainder nodes shared one legend symbol (thick border); each type's border now differs, as drawn."""
    from sae_ooc.viz.diagram import legend_handles, node_style

    types = ["feature", "error", "variable", "remainder"]
    nodes = [{"type": t} for t in types]
    from matplotlib.patches import Patch

    kinds = [h for h in legend_handles(nodes, 1.0) if isinstance(h, Patch) and h.get_facecolor()[:3] == (1.0, 1.0, 1.0)]
    assert len(kinds) == len(types) and len({(h.get_linestyle(), h.get_linewidth()) for h in kinds}) == len(types)
    assert len({node_style(t)[:3] for t in types}) == len(types)
