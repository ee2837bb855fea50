"""The sweep's phase diagram: final test_id, final test_ood_sys (Wang et al. 2024's systematic OOD split) and steps
to valid_id >= 0.9 over two grid axes, one row of panels per combination of the other grid keys (a family axis
among them). With a sweep's `seeds`, each cell is the seeds' mean and its text the range (min–max) beneath it;
steps average the seeds that got there ("k/n" says how many did)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from sae_ooc.viz.plots import fail_soft, plt, save_figure

METRICS = (("test_id", "final test_id accuracy", "viridis"), ("test_ood_sys", "final test_ood_sys accuracy", "viridis"),
           ("steps", "steps to valid_id ≥ 0.9 (blank: never)", "magma_r"))


def _label(v) -> str:
    return "" if v is None else ("true" if v else "false") if isinstance(v, bool) else str(v)  # None: a sweep with one axis


def _value(rec, metric: str):
    if metric == "steps":
        return rec.valid_id_0_9_step
    return rec.accuracy.get(metric)


def cell(recs: list, metric: str) -> tuple[float | None, str]:
    """(colour value, text) of one setting over its finished seeds' records (SweepPoint)."""
    vals = [_value(r, metric) for r in recs]
    got = [float(v) for v in vals if v is not None and np.isfinite(v)]
    if not got:
        return None, "never" if metric == "steps" else "n/a"
    mean = float(np.mean(got))
    text = str(int(round(mean))) if metric == "steps" else f"{mean:.2f}"
    if len(got) > 1:
        lo, hi = min(got), max(got)
        text += f"\n{int(lo)}–{int(hi)}" if metric == "steps" else f"\n{lo:.2f}–{hi:.2f}"
    if metric == "steps" and len(got) < len(vals):
        text += f"\n{len(got)}/{len(vals)}"
    return mean, text


@fail_soft
def plot_phase(sw, points, done: dict, stem: Path) -> list[Path]:
    """`done`: {slug: sae_ooc.sweep.result.SweepPoint} of the finished points."""
    x, y = sw.axes()
    xs = sw.grid[x] if x else [None]
    ys = sw.grid[y] if y else [None]
    others = [k for k in sw.grid if k not in (x, y)]
    facets = list(itertools.product(*(sw.grid[k] for k in others))) or [()]
    by_values: dict[tuple, list] = {}  # a setting -> its finished seeds' records
    for p in points:
        recs = by_values.setdefault(tuple(sorted(p.values.items(), key=str)), [])
        if p.slug in done:
            recs.append(done[p.slug])
    max_steps = max((r.max_steps for r in done.values()), default=1)
    cell_h = 0.85 if getattr(sw, "seeds", None) else 0.55  # a cell's text: mean, range, and for steps how many seeds got there
    fig, axes = plt.subplots(len(facets), 3, figsize=(4.2 * 3, 0.9 + cell_h * len(ys) * len(facets) + 1.2 * len(facets)), squeeze=False)
    for row, facet in enumerate(facets):
        fixed = dict(zip(others, facet))
        for col, (metric, title, cmap) in enumerate(METRICS):
            ax = axes[row, col]
            grid = np.full((len(ys), len(xs)), np.nan)
            texts = {}
            for i, yv in enumerate(ys):
                for j, xv in enumerate(xs):
                    key = tuple(sorted({**fixed, **({x: xv} if x else {}), **({y: yv} if y else {})}.items(), key=str))
                    recs = by_values.get(key)
                    v, text = cell(recs, metric) if recs else (None, "n/a" if recs is None else "…")
                    if v is not None:
                        grid[i, j] = v
                    texts[i, j] = text
            vmax = max_steps if metric == "steps" else 1.0
            im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, aspect="auto", origin="lower")
            for (i, j), text in texts.items():
                v = grid[i, j]
                r, g, b, _ = im.cmap(im.norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
            ax.set_xticks(range(len(xs)), [_label(v) for v in xs])
            ax.set_yticks(range(len(ys)), [_label(v) for v in ys])
            ax.set_xlabel(x or "")
            ax.set_ylabel(y or "")
            sub = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in fixed.items())
            ax.set_title(title + (f"\n{sub}" if sub else ""), fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    seeds = getattr(sw, "seeds", None)
    fig.suptitle(f"sweep {sw.name}: {len(done)} of {len(points)} runs (n/a: excluded, …: not finished)"
                 + (f"; mean and range over seeds {', '.join(map(str, seeds))}" if seeds else ""))
    fig.tight_layout()
    return save_figure(fig, stem)
