"""Figures of the attribute and circuit stages: atp/ig against exact patching, and faithfulness curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_ooc.circuits.faithfulness import TARGET_FAITHFULNESS, TARGET_MAX_FEATURES
from sae_ooc.viz.plots import plt, save_figure


def plot_validation(flat: dict[str, np.ndarray], report: dict, stem: Path) -> None:
    methods = list(report["methods"])
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 4.2), squeeze=False)
    x = flat["exact"]
    lim = float(np.abs(np.concatenate(list(flat.values()))).max() or 1.0) * 1.05
    for ax, m in zip(axes[0], methods):
        r = report["methods"][m]
        ax.scatter(x, flat[m], s=8, alpha=0.6)
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("exact patching effect")
        ax.set_ylabel(f"{m} estimate")
        top = report["top"]
        ax.set_title(f"{m}: Spearman {r['spearman_all']:.3f} (top {top}: {r[f'spearman_top{top}']:.3f})", fontsize=9)
    fig.suptitle(f"Node effects on {report['n_pairs']} pairs, {report['n_active_nodes']} active nodes", fontsize=10)
    save_figure(fig, stem)


def plot_curve(curve: list[dict], curves: dict[str, dict], main: str, stem: Path, title: str, pruned: dict | None = None) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    x = [r["n_features"] for r in curve]
    ax.plot(x, [r["faithfulness"] for r in curve], marker="o", ms=3, label="faithfulness (circuit kept)")
    if "faithfulness_features_only" in curve[0]:
        ax.plot(x, [r["faithfulness_features_only"] for r in curve], marker="s", ms=3, ls="--", label="faithfulness, no error nodes")
    ax.plot(x, [r["completeness"] for r in curve], marker="^", ms=3, ls=":", label="circuit ablated (completeness; low is good)")
    ax.set_title(f"{main} ablation: aggregate circuit", fontsize=9)
    ax = axes[1]
    for k, (kind, cv) in enumerate(curves.items()):
        color = f"C{k}"
        ax.plot(cv["sizes"], cv["faithfulness"], color=color, marker="o", ms=2, label=f"{kind}: aggregate circuit")
        ax.plot(cv["sizes"], cv["faithfulness_per_prompt_circuits"], color=color, ls="--", label=f"{kind}: per-prompt circuits")
    if pruned:
        r = pruned["rounds"]
        ax.plot([x["max_features"] for x in r], [x["faithfulness"] for x in r], color="k", lw=1.5,
                label=f"{pruned['ablation']}: per-prompt circuits by backward elimination ({pruned['n_pairs']} pairs)")
    ax.set_title("faithfulness by ablation; dashed: each pair keeps its own top nodes", fontsize=9)
    for ax in axes:
        ax.axhline(TARGET_FAITHFULNESS, color="grey", lw=0.8, ls="--")
        ax.axvline(TARGET_MAX_FEATURES, color="grey", lw=0.8, ls=":")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.set_xlabel("feature nodes in the circuit (top by |effect|)")
        ax.set_ylabel("(m(C) - m(∅)) / (m(M) - m(∅))")
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, stem)
