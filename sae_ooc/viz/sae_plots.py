"""Figures of the SAE stages: training curves, sweep Pareto fronts, ground-truth alignment heatmaps."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.viz.plots import fail_soft, mark_empty, plt, save_figure

CURVES = (("overall_loss", "loss"), ("l0", "L0"), ("explained_variance", "explained variance"), ("dead_fraction_training_window", "fraction not active in the last\nsae.dead_feature_window training steps"))


@fail_soft
def plot_training_curves(log: list[dict], stem: Path, title: str = "") -> list[Path]:
    """Loss, L0, explained variance and the fraction of features SAELens counts dead during training (not active in the
    last `sae.dead_feature_window` steps: not the held-out `dead` of metrics.json) against tokens seen (train_log.jsonl)."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    tokens = [r["tokens"] for r in log]
    for ax, (key, label) in zip(axes, CURVES):
        ax.plot(tokens, [r.get(key, float("nan")) for r in log], lw=1.2)
        mark_empty(ax)
        ax.set_xlabel("tokens seen")
        ax.set_title(label)
        if key == "overall_loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_pareto(points: list[dict], stem: Path, title: str = "") -> list[Path]:
    """L0 vs FVU and L0 vs fraction of answer loss recovered, one point per SAE of a sweep."""
    has_task = any(p.get("loss_recovered_valid_id") is not None for p in points)
    fig, axes = plt.subplots(1, 2 if has_task else 1, figsize=(9 if has_task else 4.5, 3.5), squeeze=False)
    pts = sorted(points, key=lambda p: p["l0"])
    panels = [("fvu", "FVU (1 - explained variance)")] + ([("loss_recovered_valid_id", "answer loss recovered (valid_id)")] if has_task else [])
    for ax, (key, label) in zip(axes[0], panels):
        xs = [p["l0"] for p in pts if p.get(key) is not None]
        ys = [p[key] for p in pts if p.get(key) is not None]
        ax.plot(xs, ys, "o-")
        for p in pts:
            if p.get(key) is not None:
                ax.annotate(f"{p['param']}={p['value']}", (p["l0"], p[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        mark_empty(ax)
        ax.set_xlabel("mean L0 (held-out)")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_alignment_heatmap(grid: dict, hooks: list[str], positions: list[str], stem: Path, variable: str = "bridge",
                           panels: list[tuple[str, str]] | None = None, threshold: float = 0.9) -> list[Path]:
    """Where `variable` is readable on held-out prefixes, hook x position, one panel per (key, title) of `panels`:
    the trained model's probe beside the same probe on its controls, and one SAE feature beside the shuffled search.

    `grid[(hook, position)][key]` is a share in [0, 1] or None (a blank cell), `grid[...][key + "_mark"]` an optional
    suffix for its label ("*": the share shown is clearly above the controls' shares; the caller tests what the cell shows). All panels share one colour scale, so a control reads
    against the trained model at a glance.
    """
    import numpy as np

    panels = panels or [("trained", "trained model"), ("features", "one SAE feature")]
    height = 0.5 * len(hooks) + 2.2
    fig, axes = plt.subplots(1, len(panels), figsize=(1.1 * len(positions) * len(panels) + 4.5, height), sharey=True, squeeze=False)
    fig.subplots_adjust(top=1 - 0.8 / height, bottom=0.6 / height)  # room for the title above the panel titles
    axes = axes[0]
    for ax, (key, label) in zip(axes, panels):
        m = np.full((len(hooks), len(positions)), np.nan)
        for i, h in enumerate(hooks):
            for j, pos in enumerate(positions):
                v = grid.get((h, pos), {}).get(key)
                if v is not None:
                    m[i, j] = v
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(hooks)):
            for j in range(len(positions)):
                if not np.isnan(m[i, j]):
                    mark = grid[(hooks[i], positions[j])].get(f"{key}_mark") or ""
                    ax.text(j, i, f"{m[i, j]:.2f}{mark}", ha="center", va="center", color="w" if m[i, j] < 0.6 else "k", fontsize=8)
        ax.set_xticks(range(len(positions)), positions)
        ax.set_xlabel("position")
        ax.set_title(label, fontsize=8)
    axes[0].set_yticks(range(len(hooks)), hooks)
    fig.suptitle(f"{variable} on held-out prefixes: probe exact-value accuracy and share of values one feature detects "
                 f"(AUROC >= {threshold}); * the value shown clearly above every control's (95% Wilson intervals)", fontsize=9)
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    return save_figure(fig, stem)
