"""The circuit diagram (circuit.png / circuit.svg): measured boxes in a layered layout, with a legend.

`plan_diagram` measures every node's text with matplotlib's renderer and lays the boxes out
(sae_ooc.viz.diagram_layout); the PNG/SVG here and the HTML page (sae_ooc.viz.circuit_html) draw the same plan.
Units are points: the axes span the whole figure and one data unit is one point, so a box drawn at the
measured size holds its text at any figure size.

Encoding: box fill is the sign of the node's effect (red: patching the node to its corrupted value lowers the
metric, i.e. it carries the clean answer; blue: it raises it), darker for larger |effect|; SAE error nodes are
square boxes with a dashed border; the metric is a green diamond. Edge colour is the sign of its weight (the
same convention), width its |weight|. Edges run upward, from a node's top to the bottom of a later node.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from matplotlib.colors import to_hex, to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Patch, Polygon, Rectangle

from sae_ooc.viz.diagram_layout import Layout, Spacing, layered_layout
from sae_ooc.viz.node_labels import effect_name, heading, node_lines, plural, score_text, sink_id
from sae_ooc.viz.plots import plt

NEG, POS, METRIC = "#d62728", "#1f77b4", "#2ca02c"
FONT = 8.0  # points: 14 px at the 130 dpi the figures are saved at
LINESPACING = 1.25
DPI = 130
PNG_MAX_WIDTH = 13 * 72.0  # points: about 1700 px wide at 130 dpi; wider cells fold into tiers
# a diagram folded much taller than wide (many nodes in few cells: one box per tier, a staircase) gets more width, up
# to WIDEN[-1] times the maximum: the first width at which the node area is at most TALL times as high as wide
WIDEN = (1.0, 1.25, 1.5, 1.75, 2.0)
TALL = 1.25
COL_MIN = 3.0  # font sizes: the narrowest position column (an empty one is a band, not a sliver)
TITLE_CHARS = 140
# a node's border by its type, in the PNG, its legend and the HTML page: (line style, width, rounded corners, words).
# Each type its own: a legend with one symbol for two kinds (variable and remainder nodes) cannot be read
NODE_STYLE = {"feature": ("-", 0.8, True, "rounded box"), "error": ("--", 0.8, False, "dashed square"),
              "variable": ("-", 2.0, True, "thick border"), "remainder": (":", 2.0, False, "thick dotted square")}
OTHER_STYLE = ("-.", 2.0, True, "thick dash-dot border")


def node_style(kind: str) -> tuple[str, float, bool, str]:
    return NODE_STYLE.get(kind, OTHER_STYLE)


def fill(effect: float, emax: float) -> str:
    """The sign colour, mixed with white by |effect| / max |effect| (from 20% to 70%: the text stays readable)."""
    a = 0.2 + 0.5 * (abs(effect) / emax if emax > 0 else 0.0)
    c = to_rgb(NEG if effect < 0 else POS)
    return to_hex(tuple(1 - a + a * v for v in c))


def edge_width(weight: float, wmax: float, lo: float = 0.5, hi: float = 4.0) -> float:
    return lo + (hi - lo) * (abs(weight) / wmax if wmax > 0 else 0.0)


def measure(texts: list[str], fontsize: float, **props) -> list[tuple[float, float]]:
    """(width, height) in points of each text as matplotlib renders it at the figures' dpi."""
    fig = plt.figure(dpi=DPI)
    renderer = fig.canvas.get_renderer()
    out = []
    for s in texts:
        t = fig.text(0, 0, s, fontsize=fontsize, linespacing=LINESPACING, **props)
        bb = t.get_window_extent(renderer)
        out.append((bb.width * 72 / DPI, bb.height * 72 / DPI))
        t.remove()
    plt.close(fig)
    return out


@dataclass
class Plan:
    layout: Layout
    text: dict[str, str]  # node id -> the text of its box
    sink_text: str
    row_names: list[str]  # hooks, then "metric"
    row_label_width: float
    fontsize: float


