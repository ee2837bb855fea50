"""Figures of the steer and edit stages: consistent-answer rate by hook with its baselines, edit success by layer, and
the causal-tracing effect against edit success."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_ooc.viz.plots import plt, save_figure

STEER_BARS = (("features", "feature steering b→b'", "tab:blue"), ("random", "random features, matched norm", "tab:gray"),
              ("resid_patch", "residual patch from a b' prompt", "tab:orange"),
              ("features_same_bridge", "feature steering b'=b", "tab:green"),
              ("resid_patch_same_bridge", "residual patch from another b prompt", "tab:olive"))


def _err(r: dict | None) -> tuple[float, float, float]:
    """(share, lower error, upper error) of one intervention's consistent share; the random control's over its draws."""
    if r is None:
        return np.nan, 0.0, 0.0
    c = r["consistent"]
    if "sd" in c:  # random: mean over draws, bar from its min to its max
        return c["mean"], c["mean"] - c["min"], c["max"] - c["mean"]
    if c["share"] is None:
        return np.nan, 0.0, 0.0
    lo, hi = c["ci95"]
    return c["share"], c["share"] - lo, hi - c["share"]


def plot_steering(result: dict, stem: Path) -> list[Path]:
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 3.8))
    x = np.arange(len(rows))
    w = 0.8 / len(STEER_BARS)
    for j, (key, label, color) in enumerate(STEER_BARS):
        vals = [_err(r["methods"].get(key)) for r in rows]
        ax.bar(x + (j - (len(STEER_BARS) - 1) / 2) * w, [v[0] for v in vals], w, yerr=np.array([[v[1] for v in vals], [v[2] for v in vals]]),
               color=color, label=label, capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(x, [f"{r['hook'].replace('blocks.', 'L').replace('.hook_', ' ')}\n@{r['position']} (n {r['n_prompts']})" for r in rows],
                  fontsize=7)
    ax.set_ylabel("share answering t(b', r2)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Steering the bridge to b' on {result['settings']['n_prompts']} {result['settings']['split']} prompts "
                 "(95% CI; random: range over draws)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, frameon=False)
    return save_figure(fig, stem)


def plot_edit_layers(by_layer: list[dict], stem: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    layers = [r["layer"] for r in by_layer]
    for key, label, color in (("efficacy", "efficacy (atomic fact → b')", "tab:blue"),
                              ("propagation", "propagation (two-hop → t(b', r2))", "tab:orange"),
                              ("specificity_same_head", "specificity: same head, other relation", "tab:green"),
                              ("specificity_atomic", "specificity: unrelated atomic", "tab:olive"),
                              ("specificity_two_hop", "specificity: unrelated two-hop", "tab:gray"),
                              ("reverse", "reverse (b', r⁻¹) → h", "tab:red")):
        v = [r[key]["share"] if r.get(key) and r[key].get("share") is not None else np.nan for r in by_layer]
        if np.all(np.isnan(v)):
            continue
        lo = [r[key]["ci95"][0] if r.get(key) and r[key].get("ci95") else np.nan for r in by_layer]
        hi = [r[key]["ci95"][1] if r.get(key) and r[key].get("ci95") else np.nan for r in by_layer]
        ax.plot(layers, v, marker="o", color=color, label=label)
        ax.fill_between(layers, lo, hi, color=color, alpha=0.15)
    ax.set_xlabel("edited layer (W_out of its MLP)")
    ax.set_ylabel("share of prompts")
    ax.set_xticks(layers)
    ax.set_ylim(-0.02, 1.05)
    ax.set_title("Rank-one edits (h, r1) → b': success by layer (95% CI over facts' prompts)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    return save_figure(fig, stem)


def plot_localization(points: dict, corr: dict, stem: Path) -> list[Path]:
    """Causal-tracing effect of each (fact, layer) against that edit's success (efficacy score and propagation)."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    layers = np.asarray(points["layer"])
    cmap = plt.get_cmap("viridis", max(int(layers.max()) + 1, 2))
    for ax, key, label in ((axes[0], "rewrite", "rewrite score"), (axes[1], "propagation", "propagation share")):
        y = np.array([np.nan if v is None else v for v in points[key]], dtype=float)
        sc = ax.scatter(points["trace"], y, c=layers, cmap=cmap, s=10, alpha=0.7, vmin=-0.5, vmax=layers.max() + 0.5)
        c = corr.get(key) or {}
        p, s = c.get("pearson") or {}, c.get("spearman") or {}

        def txt(d):
            return "n/a" if d.get("value") is None else f"{d['value']:.2f} [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}]"

        ax.set_title(f"Pearson {txt(p)}, Spearman {txt(s)}", fontsize=8)
        ax.set_xlabel("tracing effect of the layer's MLP (restored p(b) gain)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
    fig.colorbar(sc, ax=axes, label="layer", ticks=sorted(set(layers.tolist())))
    fig.suptitle("Does localization inform editing? (each point: one fact edited at one layer)", fontsize=9)
    return save_figure(fig, stem)
