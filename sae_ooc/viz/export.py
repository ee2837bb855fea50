"""Stage `export`: draw the saved circuit. Rendering only: everything comes from RUN/circuit/circuit.json.

The diagram is layered: x is the token position (head, r1, r2), y the SAE layer in forward order, the
metric node on top. Node colour is the sign of its effect (red: patching it to the corrupted value lowers
the metric, i.e. it carries the clean answer; blue: the opposite), size its |effect|; squares are SAE
error nodes. Edge width is |weight|, colour its sign. Each node is labelled with hook, feature id and a
short description (its ground-truth variable where the SAE evaluation found one, else what it fires on
and which answers it promotes).

Files (RUN/export/): circuit.svg + circuit.png (matplotlib), circuit.dot (Graphviz),
graph.json (circuit-tracer's graph format: metadata, qParams, nodes, links), circuit_full.json (the
whole saved circuit plus what was drawn), circuit.html (one self-contained page, no network access:
inline SVG and JS; hovering a node shows its top activations and promoted tokens).
What is drawn is chosen by the export options; the saved circuit keeps everything. The example pair's
pruned circuit (RUN/circuit/prompt_circuit.json), when the circuit stage wrote one, is exported the same way
into prompt_-prefixed files. The circuit is read through `sae_ooc.circuits.graph.CircuitGraph`; the drawing
code works on its JSON form.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

from sae_ooc.circuits.graph import CircuitGraph, load_circuit, load_prompt_circuit
from sae_ooc.circuits.nodes import SINK
from sae_ooc.io import write_json, write_text
from sae_ooc.viz.export_options import ExportOptions
from sae_ooc.viz.graph_json import to_graph_json, validate_graph
from sae_ooc.viz.plots import plt, save_figure

NEG, POS = "#d62728", "#1f77b4"
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


def short_hook(hook: str) -> str:
    """blocks.1.hook_resid_pre -> L1 pre."""
    parts = hook.split(".")
    name = parts[-1].replace("hook_", "").replace("resid_", "")
    return f"L{parts[1]} {name}" if len(parts) > 2 and parts[1].isdigit() else hook


def node_title(n: dict) -> str:
    return f"{short_hook(n['hook'])} " + ("error" if n["type"] == "error" else f"#{n['feature']}")


def node_caption(n: dict, width: int = 22) -> str:
    """The ground-truth label where there is one (without its AUROC), else the short description."""
    d = n.get("label") or n.get("description") or ""
    return d if len(d) <= width else d[: width - 1] + "…"


def layer_rows(nodes: list[dict], per_row: int = 4, hook_index: int | None = None) -> int:
    """Rows of nodes in the tallest (layer, position) cell, of one layer or of all."""
    cells: dict[tuple[int, int], int] = {}
    for n in nodes:
        if hook_index is None or n["hook_index"] == hook_index:
            key = (n["hook_index"], n["position"])
            cells[key] = cells.get(key, 0) + 1
    return max([(k + per_row - 1) // per_row for k in cells.values()] or [1])


def layer_y(nodes: list[dict], hooks: list[str], per_row: int = 4) -> list[float]:
    """y of each SAE layer and, last, of the metric node: each layer's band is as tall as its own tallest cell."""
    bands = [max(1.0, ROW_GAP * layer_rows(nodes, per_row, i) + 0.6) for i in range(len(hooks))] + [1.0]
    ys = [0.0]
    for a, b in zip(bands, bands[1:]):
        ys.append(ys[-1] + (a + b) / 2)
    return ys


ROW_GAP = 0.45


def layout(nodes: list[dict], hooks: list[str], per_row: int = 4) -> dict[str, tuple[float, float]]:
    """(x, y) per node id: the nodes of one (layer, position) cell sit around the position, in rows of
    `per_row` stacked within the layer's band, largest |effect| first (error nodes last); the metric node is on top."""
    ys = layer_y(nodes, hooks, per_row)
    cells: dict[tuple[int, int], list[dict]] = {}
    for n in nodes:
        cells.setdefault((n["hook_index"], n["position"]), []).append(n)
    pos = {}
    for (y, p), cell in cells.items():
        cell.sort(key=lambda n: (n["type"] == "error", -abs(n["effect"])))
        rows = (len(cell) + per_row - 1) // per_row
        for j, n in enumerate(cell):
            r, c = divmod(j, per_row)
            cols = min(per_row, len(cell) - r * per_row)
            pos[n["id"]] = (p + (c - (cols - 1) / 2) * (0.8 / per_row), ys[y] + (r - (rows - 1) / 2) * ROW_GAP)
    pos[SINK] = (2.0, ys[-1])
    return pos


