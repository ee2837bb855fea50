"""Stage `export`: draw the saved circuit. Rendering only: everything comes from RUN/circuit/circuit.json.

The diagram (sae_ooc.viz.diagram) is layered: one row per hook in forward order, the metric on top, one column
per token position (head, r1, r2); each node is a box sized to its text (hook, feature, the position it is
measured at, its label or description, its effect), placed to reduce edge crossings. Box colour is the sign of
its effect, darker for larger |effect|; dashed squares are SAE error nodes. Edge width is |weight|, colour its
sign; a legend says so. Every node the options choose is drawn, also one left without a drawn edge (its edges
are below the threshold; the caption counts such nodes): a circuit of one node is that node, not an empty page.

Files (RUN/export/): circuit.svg + circuit.png (matplotlib), circuit.dot (Graphviz),
graph.json (circuit-tracer's graph format: metadata, qParams, nodes, links), circuit_full.json (the
whole saved circuit plus `drawn`: the options, the drawn nodes and edges, and `without_drawn_edges`),
circuit.html (one self-contained page, no network access: inline SVG, CSS and JS; hovering a node shows its top
activations and promoted tokens; with `site` (the export stage: RUN/browse/ seen from RUN/export/) a feature node
links to its page in the feature browser once `sae-ooc browse` has written it: the page checks for the site when it
opens, so where there is none (a copy in results/, a run without browse) the boxes link nowhere and it says so). Every format but circuit_full.json holds the drawn nodes and edges only.
What is drawn is chosen by the export options; the saved circuit keeps everything. The example pair's
pruned circuit (RUN/circuit/prompt_circuit.json), when the circuit stage wrote one, is exported the same way
into prompt_-prefixed files. The circuit is read through `sae_ooc.circuits.graph.CircuitGraph`; the drawing
code works on its JSON form.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sae_ooc.circuits.graph import CircuitGraph, load_circuit, load_prompt_circuit
from sae_ooc.circuits.nodes import SINK
from sae_ooc.io import write_json, write_text
from sae_ooc.viz.browse.paths import JS, SITE_DIR, feature_page
from sae_ooc.viz.circuit_html import to_html
from sae_ooc.viz.diagram import DPI, METRIC, NEG, POS, draw_diagram, edge_width, fill
from sae_ooc.viz.export_options import ExportOptions
from sae_ooc.viz.graph_json import to_graph_json, validate_graph
from sae_ooc.viz.node_labels import node_lines
from sae_ooc.viz.plots import fail_soft, save_figure

PROMPT_PREFIX = "prompt_"  # files of the example pair's own circuit


# what to draw --------------------------------------------------------------------------------------------
def select_drawn(circuit: dict, opt: ExportOptions) -> tuple[list[dict], list[dict]]:
    nodes = sorted(circuit["nodes"], key=lambda n: -abs(n["effect"]))
    nodes = [n for n in nodes if abs(n["effect"]) >= opt.min_abs_effect]
    if opt.max_nodes > 0:
        nodes = nodes[: opt.max_nodes]
    ids = {n["id"] for n in nodes} | {SINK}
    edges = [e for e in circuit["edges"] if e["source"] in ids and e["target"] in ids]
    wmax = max((abs(e["weight"]) for e in edges), default=0.0)
    edges = [e for e in edges if wmax > 0 and abs(e["weight"]) >= opt.edge_threshold * wmax]
    edges = sorted(edges, key=lambda e: -abs(e["weight"]))[: opt.max_edges]
    return nodes, edges


def without_edges(nodes: list[dict], edges: list[dict]) -> list[str]:
    """The ids of the drawn nodes that no drawn edge touches (drawn all the same; the caption counts them)."""
    linked = {e["source"] for e in edges} | {e["target"] for e in edges}
    return [n["id"] for n in nodes if n["id"] not in linked]


def site_links(nodes: list[dict], site: str) -> dict[str, str]:
    """{node id: its feature page} for the feature nodes, `site` being the feature browser's root seen from the page."""
    return {n["id"]: site + feature_page(n["hook"], n["feature"]) for n in nodes
            if n.get("type") == "feature" and isinstance(n.get("feature"), int) and n.get("hook")}


@fail_soft
def draw_matplotlib(circuit: dict, nodes: list[dict], edges: list[dict], stem: Path, unlinked: int = 0) -> list[Path]:
    return save_figure(draw_diagram(circuit, nodes, edges, unlinked).fig, stem, dpi=DPI)


