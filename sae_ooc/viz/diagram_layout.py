"""A layered layout for circuit diagrams (pure Python; the caller measures the boxes).

Rows are the hooks in forward order (bottom to top), the metric node on top; columns are the token
positions. Every node is a box as large as its measured text, in the cell (hook, position) it belongs to.
Within a cell the boxes are ordered to reduce edge crossings (barycenter ordering: a few sweeps up and down,
each sorting a cell by the mean x of the node's neighbours in the rows below, then above). A cell too wide for
its column's share of `max_width` is folded into tiers: the i-th box (left to right) goes to tier i mod t,
at x = i * slot / t, so boxes of one tier are a whole slot apart and a box's vertical edges pass through the
gap between the boxes of the tier above. Rows are spaced by their tallest box, so nothing overlaps.
Coordinates are in points (or any unit the sizes are in), origin bottom-left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Box:
    x: float  # left
    y: float  # bottom
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def top(self) -> float:
        return self.y + self.h

    def overlaps(self, o: Box) -> bool:
        return self.x < o.x + o.w and o.x < self.x + self.w and self.y < o.y + o.h and o.y < self.y + self.h


@dataclass(frozen=True)
class Spacing:
    """Gaps, in the unit of the box sizes."""

    box: float = 8.0  # between boxes of one tier
    tier: float = 8.0  # between the tiers of a row
    row: float = 30.0  # between rows: room to see the edges
    col: float = 16.0  # between position columns
    empty_row: float = 12.0  # height of a hook row without nodes

    @classmethod
    def for_font(cls, size: float) -> Spacing:
        return cls(box=size, tier=size, row=3.5 * size, col=2 * size, empty_row=1.5 * size)


@dataclass
class Layout:
    boxes: dict[str, Box]  # node id -> its box (the sink: the square around its diamond)
    rows: list[tuple[float, float]]  # (bottom, top) of each hook's row, then of the metric row
    cols: list[tuple[float, float]]  # (left, right) of each position column
    width: float
    height: float
    sink_label: Box | None = None  # beside the sink, never over it
    tiers: dict[tuple[int, int], int] = field(default_factory=dict)  # (row, column) -> tiers of that cell


def budgets(natural: list[float], total: float) -> list[float]:
    """Width per column: every column its natural width if they fit; else water-filling: columns narrower than an
    equal share of what is left keep their width, the others share the rest equally."""
    if sum(natural) <= total:
        return list(natural)
    fixed: set[int] = set()
    while True:
        wide = [c for c in range(len(natural)) if c not in fixed]
        share = (total - sum(natural[c] for c in fixed)) / len(wide)
        newly = {c for c in wide if natural[c] <= share}
        if not newly:
            return [natural[c] if c in fixed else share for c in range(len(natural))]
        fixed |= newly


def n_tiers(widths: list[float], budget: float, gap: float) -> int:
    """Fewest tiers that fold boxes of these widths into `budget` (one tier each when even that is too narrow)."""
    if sum(widths) + gap * (len(widths) - 1) <= budget or len(widths) < 2:
        return 1
    wmax = max(widths)
    if budget <= wmax:
        return len(widths)
    return min(len(widths), max(2, math.ceil((len(widths) - 1) * (wmax + gap) / (budget - wmax))))


def cell_width(widths: list[float], tiers: int, gap: float) -> float:
    if tiers == 1:
        return sum(widths) + gap * (len(widths) - 1)
    wmax = max(widths)
    return (len(widths) - 1) * (wmax + gap) / tiers + wmax


def layered_layout(nodes: list[tuple[str, int, int]], sizes: dict[str, tuple[float, float]], edges: list[tuple[str, str]],
                   n_rows: int, n_cols: int, max_width: float, sp: Spacing = Spacing(), col_min: list[float] | None = None,
                   sink: tuple[str, float, tuple[float, float]] | None = None, sweeps: int = 4) -> Layout:
    """Lay out `nodes` [(id, row, column)] (in priority order: ties keep it) with box `sizes` {id: (w, h)}.

    `edges` [(source, target)] guide the ordering; `sink` (id, diamond size, label size) is placed in a row of its
    own on top, at the mean x of its sources, with its label to its right."""
    cells: dict[tuple[int, int], list[str]] = {}
    for nid, r, c in nodes:
        cells.setdefault((r, c), []).append(nid)
    col_min = col_min or [0.0] * n_cols
    natural = [max([cell_width([sizes[i][0] for i in ids], 1, sp.box) for (_, c2), ids in cells.items() if c2 == c] + [col_min[c]])
               for c in range(n_cols)]
    budget = budgets(natural, max_width - sp.col * (n_cols - 1))
    tiers = {k: n_tiers([sizes[i][0] for i in ids], budget[k[1]], sp.box) for k, ids in cells.items()}
    col_w = [max([cell_width([sizes[i][0] for i in ids], tiers[k], sp.box) for k, ids in cells.items() if k[1] == c] + [col_min[c]])
             for c in range(n_cols)]
    cols, x = [], 0.0
    for w in col_w:
        cols.append((x, x + w))
        x += w + sp.col
    width = max(x - sp.col, 0.0)

    # rows: a row has as many tiers as its most folded cell, each as tall as the row's tallest box
    rows, tier_h, y = [], [], 0.0
    for r in range(n_rows):
        members = [i for (r2, _), ids in cells.items() if r2 == r for i in ids]
        h = max((sizes[i][1] for i in members), default=0.0)
        t = max((tiers[k] for k in cells if k[0] == r), default=0)
        height = t * h + (t - 1) * sp.tier if t else sp.empty_row
        rows.append((y, y + height))
        tier_h.append(h)
        y += height + sp.row

    order = {k: list(ids) for k, ids in cells.items()}
    xs: dict[str, float] = {}
    boxes: dict[str, Box] = {}

    def place(k: tuple[int, int]) -> None:
        ids, t = order[k], tiers[k]
        ws = [sizes[i][0] for i in ids]
        left = cols[k[1]][0] + (col_w[k[1]] - cell_width(ws, t, sp.box)) / 2
        wmax = max(ws)
        for j, i in enumerate(ids):
            w, h = sizes[i]
            if t == 1:
                bx = left + sum(ws[:j]) + sp.box * j
            else:
                bx = left + j * (wmax + sp.box) / t + (wmax - w) / 2
            by = rows[k[0]][0] + (j % t) * (tier_h[k[0]] + sp.tier) + (tier_h[k[0]] - h) / 2
            boxes[i] = Box(bx, by, w, h)
            xs[i] = bx + w / 2

    for k in order:
        place(k)
    row_of = {nid: r for nid, r, _ in nodes}
    preds: dict[str, list[str]] = {nid: [] for nid in row_of}
    succs: dict[str, list[str]] = {nid: [] for nid in row_of}
    for s, t in edges:
        if s in row_of and t in row_of and row_of[s] != row_of[t]:
            lo, hi = (s, t) if row_of[s] < row_of[t] else (t, s)
            succs[lo].append(hi)
            preds[hi].append(lo)

    def reorder(r: int, nbrs: dict[str, list[str]]) -> None:
        for k in [k for k in order if k[0] == r]:
            key = {i: (sum(xs[j] for j in nbrs[i]) / len(nbrs[i]) if nbrs[i] else xs[i]) for i in order[k]}
            order[k].sort(key=lambda i: key[i])  # stable: ties keep the current order
            place(k)

    for _ in range(sweeps):
        for r in range(1, n_rows):
            reorder(r, preds)
        for r in range(n_rows - 2, -1, -1):
            reorder(r, succs)

    layout = Layout(boxes, rows, cols, width, max(y - sp.row, 0.0), tiers=tiers)
    if sink is not None:
        _place_sink(layout, sink, [xs[s] for s, t in edges if t == sink[0] and s in xs], sp)
    return layout


def _place_sink(layout: Layout, sink: tuple[str, float, tuple[float, float]], sources: list[float], sp: Spacing) -> None:
    """The metric node in a row of its own on top, at the mean x of its sources, its label to its right."""
    sid, d, (lw, lh) = sink
    h = max(d, lh)
    y0 = layout.height + sp.row if layout.rows else 0.0
    cx = sum(sources) / len(sources) if sources else layout.width / 2
    cx = min(cx, layout.width - lw - sp.box - d / 2)  # keep the label inside the diagram where there is room
    cx = max(cx, d / 2)
    layout.boxes[sid] = Box(cx - d / 2, y0 + (h - d) / 2, d, d)
    layout.sink_label = Box(cx + d / 2 + sp.box / 2, y0 + (h - lh) / 2, lw, lh)
    layout.rows.append((y0, y0 + h))
    layout.width = max(layout.width, layout.sink_label.x + lw)
    layout.height = y0 + h
