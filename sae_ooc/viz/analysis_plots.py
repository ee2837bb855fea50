"""Figures of the `analyze` stage, one per analysis (PNG + SVG via save_figure), each titled with what it shows and
on how many prompts. Inputs are the analyses' typed results (sae_ooc.analyses.result, read by attribute: viz imports no
producer), so a figure can be redrawn from RUN/analyze/<name>.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_ooc.viz.plots import fail_soft, floats, na_axes, na_figure, plt, save_figure
from sae_ooc.viz.text import fmt as num

ROLES = ("head", "r1", "r2")  # the toy's; a result's own "roles" name its positions


def _grid(m) -> np.ndarray:
    """A (rows, columns) float array of a nested list, None as NaN; (0, 0) for no rows."""
    rows = [floats(row) for row in m]
    return np.array(rows, dtype=float) if rows and len(rows[0]) else np.zeros((0, 0))


def _heat(ax, m, xlabels, ylabels, title, cmap="viridis", vmin=None, vmax=None, fmt="{:.2f}", center=False):
    a = _grid(m)
    if a.size == 0:  # no layers, heads or states: say so rather than fail
        na_axes(ax, "nothing measured")
        ax.set_title(title, fontsize=8)
        return None
    if center:
        lim = np.nanmax(np.abs(a)) if np.isfinite(a).any() else 1.0
        vmin, vmax, cmap = -lim or -1, lim or 1, "RdBu_r"
    im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    # more than a few positions (a natural task's bos, head.0, head, 's, ...): upright labels ran into each other
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=7, rotation=90 if len(xlabels) > 4 else 0)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
    ax.set_title(title, fontsize=8)
    if a.size <= 120:
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                if np.isfinite(a[i, j]):
                    r, g, b, _ = im.cmap(im.norm(a[i, j]))
                    ax.text(j, i, fmt.format(a[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
    return im


@fail_soft
def plot_attention(r, stem: Path, name: str) -> list[Path]:
    roles = tuple(r.roles or ROLES)  # the task layout's position names
    mean, heads = r.mean_pattern, r.heads
    if not mean or not mean[0]:
        return na_figure(stem, f"{name}: attention pattern per head", "no layers or heads")
    L, H = len(mean), len(mean[0])
    ex = r.examples
    side = max(2.3, 0.3 * len(roles) + 0.4)  # a panel per head, wide enough for its cells' numbers
    fig, axes = plt.subplots(L, H + 1, figsize=(side * (H + 1), (side - 0.1) * L + 0.8), squeeze=False)
    movers = set(r.movers)
    for l in range(L):
        for h in range(H):
            ax = axes[l][h]
            tag = f"L{l}H{h}"
            info = next((x for x in heads if x.head == tag), None)
            _heat(ax, mean[l][h], roles, roles, f"{tag}{' (mover)' if tag in movers else ''}: patch@{roles[-1]} "
                  f"{num(info.z_patch_at_r2_recovered if info else None, '.2f')}", cmap="Blues", vmin=0, vmax=1)
            if tag in movers:
                for s in ax.spines.values():
                    s.set_edgecolor("red")
                    s.set_linewidth(2.5)
            if h == 0:
                ax.set_ylabel("destination", fontsize=7)
            if l == L - 1:
                ax.set_xlabel("source", fontsize=7)
        # last column: each example prompt's attention from r2, every head of this layer
        rows = [list(ex[i].pattern[l][h][-1]) for i in range(len(ex)) for h in range(H)]  # from the answer position (the last)
        labels = [f"#{i} H{h}" for i in range(len(ex)) for h in range(H)]
        _heat(axes[l][H], rows, roles, labels, f"L{l}: from {roles[-1]}, example prompts", cmap="Blues", vmin=0, vmax=1)
    exs = "; ".join(f"#{i}: {e.prompt} -> {e.answer} (bridge {e.bridge})" for i, e in enumerate(ex))
    fig.suptitle(f"{name}: attention pattern per head, mean over {r.n_prompts} held-out test_id prompts (destination x source role).\n"
                 f"Red frame: r1 -> {roles[-1]} mover ({r.mover_rule}).\nExamples {exs}", fontsize=8)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_logit_lens(r, stem: Path, name: str) -> list[Path]:
    roles = tuple(r.roles or ROLES)  # the task layout's position names
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.5))
    states = r.states
    for i, (var, d) in enumerate((("bridge", r.bridge), ("answer", r.answer))):
        if d is None:  # the question has no such variable (the reversal family's: no bridge)
            for ax in axes[i]:
                na_axes(ax, f"no {var} in this task's question")
            continue
        _heat(axes[i][0], d.prob, roles, states, f"{var}: mean probability", vmin=0, vmax=1)
        _heat(axes[i][1], d.top1, roles, states, f"{var}: share ranked first", vmin=0, vmax=1)
        _heat(axes[i][2], np.log10(1 + _grid(d.median_rank)), roles, states, f"{var}: log10(1 + median rank)",
              cmap="viridis_r", fmt="{:.1f}")
    fig.suptitle(f"{name}: logit lens (residual stream -> ln_final -> unembed), bridge and answer per state and position, "
                 f"{r.n_prompts} held-out test_id prompts\nno tuned lens: a poor rank in early layers is not absence", fontsize=9)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_patching(r, stem: Path, name: str) -> list[Path]:
    roles = tuple(r.roles or ROLES)  # the task layout's position names
    fig, axes = plt.subplots(1, 5, figsize=(18, 4.4), gridspec_kw={"width_ratios": [1, 1, 1, 1.3, 1.3]})
    L = len(r.kinds["resid_pre"].normalised)
    layers = [f"L{l}" for l in range(L)]
    for ax, kind in zip(axes[:3], ("resid_pre", "attn_out", "mlp_out")):
        _heat(ax, r.kinds[kind].normalised, roles, layers, f"{kind}", center=True)
    for ax, kind, what in ((axes[3], "z", "head output z (position)"), (axes[4], "pattern", "head pattern (destination)")):
        m = r.kinds[kind].normalised  # [L][P][H]
        H = len(m[0][0]) if m and m[0] else 0
        rows = [[m[l][p][h] for p in range(len(m[0]))] for l in range(L) for h in range(H)]
        _heat(ax, rows, roles, [f"L{l}H{h}" for l in range(L) for h in range(H)], what, center=True)
    fig.suptitle(f"{name}: activation patching clean -> corrupted (h' r1 r2, other bridge and answer), {r.n_prompts} held-out "
                 f"test_id pairs; share of the {r.metric} gap recovered (clean {num(r.clean, '.2f')}, corrupted {num(r.corrupt, '.2f')})",
                 fontsize=9)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_tracing(r, stem: Path, name: str) -> list[Path]:
    roles = tuple(r.roles or ROLES)  # the task layout's position names
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    L = len(r.resid)
    layers = [f"L{l}" for l in range(L)]
    cells = np.concatenate([floats(r.total_effect)] + [_grid(getattr(r, k)).ravel() for k in ("resid", "mlp", "attn")])
    lim = float(np.nanmax(np.abs(cells), initial=0.0)) if np.isfinite(cells).any() else 0.0
    lim = max(lim, 1e-6)
    for ax, kind, what in zip(axes, ("resid", "mlp", "attn"), ("resid_pre restored", f"MLP outputs restored (window {r.window})",
                                                               f"attention outputs restored (window {r.window})")):
        _heat(ax, getattr(r, kind), roles, layers, what, cmap="RdBu_r", vmin=-lim, vmax=lim, fmt="{:.3f}")
    fig.suptitle(f"{name}: causal tracing, indirect effect on p(answer) of restoring one clean state after noising the head entity "
                 f"({r.noise_scale}x its embedding std, {r.samples} draws),\n{r.n_prompts} held-out test_id prompts: "
                 f"p clean {num(r.p_clean)}, p noised {num(r.p_corrupt)}, total effect {num(r.total_effect)}", fontsize=9)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_probes(r, stem: Path, name: str) -> list[Path]:
    variables = ("head", "bridge", "answer")
    fig, axes = plt.subplots(len(variables), 3, figsize=(11, 3.1 * len(variables)), squeeze=False)
    hooks = [h.replace("blocks.", "L").replace(".hook_", " ") for h in r.hooks]
    for i, v in enumerate(variables):
        d = getattr(r, v)
        ctrl = [[None if a is None else max(x for x in (a, b) if x is not None) for a, b in zip(ra, rb)]
                for ra, rb in zip(d.random_model_acc, d.shuffled_acc)]
        n = max((x for row in d.n_heldout for x in row if x), default=0)
        _heat(axes[i][0], d.heldout_acc, r.positions, hooks, f"{v}: held-out probe accuracy (up to {n} prefixes)", vmin=0, vmax=1)
        _heat(axes[i][1], ctrl, r.positions, hooks, f"{v}: best control (random model, shuffled labels)", vmin=0, vmax=1)
        _heat(axes[i][2], d.chance, r.positions, hooks, f"{v}: chance (label frequencies)", vmin=0, vmax=1)
    fig.suptitle(f"{name}: linear probes per layer and position, fit on selection prefixes, scored on held-out prefixes "
                 f"({r.n_controls} control model(s) and label shuffling(s)); blank: the prefix does not determine the variable", fontsize=9)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_dla(r, stem: Path, name: str) -> list[Path]:
    comps = r.components
    labels = [c.component for c in comps]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.28 * len(labels) + 2))
    for ax, key, what in ((axes[0], "answer", "logit of the answer t2"), (axes[1], "answer_minus_corrupt", "logit(t2) - logit(t2')")):
        vals = floats([getattr(c, key) for c in comps])
        err = np.nan_to_num(np.abs(floats([getattr(c, f"{key}_std") for c in comps])))  # a missing std: no bar
        ax.barh(range(len(labels)), vals, xerr=err, color=["C3" if v < 0 else "C0" for v in vals], error_kw={"lw": 0.6})
        if not np.isfinite(vals).any():
            na_axes(ax, "no component measured")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.6)
        ax.set_title(f"direct attribution to {what} (mean ± std)", fontsize=8)
    fig.suptitle(f"{name}: direct logit attribution at r2 per head, MLP and embedding, {r.n_prompts} held-out test_id prompts",
                 fontsize=9)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_back_patching(r, stem: Path, name: str) -> list[Path]:
    splits = [s for s in ("test_id", "test_ood_sys", "test_unanswerable") if getattr(r, s)]
    L = r.n_layers
    fig, axes = plt.subplots(len(splits), 2, figsize=(9, 3.6 * max(len(splits), 1)), squeeze=False)
    for i, s in enumerate(splits):
        d = getattr(r, s)
        for j, pos in enumerate(("r1", "r2")):
            grid = [[None] * L for _ in range(L + 1)]  # [src][dst]
            for k, p in enumerate(r.patches):
                if p.position == pos:
                    grid[p.src][p.dst] = d.fixed_by_patch[k]
            _heat(axes[i][j], grid, [f"into L{x}" for x in range(L)], r.states, f"{s}: {d.n_failures} failures, patch at {pos}",
                  vmin=0, vmax=1)
    ch = r.chosen
    fig.suptitle(f"{name}: back-patching, share of failures fixed by copying a later state (rows) into an earlier layer (columns)"
                 + (f"\nchosen on valid_id failures: {ch.position} state {ch.src} into L{ch.dst}" if ch else ""), fontsize=9)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_answers(r, stem: Path, name: str) -> list[Path]:
    """Per split, the share of prompts whose greedy answer is in each class, beside a random entity's chance of each."""
    splits = [s for s, d in r.splits.items() if d]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    if not splits:
        na_axes(ax, "no analysed prompts")
        return save_figure(fig, stem)
    x = np.arange(len(r.classes))
    w = 0.8 / len(splits)
    for i, s in enumerate(splits):
        d = r.splits[s]
        bars = ax.bar(x + i * w, [d["share"][c] for c in r.classes], w, label=f"{s} (n={d['n']})")
        ax.scatter(x + i * w, [d["chance"][c] for c in r.classes], marker="_", s=120, color="k", zorder=3,
                   label="chance (a random entity)" if i == 0 else None)
        ax.bar_label(bars, [f"{d['share'][c]:.2f}" if d["share"][c] >= 0.01 else "" for c in r.classes], fontsize=6)
    ax.set_xticks(x + 0.4 - w / 2, r.classes, fontsize=7, rotation=20)
    ax.set_ylabel("share of prompts")
    ax.set_ylim(0, 1.08)
    ax.legend(fontsize=7)
    ax.set_title(f"{name}: the model's greedy answer on each split's analysed prompts, by class (most frequent train answer "
                 f"{r.most_frequent_answer})", fontsize=9)
    return save_figure(fig, stem, tight_layout=True)


PLOTS = {"attention": plot_attention, "logit-lens": plot_logit_lens, "patching": plot_patching, "causal-tracing": plot_tracing,
         "probes": plot_probes, "dla": plot_dla, "back-patching": plot_back_patching, "answers": plot_answers}
