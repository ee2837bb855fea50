"""Figures of `sae-ooc compare`: the same curve of several runs side by side (one colour per run). Each takes plain
data ({run label: what compare.curves read, or None}) and draws an "n/a" panel for a run without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_ooc.hooks import hook_sort_key
from sae_ooc.viz.plots import fail_soft, floats, mark_empty, na_axes, plt, save_figure


def _colors(n: int):
    return [plt.cm.tab10(i % 10) for i in range(n)]


def _short(hook: str) -> str:
    return hook.replace("blocks.", "L").replace(".hook_", " ")


def _panels(data: dict[str, dict | None], keys_of, missing: str, width: float = 3.4):
    """One panel per key any run has (`keys_of(run's data)`, in first-seen order), sharing the y axis; an "n/a" panel
    saying `missing` when no run has any."""
    keys: list = []
    for d in data.values():
        keys += [k for k in (keys_of(d) if d else []) if k not in keys]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(width * max(len(keys), 1) + 0.4, 3.2), sharey=True, squeeze=False)
    if not keys:
        na_axes(axes[0][0], missing)
    return fig, axes[0], keys


def _finish(fig, axes, ylabel: str, title: str, stem: Path) -> list[Path]:
    axes[0].set_ylabel(ylabel)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9, y=1.03)
    return save_figure(fig, stem)


@fail_soft
def plot_compare_accuracy(curves: dict[str, dict | None], stem: Path) -> list[Path]:
    """One panel per split, accuracy against training step, one line per run."""
    fig, axes, splits = _panels(curves, list, "no model/metrics.jsonl in any run", width=3.2)
    for ax, split in zip(axes, splits):
        for color, (label, c) in zip(_colors(len(curves)), curves.items()):
            if c and split in c:
                ax.plot(c[split][0], floats(c[split][1]), color=color, lw=1.2, label=label)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(split, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, lw=0.5)
    return _finish(fig, axes, "accuracy", "Accuracy over training, per run", stem)


@fail_soft
def plot_compare_probes(probes: dict[str, dict | None], stem: Path) -> list[Path]:
    """One panel per position: held-out bridge probe accuracy by hook (solid), the largest control (dotted)."""
    fig, axes, positions = _panels(probes, lambda p: p["positions"], "no analyze/probes.json in any run")
    # one x axis for runs of different depths: every hook any run probed, in forward order
    hooks = sorted({h for p in probes.values() if p for h in p["hooks"]}, key=hook_sort_key)
    for ax, pos in zip(axes, positions):
        for color, (label, p) in zip(_colors(len(probes)), probes.items()):
            if not p or pos not in p["positions"]:
                continue
            j = p["positions"].index(pos)
            x = [hooks.index(h) for h in p["hooks"]]
            ax.plot(x, floats([row[j] for row in p["acc"]]), color=color, marker="o", ms=3, lw=1.2, label=label)
            if p.get("control"):
                ax.plot(x, floats([row[j] for row in p["control"]]), color=color, ls=":", lw=1.0)
        ax.set_xticks(range(len(hooks)), [_short(h) for h in hooks], rotation=45, ha="right", fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"bridge @ {pos}", fontsize=9)
        mark_empty(ax, "not measured at this position")
        ax.grid(alpha=0.3, lw=0.5)
    return _finish(fig, axes, "held-out probe accuracy (dotted: best control)", "Bridge probes by layer, per run", stem)


@fail_soft
def plot_compare_patching(maps: dict[str, dict | None], stem: Path) -> list[Path]:
    """resid_pre patching heatmaps (normalised effect, layer x position), one per run, on one colour scale."""
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 1.0, 3.0), squeeze=False)
    finite = [np.array(m["matrix"], dtype=float) for m in maps.values() if m]
    vmax = max([float(np.nanmax(np.abs(a))) for a in finite if a.size and np.isfinite(a).any()] or [1.0]) or 1.0
    im = None
    for ax, (label, m) in zip(axes[0], maps.items()):
        a = np.array(m["matrix"], dtype=float) if m else np.zeros((0, 0))
        if a.ndim != 2 or a.size == 0:
            na_axes(ax, "no analyze/patching.json" if not m else "empty patching matrix")
            ax.set_title(label, fontsize=9)
            continue
        im = ax.imshow(a, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xticks(range(a.shape[1]), m.get("roles") or range(a.shape[1]), fontsize=7)
        ax.set_yticks(range(a.shape[0]), [f"L{i}" for i in range(a.shape[0])], fontsize=7)
        ax.set_title(label, fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="normalised patching effect")
    fig.suptitle("Residual-stream (resid_pre) activation patching, per run", fontsize=9, y=1.03)
    return save_figure(fig, stem)


@fail_soft
def plot_compare_controls(controls: dict[str, dict | None], stem: Path,
                          kinds: tuple[str, ...] = ("das", "top_features", "random_features")) -> list[Path]:
    """Control curves of the variables stage: per hook@position a panel, per run a colour, per unit kind a line style;
    the residual patch as a dashed line in the run's colour."""
    styles = dict(zip(kinds, ("-", "--", ":")))
    fig, axes, panels = _panels(controls, list, "no variables/variables.json rows measured on held-out prefixes in any run")
    for ax, key in zip(axes, panels):
        for color, (label, c) in zip(_colors(len(controls)), controls.items()):
            panel = (c or {}).get(key)
            if not panel:
                continue
            for kind in kinds:
                if kind in panel:
                    x, y = panel[kind]
                    ax.plot(floats(x), floats(y), color=color, ls=styles[kind], marker="o", ms=2.5, lw=1.1,
                            label=f"{label}: {kind}")
            if panel.get("resid_patch") is not None:
                ax.axhline(panel["resid_patch"], color=color, ls="-.", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        hook, _, pos = key.partition("@")
        ax.set_title(f"{_short(hook)} @ {pos}", fontsize=9)
        ax.set_xlabel("features exchanged / rank")
        ax.grid(alpha=0.3, lw=0.5)
    axes[0].set_ylabel("held-out answers switched")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=6, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.25))
    without = [label for label, c in controls.items() if not c]
    fig.suptitle("Control curves of the variables stage, per run (dash-dot: the run's residual patch)"
                 + (f"\nno held-out rows in: {', '.join(without)}" if without else ""), fontsize=9, y=1.07 if without else 1.03)
    return save_figure(fig, stem)