def _scale(v: float, vmax: float, lo: float, hi: float) -> float:
    return lo + (hi - lo) * (abs(v) / vmax if vmax > 0 else 0.0)


# matplotlib ----------------------------------------------------------------------------------------------
def draw_matplotlib(circuit: dict, nodes: list[dict], edges: list[dict], stem: Path) -> list[Path]:
    meta = circuit["metadata"]
    hooks = meta["hooks"]
    xy = layout(nodes, hooks)
    ys = layer_y(nodes, hooks)
    fig, ax = plt.subplots(figsize=(16, 1.5 * ys[-1] + 3))
    emax = max((abs(n["effect"]) for n in nodes), default=0.0)
    wmax = max((abs(e["weight"]) for e in edges), default=0.0)
    for e in edges:
        (x0, y0), (x1, y1) = xy[e["source"]], xy[e["target"]]
        ax.plot([x0, x1], [y0, y1], color=NEG if e["weight"] < 0 else POS, alpha=0.45, lw=_scale(e["weight"], wmax, 0.3, 4.0), zorder=1)
    for n in nodes:
        x, y = xy[n["id"]]
        ax.scatter([x], [y], s=_scale(n["effect"], emax, 40, 600), c=NEG if n["effect"] < 0 else POS,
                   marker="s" if n["type"] == "error" else "o", edgecolors="black", linewidths=0.5, zorder=2)
        ax.annotate(f"{node_title(n)}\n{node_caption(n)}", (x, y), xytext=(0, -13), textcoords="offset points",
                    ha="center", va="top", fontsize=5, zorder=3)
    sx, sy = xy[SINK]
    ax.scatter([sx], [sy], s=500, c="#2ca02c", marker="D", edgecolors="black", zorder=2)
    ax.annotate(meta["sink"]["description"], (sx, sy), xytext=(0, 12), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(range(len(meta["positions"])))
    ax.set_xticklabels(meta["positions"])
    ax.set_yticks(ys)
    ax.set_yticklabels(hooks + ["metric"], fontsize=8)
    ax.set_xlim(-0.6, len(meta["positions"]) - 0.4)
    ax.set_ylim(-ROW_GAP * layer_rows(nodes, hook_index=0) / 2 - 0.7, ys[-1] + 0.6)
    s = circuit.get("scores", {})
    ax.set_title(
        f"{meta.get('config', '')}{' ' + repr(meta['prompt']) + ' -> ' + meta['answer'] if meta.get('prompt') else ''}: "
        f"{sum(n['type'] == 'feature' for n in nodes)} features + {sum(n['type'] == 'error' for n in nodes)} error nodes drawn, "
        f"{len(edges)} edges; faithfulness {s.get('faithfulness', float('nan')):.3f} "
        f"(red: supports the clean answer, blue: opposes; squares: SAE error)", fontsize=8)
    return save_figure(fig, stem)


# graphviz --------------------------------------------------------------------------------------------------
def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(circuit: dict, nodes: list[dict], edges: list[dict]) -> str:
    meta = circuit["metadata"]
    emax = max((abs(n["effect"]) for n in nodes), default=0.0)
    wmax = max((abs(e["weight"]) for e in edges), default=0.0)
    lines = ["digraph circuit {", "  rankdir=BT;", '  node [style=filled, fontsize=9, fontcolor="white"];', "  edge [arrowsize=0.5];"]
    for hi, hook in enumerate(meta["hooks"]):
        members = [n for n in nodes if n["hook_index"] == hi]
        if not members:
            continue
        lines.append(f"  subgraph {_dot_str('layer_' + str(hi))} {{ rank=same;")
        for n in sorted(members, key=lambda n: (n["position"], -abs(n["effect"]))):
            label = f"{node_title(n)} @{n['role']}\n{node_caption(n)}\neffect {n['effect']:.3g}"
            lines.append(f"    {_dot_str(n['id'])} [label={_dot_str(label)}, shape={'box' if n['type'] == 'error' else 'ellipse'}, "
                         f"fillcolor={_dot_str(NEG if n['effect'] < 0 else POS)}, width={_scale(n['effect'], emax, 0.6, 1.8):.2f}];")
        lines.append("  }")
    lines.append(f"  {_dot_str(SINK)} [label={_dot_str(meta['sink']['description'])}, shape=diamond, fillcolor=\"#2ca02c\"];")
    for e in edges:
        tip = _dot_str(format(e["weight"], ".4g"))
        lines.append(f"  {_dot_str(e['source'])} -> {_dot_str(e['target'])} [penwidth={_scale(e['weight'], wmax, 0.4, 5.0):.2f}, "
                     f"color={_dot_str(NEG if e['weight'] < 0 else POS)}, tooltip={tip}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# HTML -------------------------------------------------------------------------------------------------------
def _json_for_script(obj) -> str:
    """JSON that cannot end a <script> element or open markup inside it."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def to_html(circuit: dict, nodes: list[dict], edges: list[dict]) -> str:
    meta = circuit["metadata"]
    hooks = meta["hooks"]
    xy = layout(nodes, hooks)
    ys = layer_y(nodes, hooks)
    span = ys[-1] + 1.0 + ROW_GAP * layer_rows(nodes)
    W, H, mx, my = 1400, int(150 * span) + 120, 150, 60
    npos = len(meta["positions"])

    def px(x, y):
        return mx + (x + 0.5) / npos * (W - 2 * mx), H - my - (y + 0.5 + ROW_GAP * layer_rows(nodes) / 2) / span * (H - 2 * my)

    emax = max((abs(n["effect"]) for n in nodes), default=0.0)
    wmax = max((abs(e["weight"]) for e in edges), default=0.0)
    esc = html.escape
    svg = [f'<svg id="circuit" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">']
    for p, role in enumerate(meta["positions"]):
        x, _ = px(p, 0)
        svg.append(f'<text x="{x:.1f}" y="{H - 15}" text-anchor="middle" class="axis">{esc(role)}</text>')
    for hi, hook in enumerate(hooks + ["metric"]):
        _, y = px(0, ys[hi])
        svg.append(f'<text x="8" y="{y:.1f}" class="axis">{esc(hook)}</text>')
    for e in edges:
        (x0, y0), (x1, y1) = px(*xy[e["source"]]), px(*xy[e["target"]])
        svg.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="{NEG if e["weight"] < 0 else POS}" '
                   f'stroke-opacity="0.45" stroke-width="{_scale(e["weight"], wmax, 0.5, 6):.2f}"><title>{esc(e["source"])} → {esc(e["target"])}: {e["weight"]:.4g}</title></line>')
    for n in nodes:
        x, y = px(*xy[n["id"]])
        r = _scale(n["effect"], emax, 4, 16)
        color = NEG if n["effect"] < 0 else POS
        shape = (f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}"' if n["type"] == "error"
                 else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"')
        svg.append(f'<g class="node" data-id="{esc(n["id"])}">{shape} fill="{color}" stroke="black" stroke-width="0.6"/>'
                   f'<text x="{x:.1f}" y="{y + r + 10:.1f}" text-anchor="middle" class="lab">{esc(node_title(n))}</text>'
                   f'<text x="{x:.1f}" y="{y + r + 20:.1f}" text-anchor="middle" class="lab">{esc(node_caption(n, 22))}</text></g>')
    sx, sy = px(*xy[SINK])
    svg.append(f'<g class="node" data-id="{SINK}"><polygon points="{sx},{sy - 14} {sx + 14},{sy} {sx},{sy + 14} {sx - 14},{sy}" fill="#2ca02c" stroke="black"/>'
               f'<text x="{sx:.1f}" y="{sy - 20:.1f}" text-anchor="middle" class="lab">{esc(meta["sink"]["description"])}</text></g>')
    svg.append("</svg>")
    info = {n["id"]: {k: n.get(k) for k in ("id", "hook", "role", "type", "feature", "effect", "effect_std", "rank", "label", "description",
                                              "top_activations", "promoted")} for n in nodes}
    info[SINK] = {"id": SINK, "description": meta["sink"]["description"], "type": "metric"}
    s = circuit.get("scores", {})
    summary = (f"{meta.get('config', '')}: method {meta['method']}, metric {meta['sink']['description']}, {meta['n_pairs']} pairs; "
               f"faithfulness {s.get('faithfulness', float('nan')):.3f}"
               + (f", completeness {s['completeness']:.3f}" if "completeness" in s else "") + "; "
               f"{len(nodes)} nodes and {len(edges)} edges drawn")
    return _HTML.format(title=esc(f"sae_ooc circuit: {meta.get('config', '')}"), summary=esc(summary), svg="\n".join(svg),
                        data=_json_for_script(info))


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
.axis {{ font-size: 12px; fill: #444; }}
.lab {{ font-size: 9px; fill: #222; pointer-events: none; }}
.node {{ cursor: pointer; }}
#tip {{ position: fixed; display: none; max-width: 420px; background: #fffff0; border: 1px solid #888; padding: 8px;
        font-size: 12px; box-shadow: 2px 2px 6px rgba(0,0,0,.3); pointer-events: none; }}
#tip table {{ border-collapse: collapse; }} #tip td {{ padding: 0 6px; }}
</style></head>
<body>
<h3>{title}</h3>
<p>{summary}. Red: patching the node to its corrupted value lowers the metric (it carries the clean answer); blue: the opposite.
Squares are SAE error nodes. Hover a node for its top activations and promoted answers.</p>
{svg}
<div id="tip"></div>
<script type="application/json" id="nodedata">{data}</script>
<script>
(function () {{
  var data = JSON.parse(document.getElementById("nodedata").textContent);
  var tip = document.getElementById("tip");
  function el(tag, text) {{ var e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; }}
  function show(d, ev) {{
    tip.replaceChildren();
    tip.appendChild(el("b", d.id));
    if (d.description) tip.appendChild(el("div", d.description));
    if (d.effect !== undefined && d.effect !== null) tip.appendChild(el("div", "mean effect " + d.effect.toPrecision(4) + (d.rank ? " (rank " + d.rank + ")" : "")));
    if (d.top_activations && d.top_activations.length) {{
      tip.appendChild(el("div", "top activations:"));
      var t = el("table");
      d.top_activations.forEach(function (a) {{
        var r = el("tr"); r.appendChild(el("td", a.prompt)); r.appendChild(el("td", "@" + a.role)); r.appendChild(el("td", a.activation.toFixed(3))); t.appendChild(r);
      }});
      tip.appendChild(t);
    }}
    if (d.promoted && d.promoted.length) tip.appendChild(el("div", "promotes: " + d.promoted.map(function (p) {{ return p.token + " (" + p.score.toFixed(2) + ")"; }}).join(", ")));
    tip.style.display = "block";
    tip.style.left = (ev.clientX + 14) + "px"; tip.style.top = (ev.clientY + 14) + "px";
  }}
  document.querySelectorAll(".node").forEach(function (g) {{
    g.addEventListener("mousemove", function (ev) {{ var d = data[g.getAttribute("data-id")]; if (d) show(d, ev); }});
    g.addEventListener("mouseleave", function () {{ tip.style.display = "none"; }});
  }});
}})();
</script>
</body></html>
"""


# the stage -----------------------------------------------------------------------------------------------
def export_circuit(circuit: CircuitGraph | dict, out_dir: Path, opt: ExportOptions | None = None, prefix: str = "") -> list[Path]:
    """Write every export format of `circuit` into `out_dir` (file names start with `prefix`); returns the paths written."""
    circuit = circuit.to_json() if isinstance(circuit, CircuitGraph) else circuit
    opt = opt or ExportOptions()
    out_dir = Path(out_dir)
    nodes, edges = select_drawn(circuit, opt)
    paths = draw_matplotlib(circuit, nodes, edges, out_dir / f"{prefix}circuit")
    paths.append(write_text(out_dir / f"{prefix}circuit.dot", to_dot(circuit, nodes, edges)))
    graph = to_graph_json(circuit, nodes, edges, opt)
    errs = validate_graph(graph)
    if errs:
        raise ValueError(f"graph.json does not match GRAPH_SCHEMA: {errs[:3]}")
    paths.append(write_json(out_dir / f"{prefix}graph.json", graph))
    full = {**circuit, "drawn": {"options": asdict(opt), "nodes": [n["id"] for n in nodes], "edges": [[e["source"], e["target"]] for e in edges]}}
    paths.append(write_json(out_dir / f"{prefix}circuit_full.json", full))
    paths.append(write_text(out_dir / f"{prefix}circuit.html", to_html(circuit, nodes, edges)))
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
