"""Stage `export`: draw the saved circuit. Rendering only: everything comes from RUN/circuit/circuit.json.

The diagram (sae_ooc.viz.diagram) is layered: one row per hook in forward order, the metric on top, one column
per token position (head, r1, r2); each node is a box sized to its text (hook, feature, the position it is
measured at, its label or description, its effect), placed to reduce edge crossings. Box colour is the sign of
its effect, darker for larger |effect|; dashed squares are SAE error nodes. Edge width is |weight|, colour its
sign; a legend says so. Nodes left without any drawn edge are not drawn (the caption counts them).

Files (RUN/export/): circuit.svg + circuit.png (matplotlib), circuit.dot (Graphviz),
graph.json (circuit-tracer's graph format: metadata, qParams, nodes, links), circuit_full.json (the
whole saved circuit plus `drawn`: the options, the drawn nodes and edges, and `not_drawn_without_edges`),
circuit.html (one self-contained page, no network access: inline SVG, CSS and JS; hovering a node shows its top
activations and promoted tokens). Every format but circuit_full.json holds the drawn nodes and edges only.
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


def drop_orphans(nodes: list[dict], edges: list[dict]) -> tuple[list[dict], int]:
    """The nodes with at least one drawn edge, and how many had none (they are not drawn, only counted)."""
    linked = {e["source"] for e in edges} | {e["target"] for e in edges}
    kept = [n for n in nodes if n["id"] in linked]
    return kept, len(nodes) - len(kept)


@fail_soft
def draw_matplotlib(circuit: dict, nodes: list[dict], edges: list[dict], stem: Path, dropped: int = 0) -> list[Path]:
    return save_figure(draw_diagram(circuit, nodes, edges, dropped).fig, stem, dpi=DPI)


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
def export_circuit(circuit: CircuitGraph | dict, out_dir: Path, opt: ExportOptions | None = None, prefix: str = "") -> list[Path]:
    """Write every export format of `circuit` into `out_dir` (file names start with `prefix`); returns the paths written."""
    circuit = circuit.to_json() if isinstance(circuit, CircuitGraph) else circuit
    opt = opt or ExportOptions()
    out_dir = Path(out_dir)
    nodes, edges = select_drawn(circuit, opt)
    linked, dropped = drop_orphans(nodes, edges)
    orphans = [n["id"] for n in nodes if n not in linked]
    nodes = linked
    paths = draw_matplotlib(circuit, nodes, edges, out_dir / f"{prefix}circuit", dropped)
    paths.append(write_text(out_dir / f"{prefix}circuit.dot", to_dot(circuit, nodes, edges)))
    graph = to_graph_json(circuit, nodes, edges, opt)
    errs = validate_graph(graph)
    if errs:
        raise ValueError(f"graph.json does not match GRAPH_SCHEMA: {errs[:3]}")
    paths.append(write_json(out_dir / f"{prefix}graph.json", graph))
    full = {**circuit, "drawn": {"options": asdict(opt), "nodes": [n["id"] for n in nodes], "edges": [[e["source"], e["target"]] for e in edges],
                                 "not_drawn_without_edges": orphans}}
    paths.append(write_json(out_dir / f"{prefix}circuit_full.json", full))
    paths.append(write_text(out_dir / f"{prefix}circuit.html", to_html(circuit, nodes, edges, dropped)))
    return paths


def run_export(run, force: bool = False, max_nodes: int = ExportOptions.max_nodes, min_abs_effect: float = ExportOptions.min_abs_effect,
               edge_threshold: float = ExportOptions.edge_threshold, max_edges: int = ExportOptions.max_edges) -> dict:
    """Stage `export`: draw RUN/circuit/circuit.json (and the example pair's circuit, if any) into RUN/export/."""
    opt = ExportOptions(max_nodes=max_nodes, min_abs_effect=min_abs_effect, edge_threshold=edge_threshold, max_edges=max_edges)
    out = run.export_dir
    paths = export_circuit(load_circuit(run), out, opt)
    example = load_prompt_circuit(run)
    if example is not None:
        paths += export_circuit(example, out, opt, prefix=PROMPT_PREFIX)
    for stale in out.glob(f"{PROMPT_PREFIX}*") if example is None else ():  # from an earlier circuit that had an example
        stale.unlink()
    return {"out": str(out), "files": len(paths)}