# graphviz --------------------------------------------------------------------------------------------------
def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(circuit: dict, nodes: list[dict], edges: list[dict]) -> str:
    meta = circuit["metadata"]
    emax = max((abs(n["effect"]) for n in nodes), default=0.0)
    wmax = max((abs(e["weight"]) for e in edges), default=0.0)
    lines = ["digraph circuit {", "  rankdir=BT;", '  node [style=filled, fontsize=9];', "  edge [arrowsize=0.5];"]
    for hi, hook in enumerate(meta["hooks"]):
        members = [n for n in nodes if n["hook_index"] == hi]
        if not members:
            continue
        lines.append(f"  subgraph {_dot_str('layer_' + str(hi))} {{ rank=same;")
        for n in sorted(members, key=lambda n: (n["position"], -abs(n["effect"]))):
            label = "\n".join(node_lines(n, meta["positions"]))
            lines.append(f"    {_dot_str(n['id'])} [label={_dot_str(label)}, shape={'box' if n['type'] == 'error' else 'ellipse'}, "
                         f"fillcolor={_dot_str(fill(n['effect'], emax))}];")
        lines.append("  }")
    lines.append(f"  {_dot_str(SINK)} [label={_dot_str(meta['sink']['description'])}, shape=diamond, fillcolor=\"{METRIC}\"];")
    for e in edges:
        tip = _dot_str(format(e["weight"], ".4g"))
        lines.append(f"  {_dot_str(e['source'])} -> {_dot_str(e['target'])} [penwidth={edge_width(e['weight'], wmax, 0.4, 5.0):.2f}, "
                     f"color={_dot_str(NEG if e['weight'] < 0 else POS)}, tooltip={tip}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# the stage -----------------------------------------------------------------------------------------------
def export_circuit(circuit: CircuitGraph | dict, out_dir: Path, opt: ExportOptions | None = None, prefix: str = "",
                   site: str | None = None) -> list[Path]:
    """Write every export format of `circuit` into `out_dir` (file names start with `prefix`); returns the paths written.
    `site`: the feature browser's root relative to `out_dir`, whose pages circuit.html's feature nodes link to once it exists."""
    circuit = circuit.to_json() if isinstance(circuit, CircuitGraph) else circuit
    opt = opt or ExportOptions()
    out_dir = Path(out_dir)
    nodes, edges = select_drawn(circuit, opt)
    unlinked = without_edges(nodes, edges)
    paths = draw_matplotlib(circuit, nodes, edges, out_dir / f"{prefix}circuit", len(unlinked))
    paths.append(write_text(out_dir / f"{prefix}circuit.dot", to_dot(circuit, nodes, edges)))
    graph = to_graph_json(circuit, nodes, edges, opt)
    errs = validate_graph(graph)
    if errs:
        raise ValueError(f"graph.json does not match GRAPH_SCHEMA: {errs[:3]}")
    paths.append(write_json(out_dir / f"{prefix}graph.json", graph))
    full = {**circuit, "drawn": {"options": asdict(opt), "nodes": [n["id"] for n in nodes], "edges": [[e["source"], e["target"]] for e in edges],
                                 "without_drawn_edges": unlinked}}
    paths.append(write_json(out_dir / f"{prefix}circuit_full.json", full))
    links = site_links(nodes, site) if site is not None else None
    paths.append(write_text(out_dir / f"{prefix}circuit.html", to_html(circuit, nodes, edges, len(unlinked), links=links,
                                                                       site_check=None if site is None else site + JS)))
    return paths


def run_export(run, force: bool = False, max_nodes: int = ExportOptions.max_nodes, min_abs_effect: float = ExportOptions.min_abs_effect,
               edge_threshold: float = ExportOptions.edge_threshold, max_edges: int = ExportOptions.max_edges) -> dict:
    """Stage `export`: draw RUN/circuit/circuit.json (and the example pair's circuit, if any) into RUN/export/."""
    opt = ExportOptions(max_nodes=max_nodes, min_abs_effect=min_abs_effect, edge_threshold=edge_threshold, max_edges=max_edges)
    out = run.export_dir
    site = f"../{SITE_DIR}/"  # RUN/browse/ from RUN/export/: written later by the browse stage, not by this one
    paths = export_circuit(load_circuit(run), out, opt, site=site)
    example = load_prompt_circuit(run)
    if example is not None:
        paths += export_circuit(example, out, opt, prefix=PROMPT_PREFIX, site=site)
    for stale in out.glob(f"{PROMPT_PREFIX}*") if example is None else ():  # from an earlier circuit that had an example
        stale.unlink()
    return {"out": str(out), "files": len(paths)}
