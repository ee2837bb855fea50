"""Figure of the variable-circuit stage: faithfulness against the number of groups, and the circuit against its controls."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.viz.plots import err_bars, fail_soft, floats, na_axes, plt, save_figure


@fail_soft
def plot_variable_faithfulness(faith, stem: Path, title: str) -> list[Path]:
    """Left: faithfulness of the top-k groups per ablation kind (solid: held-out pairs, dashed: the selection pairs the
    size was chosen on). Right: per kind, the circuit's held-out faithfulness (dot) among its random-group controls
    (grey), beside the same number of top individual features (x) and its labelled variable groups alone (v). `faith`: a
    sae_ooc.circuits.variable_faithfulness_result.VariableCircuitFaithfulness (read by attribute)."""
    kinds = list(faith.by_ablation)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    ax = axes[0]
    for j, kind in enumerate(kinds):
        cv = faith.by_ablation[kind].curve
        ax.plot(cv.sizes, floats(cv.heldout), color=f"C{j}", marker="o", ms=2, label=f"{kind}: held-out")
        ax.plot(cv.sizes, floats(cv.selection), color=f"C{j}", ls="--", lw=0.8, label=f"{kind}: selection (in-sample)")
    ch = faith.selection
    ax.axvline(ch.n_groups, color="k", lw=0.8, ls=":", label=f"chosen: {ch.n_groups} groups ({ch.ablation}, selection pairs)")
    ax.axhline(ch.target, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("variable nodes in the circuit (top by |effect| on the selection pairs)")
    ax.set_ylabel("(m(C) - m(∅)) / (m(M) - m(∅))")
    # legends below the axes: inside they covered the curves
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, ncol=2)
    ax = axes[1]
    for j, kind in enumerate(kinds):
        r = faith.by_ablation[kind]
        rnd = r.random_groups.heldout.values
        ax.scatter([j + 0.15] * len(rnd), floats(rnd), s=8, color="grey", alpha=0.5, label="random groups, same sizes" if j == 0 else None)
        h = r.heldout
        lo, hi = h.ci95 or (None, None)
        # a percentile interval of a ratio need not contain the point estimate: err_bars clips the bars at it
        ax.errorbar([j], floats(h.faithfulness), yerr=err_bars(h.faithfulness, lo, hi), fmt="o", color=f"C{j}", capsize=3,
                    label="variable circuit (95% CI over pairs)" if j == 0 else None)
        ax.scatter([j - 0.15], floats(r.top_features_same_size.heldout), marker="x", color="k",
                   label="same number of top individual features" if j == 0 else None)
        ax.scatter([j - 0.3], floats(r.variables_only.heldout), marker="v", color="k",
                   label="the circuit's labelled variable groups alone" if j == 0 else None)
    ax.axhline(ch.target, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(kinds)))
    ax.set_xticklabels(kinds)
    if not kinds:
        for ax in axes:
            na_axes(ax, "no ablation kind measured")
    ax.set_xlabel("ablation")
    ax.set_ylabel(f"faithfulness on {faith.n_heldout} held-out pairs")
    if kinds:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, ncol=2)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem, tight_layout=True)
