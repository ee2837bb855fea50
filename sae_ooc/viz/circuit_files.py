"""Every export format of one circuit, drawn from its JSON form (`CircuitGraph.to_json()`): plain data in, files out.

The `export` stage (sae_ooc.export.export) and the `variable-circuit` stage call `export_circuit`; this module
calls no stage and reads no run. The metric node's id is the circuit's own `metadata.sink.id`.

The diagram (sae_ooc.viz.diagram) is layered: one row per hook in forward order, the metric on top, one column
per token position (head, r1, r2); each node is a box sized to its text (hook, feature, the position it is
measured at, its label or description, its effect), placed to reduce edge crossings. Box colour is the sign of
its effect, darker for larger |effect|; dashed squares are SAE error nodes. Edge width is |weight|, colour its
sign; a legend says so. Every node the options choose is drawn, also one left without a drawn edge (its edges
are below the threshold; the caption counts such nodes): a circuit of one node is that node, not an empty page.

Files (with `prefix`): circuit.svg + circuit.png (matplotlib), circuit.dot (Graphviz),
graph.json (circuit-tracer's graph format: metadata, qParams, nodes, links), circuit_full.json (the
whole saved circuit plus `drawn`: the options, the drawn nodes and edges, and `without_drawn_edges`),
circuit.html (one self-contained page, no network access: inline SVG, CSS and JS; hovering a node shows its top
activations and promoted tokens; with `links` a feature node links to its page in the feature browser, and with
`site_check` the page checks for the site when it opens, so where there is none (a copy in results/, a run without
browse) the boxes link nowhere and it says so). Every format but circuit_full.json holds the drawn nodes and edges only.
What is drawn is chosen by the export options; the saved circuit keeps everything.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

from sae_ooc.io import write_json, write_text
from sae_ooc.viz.circuit_html import to_html
from sae_ooc.viz.diagram import DPI, METRIC, NEG, POS, draw_diagram, edge_width, fill
from sae_ooc.viz.export_options import Drawn, DrawnOptions, ExportOptions
from sae_ooc.viz.graph_json import to_graph_json, validate_graph
from sae_ooc.viz.node_labels import node_lines, sink_id
from sae_ooc.viz.plots import fail_soft, save_figure


# what to draw --------------------------------------------------------------------------------------------
def select_drawn(circuit: dict, opt: ExportOptions) -> tuple[list[dict], list[dict]]:
    nodes = sorted(circuit["nodes"], key=lambda n: -abs(n["effect"]))
    nodes = [n for n in nodes if abs(n["effect"]) >= opt.min_abs_effect]
    if opt.max_nodes > 0:
        nodes = nodes[: opt.max_nodes]
    ids = {n["id"] for n in nodes} | {sink_id(circuit)}
    edges = [e for e in circuit["edges"] if e["source"] in ids and e["target"] in ids]
    wmax = max((abs(e["weight"]) for e in edges), default=0.0)
    edges = [e for e in edges if wmax > 0 and abs(e["weight"]) >= opt.edge_threshold * wmax]
    edges = sorted(edges, key=lambda e: -abs(e["weight"]))[: opt.max_edges]
    return nodes, edges


def without_edges(nodes: list[dict], edges: list[dict]) -> list[str]:
    """The ids of the drawn nodes that no drawn edge touches (drawn all the same; the caption counts them)."""
    linked = {e["source"] for e in edges} | {e["target"] for e in edges}
    return [n["id"] for n in nodes if n["id"] not in linked]


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
    lines.append(f"  {_dot_str(sink_id(circuit))} [label={_dot_str(meta['sink']['description'])}, shape=diamond, fillcolor=\"{METRIC}\"];")
    for e in edges:
        tip = _dot_str(format(e["weight"], ".4g"))
        lines.append(f"  {_dot_str(e['source'])} -> {_dot_str(e['target'])} [penwidth={edge_width(e['weight'], wmax, 0.4, 5.0):.2f}, "
                     f"color={_dot_str(NEG if e['weight'] < 0 else POS)}, tooltip={tip}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# every format ---------------------------------------------------------------------------------------------
def export_circuit(circuit: dict, out_dir: Path, opt: ExportOptions | None = None, prefix: str = "",
                   links: Callable[[list[dict]], dict[str, str]] | None = None, site_check: str | None = None) -> list[Path]:
    """Write every export format of `circuit` (a circuit's JSON form) into `out_dir` (file names start with `prefix`);
    returns the paths written. `links(drawn nodes)`: node id -> the page its box in circuit.html links to; `site_check`:
    the script, relative to `out_dir`, whose presence turns those links on (sae_ooc.browse.paths.site_links)."""
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
    drawn = Drawn(options=DrawnOptions(**asdict(opt)), nodes=[n["id"] for n in nodes],
                  edges=[[e["source"], e["target"]] for e in edges], without_drawn_edges=unlinked)
    full = {**circuit, "drawn": drawn.to_json()}
    paths.append(write_json(out_dir / f"{prefix}circuit_full.json", full))
    node_links = links(nodes) if links is not None else None
    paths.append(write_text(out_dir / f"{prefix}circuit.html", to_html(circuit, nodes, edges, len(unlinked), links=node_links,
                                                                       site_check=site_check)))
    return paths
