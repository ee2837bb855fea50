"""Every figure is written as PNG and SVG, atomically, with the Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# same data, same bytes: no creation date in the files, and SVG element ids from a fixed salt
matplotlib.rcParams["svg.hashsalt"] = "sae_ooc"
import matplotlib.pyplot as plt  # noqa: E402

from sae_ooc.io import _atomic  # noqa: E402


def save_figure(fig, stem: str | Path, dpi: int = 130) -> list[Path]:
    """Save `fig` to `stem.png` and `stem.svg` and close it; returns the two paths."""
    stem = Path(stem)
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        meta = {"Date": None} if ext == "svg" else None
        _atomic(path, lambda p, ext=ext, meta=meta: fig.savefig(p, format=ext, dpi=dpi, bbox_inches="tight", metadata=meta))
        paths.append(path)
    plt.close(fig)
    return paths
