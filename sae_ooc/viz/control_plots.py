"""Figures of stage `variables`: the control curves, switch rate to the counterfactual answer on held-out prefixes against
the unit's size (features exchanged, or rank), per unit kind and hook, with the residual patch above and random units
below: the bridge at r1 (control_curves), and every other planted variable, one row of panels each (variable_curves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_ooc.records import given, opt
from sae_ooc.viz.plots import fail_soft, floats, mark_empty, na_axes, na_figure, plt, save_figure

CURVES = (("das", "DAS subspace (rank)", "tab:blue", "o"),
          ("supervised", "class-mean edit, top-r directions", "tab:green", "s"),
          ("top_features", "top-n SAE features by class-mean diff.", "tab:purple", "^"),
          ("sae_opt", "sae_opt: n SAE features chosen greedily", "tab:orange", "D"),
          ("random_subspace", "random subspace, matched norm", "tab:gray", "v"),
          ("random_features", "random SAE features, matched norm", "silver", "x"))
LINES = (("resid_patch", "residual patch (upper reference)", "black", "--"),
         ("sae_code_swap", "whole SAE code swapped", "tab:purple", ":"),
         ("supervised", "class-mean edit, full", "tab:green", ":"),
         ("labelled_features", "labelled single features", "tab:red", "-."))


def _short(hook: str) -> str:
    return hook.replace("blocks.", "L").replace(".hook_", " ")


def _panel(ax, r) -> None:
    for kind, label, color, marker in CURVES:
        us = [r.units[u] for u in r.curves.get(kind, []) if u in r.units and r.units[u].share is not None]
        if not us:
            continue
        x = np.array([u.size for u in us], dtype=float)
        y = np.array([u.switch for u in us])
        ax.plot(x, y, marker=marker, ms=3.5, lw=1.2, color=color, label=label)
        if given(us[0].min):  # random references: their range over draws
            ax.fill_between(x, floats([u.min for u in us]), floats([u.max for u in us]), color=color, alpha=0.25, lw=0)
        elif all(opt(u.ci95) for u in us):
            ax.fill_between(x, floats([u.ci95[0] for u in us]), floats([u.ci95[1] for u in us]), color=color, alpha=0.12, lw=0)
    for key, label, color, style in LINES:
        v = r.switch(key)
        if v is not None:
            ax.axhline(v, color=color, ls=style, lw=1.0, label=label)
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, lw=0.5)
    mark_empty(ax)


def _legend(fig, axes) -> None:
    seen = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), fontsize=7, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 0.0))


@fail_soft
def plot_control_curves(result, stem: Path, counterfactual: str = "t(b', r2)") -> list[Path]:
    """`counterfactual`: how the task names the answer a switched bridge b' gives (the family's high-level model)."""
    rows = [r for r in result.rows if r.n_heldout > 0 and r.variable == "bridge" and not r.pairs]
    if not rows:
        return na_figure(stem, "Where the bridge lives", "no held-out interchange pairs")
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.6, 4.6), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], rows):
        _panel(ax, r)
        ax.set_xlabel("features exchanged / rank")
        ax.set_title(f"{_short(r.hook)} @ {r.position} (n {r.n_heldout}, {r.n_heads} heads)", fontsize=8)
    axes[0][0].set_ylabel(f"held-out answers switched to {counterfactual}")
    _legend(fig, axes)
    fig.suptitle("Where the bridge lives: interchange interventions on held-out prefixes (band: 95% CI over heads; random: range over draws)",
                 fontsize=9)
    fig.subplots_adjust(bottom=0.36, top=0.88)
    return save_figure(fig, stem)


@fail_soft
def plot_variable_curves(result, stem: Path) -> list[Path]:
    """One row of panels per planted variable (besides the bridge at r1), one column per hook."""
    rows = [r for r in result.rows if r.pairs]
    names = list(dict.fromkeys(opt(r.pairs.name, r.variable) for r in rows))
    hooks = list(dict.fromkeys(r.hook for r in rows))
    if not rows:
        return na_figure(stem, "Where each variable lives", "no variable other than the bridge at r1 was measured")
    fig, axes = plt.subplots(len(names), len(hooks), figsize=(3.2 * len(hooks) + 0.8, 2.5 * len(names) + 1.4), sharey=True,
                             squeeze=False)
    for r in rows:
        i, j = names.index(opt(r.pairs.name, r.variable)), hooks.index(r.hook)
        ax = axes[i][j]
        if r.n_heldout == 0:
            na_axes(ax, "no held-out pairs")
            continue
        _panel(ax, r)
        ax.set_title(f"{opt(r.pairs.name, r.variable)} @{r.position}, {_short(r.hook)} (n {r.n_heldout})", fontsize=8)
    for i, name in enumerate(names):
        axes[i][0].set_ylabel("switched to the\ncounterfactual answer", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("features exchanged / rank", fontsize=8)
    _legend(fig, axes)
    fig.suptitle("Where each variable lives: interchange from a donor that differs in it, held-out prefixes "
                 "(band: 95% CI over heads; random: range over draws)", fontsize=9)
    height = 2.5 * len(names) + 1.4
    fig.subplots_adjust(bottom=1.25 / height, top=1 - 0.85 / height, hspace=0.5)
    return save_figure(fig, stem)
