"""The sweep's phase diagram: final test_id, final test_ood_sys (Wang et al. 2024's systematic OOD split) and steps
to valid_id >= 0.9 over two grid axes, one row of panels per combination of the other grid keys (a family axis
among them; a key that one axis determines, e.g. a step budget per family set through `exclude`, goes into that axis's
tick labels instead). With a sweep's `seeds`, each cell is the seeds' mean and its text the range (min–max) beneath it;
steps average the seeds that got there ("k/n" says how many did; "not by N" where none did within its N steps); a
setting with unfinished runs says of how many its cell is ("1 of 3 runs"); accuracies stand over the split's majority-answer
rate, which differs by family."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from sae_ooc.viz.plots import fail_soft, plt, save_figure

METRICS = (("test_id", "final test_id accuracy", "viridis"), ("test_ood_sys", "final test_ood_sys accuracy", "viridis"),
           ("steps", "steps to valid_id ≥ 0.9 (blank: not reached)", "magma_r"))


def _label(v) -> str:
    return "" if v is None else ("true" if v else "false") if isinstance(v, bool) else str(v)  # None: a sweep with one axis


def _tick(v, fold: dict[str, dict]) -> str:
    return "\n".join([_label(v)] + [f"{k}={_label(m[v])}" for k, m in fold.items() if v in m])  # the full key: train.steps is a budget


def _value(rec, metric: str):
    if metric == "steps":
        return rec.valid_id_0_9_step
    return rec.accuracy.get(metric)


def cell(recs: list, metric: str) -> tuple[float | None, str]:
    """(colour value, text) of one setting over its finished seeds' records (SweepPoint)."""
    vals = [_value(r, metric) for r in recs]
    got = [float(v) for v in vals if v is not None and np.isfinite(v)]
    if not got:  # a step count is "not reached within the run's budget", not "never"
        return None, f"not by\n{max(r.steps for r in recs)}" if metric == "steps" else "n/a"  # steps it ran
    mean = float(np.mean(got))
    text = str(int(round(mean))) if metric == "steps" else f"{mean:.2f}"
    if len(got) > 1:
        lo, hi = min(got), max(got)
        text += f"\n{int(lo)}–{int(hi)}" if metric == "steps" else f"\n{lo:.2f}–{hi:.2f}"
    if metric == "steps" and len(got) < len(vals):
        text += f"\n{len(got)}/{len(vals)}"
    chance = [r.majority_rate.get(metric) for r in recs if metric != "steps" and r.majority_rate.get(metric) is not None]
    if chance:  # what always answering the split's most common answer scores: 0.06 for a two-hop tail, ~0.48 for lt/eq/gt
        text += f"\nmajority {np.mean(chance):.2f}"
    return mean, text


def folded(points, axis: str | None, others: list[str]) -> dict[str, dict]:
    """{key: {axis value: key value}} for each key of `others` that `axis` determines over the grid's points (one value
    per axis value): shown in the axis's tick labels rather than as a row of panels per value, half of them empty."""
    out = {}
    for k in others if axis else []:
        seen: dict = {}
        if all(seen.setdefault(p.values[axis], p.values[k]) == p.values[k] for p in points):
            out[k] = seen
    return out


@fail_soft
def plot_phase(sw, points, done: dict, stem: Path) -> list[Path]:
    """`done`: {slug: sae_ooc.sweep.result.SweepPoint} of the finished points."""
    x, y = sw.axes()
    xs = sw.grid[x] if x else [None]
    ys = sw.grid[y] if y else [None]
    others = [k for k in sw.grid if k not in (x, y)]
    varied = [k for k in others if len(sw.grid[k]) > 1]  # a one-value key stays in the panel titles
    fold = {axis: folded(points, axis, varied) for axis in (y, x)}
    fold[x] = {k: v for k, v in fold[x].items() if k not in fold[y]}  # a key both axes determine: on the y axis
    others = [k for k in others if k not in fold[y] and k not in fold[x]]
    facets = list(itertools.product(*(sw.grid[k] for k in others))) or [()]
    by_values: dict[tuple, list] = {}  # a setting -> its finished seeds' records
    n_runs: dict[tuple, int] = {}  # a setting -> its runs, finished or not
    for p in points:
        key = tuple(sorted(p.values.items(), key=str))
        recs = by_values.setdefault(key, [])
        n_runs[key] = n_runs.get(key, 0) + 1
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
                    cell_values = {**fixed, **({x: xv} if x else {}), **({y: yv} if y else {})}
                    for axis, av in ((x, xv), (y, yv)):
                        cell_values.update({k: m[av] for k, m in fold[axis].items() if av in m})
                    key = tuple(sorted(cell_values.items(), key=str))
                    recs = by_values.get(key)
                    v, text = cell(recs, metric) if recs else (None, "n/a" if recs is None else "…")
                    if recs and len(recs) < n_runs[key]:  # a mean of fewer seeds than the others: say so in the cell
                        text += f"\n({len(recs)} of {n_runs[key]} runs)"
                    if v is not None:
                        grid[i, j] = v
                    texts[i, j] = text
            vmax = max_steps if metric == "steps" else 1.0
            im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, aspect="auto", origin="lower")
            for (i, j), text in texts.items():
                v = grid[i, j]
                r, g, b, _ = im.cmap(im.norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
            ax.set_xticks(range(len(xs)), [_tick(v, fold[x]) for v in xs])
            ax.set_yticks(range(len(ys)), [_tick(v, fold[y]) for v in ys])
            ax.set_xlabel(x or "")
            ax.set_ylabel(y or "")
            sub = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in fixed.items())
            ax.set_title(title + (f"\n{sub}" if sub else ""), fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    seeds = getattr(sw, "seeds", None)
    fig.suptitle(f"sweep {sw.name}: {len(done)} of {len(points)} runs (n/a: excluded, …: not finished)"
                 + (f"; mean and range over seeds {', '.join(map(str, seeds))}" if seeds else ""))
    return save_figure(fig, stem, tight_layout=True)
