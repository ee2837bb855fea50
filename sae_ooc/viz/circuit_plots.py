"""Figures of the attribute and circuit stages: atp/ig against exact patching, and faithfulness curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import NullLocator

from sae_ooc.records import given
from sae_ooc.viz.plots import fail_soft, floats, na_axes, plt, save_figure
from sae_ooc.viz.text import fmt as _fmt


@fail_soft
def plot_validation(flat: dict, report, stem: Path) -> list[Path]:
    """Per (pair, changed node): each approximation against exact patching; the nodes a method computed exactly
    itself (atp_verified's shortlist) in grey, apart from the ones it is judged on. `report`: a
    sae_ooc.circuits.attribute_result.AttributionValidation (read by attribute)."""
    methods = list(report.methods)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 4.2), squeeze=False)
    changed = flat["changed"]
    x = flat["exact"][changed].numpy()
    lim = float(max(np.nanmax(np.abs(flat[m][changed].numpy()), initial=0.0) for m in ["exact", *methods]) or 1.0) * 1.05
    for ax, m in zip(axes[0], methods):
        r = report.methods[m]
        y = flat[m][changed].numpy()
        own = flat[f"computed.{m}"][changed].numpy() if f"computed.{m}" in flat else np.zeros(len(x), dtype=bool)
        if own.any():  # drawn first: the estimated nodes, the ones judged, stay visible on top
            ax.scatter(x[own], y[own], s=6, alpha=0.5, color="grey", label="computed exactly (not judged)")
        ax.scatter(x[~own], y[~own], s=6, alpha=0.5, color="C0", label="estimated")
        if own.any():
            ax.legend(fontsize=7, loc="upper left")
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("exact patching effect (per pair)")
        ax.set_ylabel(f"{m} estimate")
        if not np.isfinite(x).any() or not np.isfinite(y).any():
            na_axes(ax, "no (pair, node) effect measured")
        # two lines: one line per panel ran into its neighbours' at the figure's width
        ax.set_title(f"{m}: {'trusted' if r.trusted else 'NOT trusted'}\nrecall@50 {_fmt(r.recall_top50)}, "
                     f"Spearman (not exact) {_fmt(r.spearman_not_exact)}", fontsize=8)
    fig.suptitle(f"Node effects on {report.n_pairs} pairs, {report.n_changed_nodes} (pair, node) effects", fontsize=10)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_curve(scored: dict, curves: dict, main: str, stem: Path, title: str, pruned: dict | None = None,
               target: tuple[float, int] | None = None) -> list[Path]:
    """Faithfulness against circuit size: the circuit chosen on the selection pairs scored on the held-out pairs
    (solid) and, in-sample, on the selection pairs; then by ablation, with per-prompt circuits (in-sample) and what
    the pruned per-prompt circuits give on other prompts. The arguments are parts of a
    sae_ooc.circuits.faithfulness_result.CircuitFaithfulness, read by attribute: `scored` {"heldout", "selection"} of its
    Scores, `curves` its by_ablation, `pruned` its pruned_per_prompt."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    curve = scored["heldout"].curve
    x = [r.n_features for r in curve]
    ax.plot(x, floats([r.faithfulness for r in curve]), marker="o", ms=3, label="faithfulness, held-out pairs")
    if curve and given(curve[0].faithfulness_features_only):
        ax.plot(x, floats([r.faithfulness_features_only for r in curve]), marker="s", ms=3, ls="--", label="held-out, no error nodes")
    ax.plot(x, floats([r.completeness for r in curve]), marker="^", ms=3, ls=":", label="held-out, circuit ablated (completeness; low is good)")
    sel = scored["selection"].curve
    ax.plot([r.n_features for r in sel], floats([r.faithfulness for r in sel]), color="grey", lw=1, ls="--",
            label="faithfulness, selection pairs (in-sample)")
    if not curve:
        na_axes(ax, "no circuit size scored")
    ax.set_title(f"{main} ablation: one circuit chosen on the selection pairs", fontsize=9)
    ax = axes[1]
    for k, (kind, cv) in enumerate(curves.items()):
        color = f"C{k}"
        ax.plot(cv.sizes, floats(cv.faithfulness), color=color, marker="o", ms=2, label=f"{kind}: chosen on selection, held-out pairs")
        ax.plot(cv.sizes, floats(cv.faithfulness_per_prompt_circuits_in_sample), color=color, ls="--", label=f"{kind}: per-prompt top nodes (in-sample)")
    if pruned:
        r = pruned.rounds
        ax.plot([x.max_features for x in r], floats([x.faithfulness for x in r]), color="k", lw=1.5,
                label=f"{pruned.ablation}: backward elimination per prompt ({pruned.n_pairs} pairs, in-sample)")
        t = pruned.transfer
        for key, marker, text in (("same_relations", "*", "same (r1, r2)"), ("other_relations", "x", "other (r1, r2)")):
            if t and getattr(t, key).faithfulness is not None:
                ax.plot([t.max_features], [getattr(t, key).faithfulness], color="k", marker=marker, ms=9, ls="none",
                        label=f"pruned circuits on other prompts, {text} ({getattr(t, key).n_rows})")
    ax.set_title("faithfulness by ablation (held-out pairs); dashed: each pair keeps its own top nodes", fontsize=9)
    for ax in axes:
        if target is not None:  # (faithfulness, feature nodes): the circuit stage's target, drawn as grey lines
            ax.axhline(target[0], color="grey", lw=0.8, ls="--")
            ax.axvline(target[1], color="grey", lw=0.8, ls=":")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        # symlog's own ticks are 0, 10^1, 10^2: one or two labels on a small circuit; label 1-2-5 steps instead
        hi = ax.get_xlim()[1]
        ticks = [t for t in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if t <= hi]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("feature nodes in the circuit (top by |effect|)")
        ax.set_ylabel("(m(C) - m(∅)) / (m(M) - m(∅))")
        # below the panel, never over the curves (save_figure's tight bounding box keeps it in the file)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem)