def plan_diagram(circuit: dict, nodes: list[dict], edges: list[dict], fontsize: float = FONT, max_width: float = PNG_MAX_WIDTH) -> Plan:
    """Measure and lay out the drawn nodes; `max_width` (points) is for the whole diagram, row labels included."""
    meta = circuit["metadata"]
    positions, hooks = list(meta["positions"]), list(meta["hooks"])
    text = {n["id"]: "\n".join(node_lines(n, positions)) for n in nodes}
    sink_text = f"metric: {meta['sink']['description']}"
    rows = hooks + ["metric"]
    ids = list(text)
    sized = measure([text[i] for i in ids] + [sink_text] + rows + positions, fontsize, ha="center", multialignment="center")
    pad_x, pad_y = 0.6 * fontsize, 0.4 * fontsize
    sizes = {i: (w + 2 * pad_x, h + 2 * pad_y) for i, (w, h) in zip(ids, sized)}
    sink_size, row_sizes, col_sizes = sized[len(ids)], sized[len(ids) + 1: len(ids) + 1 + len(rows)], sized[len(ids) + 1 + len(rows):]
    row_label_width = max(w for w, _ in row_sizes)
    order = sorted(nodes, key=lambda n: (n["type"] == "error", -abs(n["effect"])))  # ties in the ordering keep this
    layout = layered_layout([(n["id"], n["hook_index"], n["position"]) for n in order], sizes,
                            [(e["source"], e["target"]) for e in edges], len(hooks), len(positions),
                            max_width - row_label_width - 2 * fontsize, Spacing.for_font(fontsize),
                            col_min=[max(w, COL_MIN * fontsize) for w, _ in col_sizes], sink=(sink_id(circuit), 1.8 * fontsize, sink_size))
    return Plan(layout, text, sink_text, rows, row_label_width, fontsize)


def caption(circuit: dict, nodes: list[dict], edges: list[dict], unlinked: int) -> list[str]:
    """Title lines: what the circuit is of, what is drawn (`unlinked`: how many of the nodes without a drawn edge), and its scores."""
    drawn = (f"{plural(sum(n['type'] == 'feature' for n in nodes), 'feature node')}, "
             f"{plural(sum(n['type'] == 'error' for n in nodes), 'SAE error node')}"
             + "".join(f", {plural(k, t + ' node')}" for t in sorted({n['type'] for n in nodes} - {"feature", "error"})
                       for k in [sum(n['type'] == t for n in nodes)])
             + f" and {plural(len(edges), 'edge')} drawn; box text: {effect_name(circuit['metadata'])}")
    if unlinked:
        drawn += f"; {plural(unlinked, 'node')} of these without an edge at or above the drawing threshold (every edge is in circuit_full.json)"
    return [heading(circuit["metadata"]), drawn, score_text(circuit)]


def _swatch(kind: str, label: str) -> Patch:
    ls, lw, _, words = node_style(kind)
    return Patch(facecolor="white", edgecolor="black", linestyle=ls, linewidth=lw, label=f"{label} ({words})")


def legend_handles(nodes: list[dict], wmax: float) -> list:
    h = [Patch(facecolor=fill(-1, 2), edgecolor="black", label="node effect < 0: patching it lowers the metric (carries the clean answer)"),
         Patch(facecolor=fill(1, 2), edgecolor="black", label="node effect > 0: patching it raises the metric; darker: larger |effect|"),
         _swatch("feature", "SAE feature node"), _swatch("error", "SAE error node: what the SAE does not reconstruct"),
         Line2D([], [], color=METRIC, marker="D", ls="", markeredgecolor="black", label="metric node"),
         Line2D([], [], color=NEG, lw=2, label="edge weight < 0: patching the edge lowers the metric"),
         Line2D([], [], color=POS, lw=2, label="edge weight > 0: patching the edge raises the metric")]
    for t in sorted({n["type"] for n in nodes} - {"feature", "error"}, reverse=True):
        h.insert(4, _swatch(t, f"{t} node"))
    if wmax > 0:
        h += [Line2D([], [], color="grey", lw=edge_width(w, wmax), label=f"|edge weight| {w:.3g}") for w in (wmax, wmax / 2, wmax / 10)]
    return h


@dataclass
class Drawing:
    fig: object
    node_text: dict  # node id -> its Text
    node_patch: dict  # node id -> its box
    texts: list  # every other text: title, row and column labels, the metric's label
    legend: object


