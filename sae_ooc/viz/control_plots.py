"""Figure of stage `variables`: the control curves, switch rate to t(b', r2) on held-out prefixes against the unit's size
(features exchanged, or rank), per unit kind and hook, with the residual patch above and random units below."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_ooc.viz.plots import fail_soft, floats, mark_empty, na_figure, plt, save_figure

CURVES = (("das", "DAS subspace (rank)", "tab:blue", "o"),
          ("supervised", "class-mean edit, top-r directions", "tab:green", "s"),
          ("top_features", "top-n SAE features by class-mean diff.", "tab:purple", "^"),
          ("random_subspace", "random subspace, matched norm", "tab:gray", "v"),
          ("random_features", "random SAE features, matched norm", "silver", "x"))
LINES = (("resid_patch", "residual patch (upper reference)", "black", "--"),
         ("sae_code_swap", "whole SAE code swapped", "tab:purple", ":"),
         ("supervised", "class-mean edit, full", "tab:green", ":"),
         ("labelled_features", "labelled single features", "tab:red", "-."))


def _short(hook: str) -> str:
    return hook.replace("blocks.", "L").replace(".hook_", " ")


@fail_soft
def plot_control_curves(result, stem: Path) -> list[Path]:
    rows = [r for r in result.rows if r.n_heldout > 0]
    if not rows:
        return na_figure(stem, "Where the bridge lives", "no held-out interchange pairs")
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.6, 3.6), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], rows):
        for kind, label, color, marker in CURVES:
            us = [r.units[u] for u in r.curves.get(kind, []) if r.units.get(u, {}).get("switch") is not None]
            if not us:
                continue
            x = np.array([u["size"] for u in us], dtype=float)
            y = np.array([u["switch"] for u in us])
            ax.plot(x, y, marker=marker, ms=3.5, lw=1.2, color=color, label=label)
            if "min" in us[0]:  # random references: their range over draws
                ax.fill_between(x, floats([u["min"] for u in us]), floats([u["max"] for u in us]), color=color, alpha=0.25, lw=0)
            elif all(u.get("ci95") for u in us):
                ax.fill_between(x, floats([u["ci95"][0] for u in us]), floats([u["ci95"][1] for u in us]), color=color, alpha=0.12, lw=0)
        for key, label, color, style in LINES:
            v = r.switch(key)
            if v is not None:
                ax.axhline(v, color=color, ls=style, lw=1.0, label=label)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("features exchanged / rank")
        ax.set_title(f"{_short(r.hook)} @ {r.position} (n {r.n_heldout}, {r.n_heads} heads)", fontsize=8)
        ax.grid(alpha=0.3, lw=0.5)
        mark_empty(ax)
    axes[0][0].set_ylabel("held-out answers switched to t(b', r2)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.22))
    fig.suptitle("Where the bridge lives: interchange interventions on held-out prefixes (band: 95% CI over heads; random: range over draws)",
                 fontsize=9)
    return save_figure(fig, stem)
