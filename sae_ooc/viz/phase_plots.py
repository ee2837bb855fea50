"""The sweep's phase diagram: final test_id, steps to test_id >= 0.9 and test_ood over two grid axes, one row of
panels per combination of the other grid keys."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from sae_ooc.viz.plots import fail_soft, plt, save_figure

METRICS = (("test_id", "final test_id accuracy", "viridis"), ("steps", "steps to test_id ≥ 0.9 (blank: never)", "magma_r"),
           ("test_ood", "final test_ood accuracy", "viridis"))


def _label(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _value(rec, metric: str):
    if rec is None:
        return None
    return rec.test_id_0_9_step if metric == "steps" else rec.accuracy[metric]


@fail_soft
def plot_phase(sw, points, done: dict, stem: Path) -> list[Path]:
    """`done`: {slug: sae_ooc.sweep.result.SweepPoint} of the finished points."""
    x, y = sw.axes()
    xs = sw.grid[x] if x else [None]
    ys = sw.grid[y] if y else [None]
    others = [k for k in sw.grid if k not in (x, y)]
    facets = list(itertools.product(*(sw.grid[k] for k in others))) or [()]
    by_values = {tuple(sorted(p.values.items(), key=str)): done.get(p.slug) for p in points}
    max_steps = max((r.max_steps for r in done.values()), default=1)
    fig, axes = plt.subplots(len(facets), 3, figsize=(4.2 * 3, 0.9 + 0.55 * len(ys) * len(facets) + 1.2 * len(facets)), squeeze=False)
    for row, facet in enumerate(facets):
        fixed = dict(zip(others, facet))
        for col, (metric, title, cmap) in enumerate(METRICS):
            ax = axes[row, col]
            grid = np.full((len(ys), len(xs)), np.nan)
            texts = {}
            for i, yv in enumerate(ys):
                for j, xv in enumerate(xs):
                    key = tuple(sorted({**fixed, **({x: xv} if x else {}), **({y: yv} if y else {})}.items(), key=str))
                    rec = by_values.get(key)
                    v = _value(rec, metric)
                    if v is not None:
                        grid[i, j] = v
                    texts[i, j] = "n/a" if key not in by_values else ("…" if rec is None else ("never" if v is None else (
                        f"{v:.2f}" if metric != "steps" else str(int(v)))))
            vmax = max_steps if metric == "steps" else 1.0
            im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, aspect="auto", origin="lower")
            for (i, j), text in texts.items():
                v = grid[i, j]
                r, g, b, _ = im.cmap(im.norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
            ax.set_xticks(range(len(xs)), [_label(v) for v in xs])
            ax.set_yticks(range(len(ys)), [_label(v) for v in ys])
            ax.set_xlabel(x or "")
            ax.set_ylabel(y or "")
            sub = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in fixed.items())
            ax.set_title(title + (f"\n{sub}" if sub else ""), fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"sweep {sw.name}: {len(done)} of {len(points)} points (n/a: excluded, …: not finished)")
    fig.tight_layout()
    return save_figure(fig, stem)
