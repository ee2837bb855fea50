"""Every figure is written as PNG and SVG, atomically, with the Agg backend (no display needed).

No figure may stop a stage: every public `plot_*` function is wrapped in `fail_soft`, which turns an exception into
one warning line and an "n/a" figure at the same path. Tests set SAE_OOC_STRICT_FIGURES=1 (tests/conftest.py) so a
broken figure still fails them. Error bars come from `err_bars`, which never hands matplotlib a negative length."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
# same data, same bytes: no creation date in the files, and SVG element ids from a fixed salt
matplotlib.rcParams["svg.hashsalt"] = "sae_ooc"
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.layout_engine import TightLayoutEngine  # noqa: E402

from sae_ooc.io import _atomic  # noqa: E402

STRICT_ENV = "SAE_OOC_STRICT_FIGURES"  # set (to anything but "" or "0"): a failing figure raises instead of warning
DPI = 130
FORMATS = ("png", "svg")  # a test drawing many figures may keep only a low-dpi PNG (tests/test_plots_edge_cases.py)


def save_figure(fig, stem: str | Path, dpi: int | None = None, tight_layout: bool | dict = False) -> list[Path]:
    """Save `fig` to `stem.png` and `stem.svg` and close it; returns the two paths. `DPI` caps the resolution.

    `tight_layout` (True, or the keyword arguments of `Figure.tight_layout`) lays the figure out here, once, rather
    than in the plot function: a figure that is not written (`FORMATS` empty, as in most tests) needs no layout, and
    one laid out without `Figure.tight_layout` keeps no layout engine, which would cost savefig one more draw per file
    (it leaves a placeholder engine, and savefig draws once more for any figure that has one)."""
    stem = Path(stem)
    if not FORMATS:
        plt.close(fig)
        return []
    dpi = min(dpi or DPI, DPI)
    lay_out(fig, tight_layout)
    # bbox_inches="tight" lays the figure out once more for every file written; one tight box (what savefig computes
    # for the PNG: the same bytes) serves both files, a fifth less drawing for a text-heavy figure. Not for one file,
    # nor for a figure with a layout engine: savefig lays those out again anyway
    bbox = "tight"
    if len(FORMATS) > 1 and fig.get_layout_engine() is None:
        fig.set_dpi(dpi)
        fig.draw_without_rendering()
        bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
    paths = []
    for ext in FORMATS:
        path = stem.with_suffix(f".{ext}")
        meta = {"Date": None} if ext == "svg" else None
        _atomic(path, lambda p, ext=ext, meta=meta: fig.savefig(p, format=ext, dpi=dpi, bbox_inches=bbox, metadata=meta))
        paths.append(path)
    plt.close(fig)
    return paths


def lay_out(fig, tight_layout: bool | dict = False) -> None:
    """What `Figure.tight_layout(**tight_layout)` does to `fig` (nothing for False), leaving no layout engine behind."""
    if tight_layout:
        TightLayoutEngine(**({} if tight_layout is True else tight_layout)).execute(fig)


def floats(x) -> np.ndarray:
    """A 1-d float array, None as NaN (matplotlib leaves a NaN point or bar out)."""
    return np.atleast_1d(np.array([np.nan if v is None else v for v in np.atleast_1d(np.asarray(x, dtype=object))], dtype=float))


def err_bars(value, lo, hi) -> np.ndarray:
    """`yerr`/`xerr` (2, n) for points `value` with intervals [lo, hi]: (value - lo, hi - value), each clipped at 0.

    A share of 0 with a float-rounded lower end, or a percentile interval that excludes its point, would otherwise
    give a negative length, which matplotlib refuses; a None or NaN value or end draws no bar on that side."""
    v, lo, hi = floats(value), floats(lo), floats(hi)
    return np.nan_to_num(np.stack([np.clip(v - lo, 0.0, None), np.clip(hi - v, 0.0, None)]), nan=0.0)


def na_axes(ax, what: str = "") -> None:
    """An "n/a" panel: no data to draw (no rows, or only missing values)."""
    ax.text(0.5, 0.5, "n/a" + (f"\n{what}" if what else ""), ha="center", va="center", fontsize=10, color="grey", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def mark_empty(ax, what: str = "no value measured") -> None:
    """An "n/a" note on a panel whose data lines and points hold no finite value (reference lines do not count)."""
    for ln in ax.lines:
        if ln.get_transform() == ax.transData and np.isfinite(floats(ln.get_ydata())).any():
            return
    for c in ax.collections:
        if np.isfinite(np.asarray(c.get_offsets(), dtype=float)).all(axis=-1).any():
            return
    ax.text(0.5, 0.5, f"n/a\n{what}", ha="center", va="center", fontsize=10, color="grey", transform=ax.transAxes)


def na_figure(stem: str | Path, title: str, what: str = "") -> list[Path]:
    """A figure that says "n/a" (and why) in place of one with nothing to draw."""
    fig, ax = plt.subplots(figsize=(5, 2.2))
    na_axes(ax, what)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, stem)


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def fail_soft(draw):
    """Wrap a figure function (with a `stem` argument) so that an exception in it never stops the stage: it prints one
    warning line naming the figure and the error, writes an "n/a" figure at `stem` and returns its paths. Under
    SAE_OOC_STRICT_FIGURES the exception propagates (tests: broken plot code must not hide)."""
    sig = inspect.signature(draw)

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        before = set(plt.get_fignums())
        try:
            return draw(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure of a figure, by design
            if strict():
                raise
            for num in set(plt.get_fignums()) - before:  # the half-drawn figure
                plt.close(num)
            stem = Path(sig.bind(*args, **kwargs).arguments["stem"])
            why = " ".join(str(e).split())  # one line, whatever the message
            print(f"warning: figure {stem.name} ({draw.__name__}) not drawn: {type(e).__name__}: {why}; an n/a figure stands in "
                  f"its place and the stage goes on", file=sys.stderr, flush=True)
            try:
                return na_figure(stem, stem.name, f"this figure could not be drawn ({type(e).__name__})")
            except Exception:  # noqa: BLE001 - e.g. an unwritable folder: the stage reports that itself
                return []

    return wrapper
