"""Figures of the steer and edit stages: consistent-answer rate by hook with its baselines, edit success by layer, and
the causal-tracing effect against edit success."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_ooc.records import Spread
from sae_ooc.viz.plots import err_bars, fail_soft, floats, na_axes, na_figure, plt, save_figure
from sae_ooc.viz.text import fmt

STEER_BARS = (("features", "feature steering b→b'", "tab:blue"), ("random", "random features, matched norm", "tab:gray"),
              ("resid_patch", "residual patch from a b' prompt", "tab:orange"),
              ("features_same_bridge", "feature steering b'=b", "tab:green"),
              ("resid_patch_same_bridge", "residual patch from another b prompt", "tab:olive"))


def _interval(r) -> tuple[float | None, float | None, float | None]:
    """(share, low, high) of one intervention's consistent share and its 95% interval; the random control's mean over
    its draws with their range. None where it was not measured."""
    if r is None:
        return None, None, None
    c = r.consistent
    if isinstance(c, Spread):  # random: mean over draws, bar from its min to its max
        return c.mean, c.min, c.max
    lo, hi = c.ci95 or (None, None)
    return c.share, lo, hi


@fail_soft
def plot_steering(result, stem: Path, counterfactual: str = "t(b', r2)") -> list[Path]:
    """`result`: a sae_ooc.interventions.steer_result.SteerResult (drawing reads typed outputs by attribute and imports
    no producer: viz is the ground floor); `counterfactual`: the task's name of the answer with bridge b'."""
    rows = result.rows
    title = (f"Steering the bridge to b' on {result.settings.n_prompts} {result.settings.split} prompts "
             "(95% CI; random: range over draws)")
    if not rows:
        return na_figure(stem, title, "no (hook, position) rows")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 3.8))
    x = np.arange(len(rows))
    w = 0.8 / len(STEER_BARS)
    for j, (key, label, color) in enumerate(STEER_BARS):
        share, lo, hi = zip(*[_interval(r.methods.get(key)) for r in rows])
        ax.bar(x + (j - (len(STEER_BARS) - 1) / 2) * w, floats(share), w, yerr=err_bars(share, lo, hi),
               color=color, label=label, capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(x, [f"{r.hook.replace('blocks.', 'L').replace('.hook_', ' ')}\n@{r.position} (n {r.n_prompts})" for r in rows],
                  fontsize=7)
    ax.set_ylabel(f"share answering {counterfactual}")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, frameon=False)
    return save_figure(fig, stem)


@fail_soft
def plot_edit_layers(by_layer: list, stem: Path, counterfactual: str = "t(b', r2)", inferred: str = "two-hop") -> list[Path]:
    """`by_layer`: sae_ooc.interventions.edit_result.EditResult.by_layer; `counterfactual`, `inferred`: the task's names of
    the new inferred answer and of its inferred questions."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    layers = [r.layer for r in by_layer]
    drawn = 0
    for key, label, color in (("efficacy", "efficacy (atomic fact → b')", "tab:blue"),
                              ("propagation", f"propagation ({inferred} → {counterfactual})", "tab:orange"),
                              ("specificity_same_head", "specificity: same head, other relation", "tab:green"),
                              ("specificity_atomic", "specificity: unrelated atomic", "tab:olive"),
                              ("specificity_two_hop", f"specificity: unrelated {inferred}", "tab:gray"),
                              ("reverse", "reverse (b', r⁻¹) → h", "tab:red")):
        got = [getattr(r, key) for r in by_layer]
        v = [g.share if g and g.share is not None else np.nan for g in got]
        if np.all(np.isnan(v)):
            continue
        lo = [g.ci95[0] if g and g.ci95 else np.nan for g in got]
        hi = [g.ci95[1] if g and g.ci95 else np.nan for g in got]
        ax.plot(layers, v, marker="o", color=color, label=label)
        ax.fill_between(layers, floats(lo), floats(hi), color=color, alpha=0.15)
        drawn += 1
    ax.set_xlabel("edited layer (W_out of its MLP)")
    ax.set_ylabel("share of prompts")
    if not drawn:
        na_axes(ax, "no edit measured")
    else:
        ax.set_xticks(layers)
        ax.set_ylim(-0.02, 1.05)
    ax.set_title("Rank-one edits (h, r1) → b': success by layer (95% CI over facts' prompts)", fontsize=9)
    if drawn:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    return save_figure(fig, stem)


@fail_soft
def plot_localization(points, corr: dict, stem: Path) -> list[Path]:
    """Causal-tracing effect of each (fact, layer) against that edit's success (efficacy score and propagation).
    `points`, `corr`: an EditResult's localization.points and localization.correlation."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    layers = np.asarray(points.layer, dtype=float)
    top = int(layers.max()) if len(layers) else 0
    cmap = plt.get_cmap("viridis", max(top + 1, 2))
    for ax, key, label in ((axes[0], "rewrite", "rewrite score"), (axes[1], "propagation", "propagation share")):
        y = floats(getattr(points, key))
        sc = ax.scatter(floats(points.trace), y, c=layers, cmap=cmap, s=10, alpha=0.7, vmin=-0.5, vmax=top + 0.5)
        if not np.isfinite(y).any():
            na_axes(ax, "no (fact, layer) measured")
        c = corr.get(key)
        p, s = (c.pearson, c.spearman) if c else (None, None)

        def txt(d):
            ci = (d.ci95 if d else None) or (None, None)
            return "n/a" if d is None or d.value is None else f"{d.value:.2f} [{fmt(ci[0], '.2f')}, {fmt(ci[1], '.2f')}]"

        ax.set_title(f"Pearson {txt(p)}, Spearman {txt(s)}", fontsize=8)
        ax.set_xlabel("tracing effect of the layer's MLP (restored p(b) gain)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
    fig.colorbar(sc, ax=axes, label="layer", ticks=sorted(set(layers.tolist())) or [0])
    fig.suptitle("Does localization inform editing? (each point: one fact edited at one layer)", fontsize=9)
    return save_figure(fig, stem)