def draw_diagram(circuit: dict, nodes: list[dict], edges: list[dict], unlinked: int = 0, fontsize: float = FONT,
                 max_width: float = PNG_MAX_WIDTH) -> Drawing:
    for widen in WIDEN:
        plan = plan_diagram(circuit, nodes, edges, fontsize, max_width * widen)
        if plan.layout.height <= TALL * plan.layout.width:
            break
    lay, fs = plan.layout, fontsize
    emax = max((abs(n["effect"]) for n in nodes), default=0.0)
    wmax = max((abs(e["weight"]) for e in edges), default=0.0)
    fig = plt.figure(dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    legend = None
    for ncol in (2, 1):  # two columns unless that is wider than the diagram
        if legend is not None:
            legend.remove()
        legend = ax.legend(handles=legend_handles(nodes, wmax), loc="lower left", ncol=ncol, fontsize=fs, frameon=False,
                           borderaxespad=0, borderpad=0, handlelength=2.5, title="legend", title_fontsize=fs, alignment="left")
        bb = legend.get_window_extent(fig.canvas.get_renderer())
        leg_w, leg_h = bb.width * 72 / DPI, bb.height * 72 / DPI
        if leg_w <= plan.row_label_width + lay.width + 2 * fs:
            break
    title = "\n".join(line for c in caption(circuit, nodes, edges, unlinked) for line in textwrap.wrap(c, TITLE_CHARS))
    (title_w, title_h), = measure([title], fs)
    m = fs
    ox = m + plan.row_label_width + fs  # where the node area starts
    oy = m + leg_h + 1.5 * fs + 1.3 * fs  # above the legend and the column headings
    top = oy + lay.height
    W = max(ox + lay.width + m, leg_w + 2 * m, title_w + 2 * m)
    H = top + fs + title_h + m
    fig.set_size_inches(W / 72, H / 72)
    ax.set_xlim(0, W)
    ax.set_ylim(0, H)
    legend.set_bbox_to_anchor((m, m), transform=ax.transData)

    texts = [ax.text(m, H - m, title, ha="left", va="top", fontsize=fs, linespacing=LINESPACING)]
    for c, ((c0, c1), role) in enumerate(zip(lay.cols, circuit["metadata"]["positions"])):
        ax.add_patch(Rectangle((ox + c0 - fs / 2, oy - 0.3 * fs), c1 - c0 + fs, lay.height + 0.3 * fs, color="#f3f3f3", zorder=0))
        texts.append(ax.text(ox + (c0 + c1) / 2, oy - 0.5 * fs, role, ha="center", va="top", fontsize=fs, fontweight="bold"))
    for (r0, r1), name in zip(lay.rows, plan.row_names):
        texts.append(ax.text(ox - fs, oy + (r0 + r1) / 2, name, ha="right", va="center", fontsize=fs, color="#333333"))

    box = {i: (b.x + ox, b.y + oy, b.w, b.h) for i, b in lay.boxes.items()}
    for e in sorted(edges, key=lambda e: abs(e["weight"])):  # the strongest on top
        (sx, sy, sw, sh), (tx, ty, tw, _) = box[e["source"]], box[e["target"]]
        ax.plot([sx + sw / 2, tx + tw / 2], [sy + sh, ty], color=NEG if e["weight"] < 0 else POS, alpha=0.55,
                lw=edge_width(e["weight"], wmax), solid_capstyle="butt", zorder=1)
    node_text, node_patch = {}, {}
    for n in nodes:
        x, y, w, h = box[n["id"]]
        ls, lw, rounded, _ = node_style(n["type"])
        node_patch[n["id"]] = ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=f"round,pad=0,rounding_size={0.5 * fs}" if rounded else "square,pad=0",
                                    facecolor=fill(n["effect"], emax), edgecolor="black", zorder=3, linestyle=ls, linewidth=lw))
        node_text[n["id"]] = ax.text(x + w / 2, y + h / 2, plan.text[n["id"]], ha="center", va="center", multialignment="center",
                                     fontsize=fs, linespacing=LINESPACING, zorder=4)
    sx, sy, d, _ = box[sink_id(circuit)]
    ax.add_patch(Polygon([(sx + d / 2, sy), (sx + d, sy + d / 2), (sx + d / 2, sy + d), (sx, sy + d / 2)], closed=True,
                         facecolor=METRIC, edgecolor="black", zorder=3))
    sl = lay.sink_label
    texts.append(ax.text(ox + sl.x, oy + sl.cy, plan.sink_text, ha="left", va="center", fontsize=fs, zorder=4))
    return Drawing(fig, node_text, node_patch, texts, legend)
