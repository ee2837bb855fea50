"""The training-dynamics figure: every per-checkpoint measure of `sae-ooc dynamics` against step, the rise marked."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.records import given, opt
from sae_ooc.viz.plots import fail_soft, mark_empty, plt, save_figure

SPLIT_STYLE = {"train": "C0", "valid_id": "C1", "test_id": "C2", "test_unanswerable": "C3", "atomic_test": "C4", "test_ood_sys": "C5"}


def _layer_label(hook: str) -> str:
    layer = hook.split(".")[1]
    return f"{hook.split('.')[-1].removeprefix('hook_')} {layer}"


def read_at(result) -> tuple[str, str]:
    """The names of the two positions the bridge is read at, (r1, answer position), from the result's logit-lens keys
    (bridge@<r1>, bridge@<answer position>, answer@<answer position>): the toy's ("r1", "r2"), a natural task's ("r1", "last")."""
    keys = list(result.checkpoints[0].logit_lens.series) if result.checkpoints else []
    r1 = next((k.split("@", 1)[1] for k in keys if k.startswith("bridge@")), "r1")
    ans = next((k.split("@", 1)[1] for k in keys if k.startswith("answer@")), "r2")
    return r1, ans


def _series(points, get):
    xs, ys = [], []
    for p in points:
        try:
            v = get(p)
        except (KeyError, TypeError, IndexError, AttributeError):  # not measured at this checkpoint (an OMIT field)
            v = None
        if v is not None:
            xs.append(p.step)
            ys.append(v)
    return xs, ys


def _plot_used(ax, pts: list, ctl, r1: str, answers) -> None:
    """Per DAS hook: the interchange switch rate of the rank-r DAS subspace (solid), the residual patch (dashed), random
    subspaces (dotted), and the held-out bridge probe at the same hook and r1 (dash-dot): used against readable."""
    for i, h in enumerate(ctl.hooks):
        c = f"C{i}"
        for key, ls, name in (("das", "o-", f"DAS rank {ctl.rank}"), ("resid_patch", "s--", "residual patch"),
                              ("random", ":", f"random rank {ctl.rank}")):
            xs, ys = _series(pts, lambda p, h=h, key=key: getattr(p.control[h], key))
            ax.plot(xs, ys, ls, ms=3, color=c, alpha=1.0 if key == "das" else 0.6, label=f"{_layer_label(h)}: {name}")
        xs, ci = _series(pts, lambda p, h=h: opt(p.control[h].das_ci95))
        if ci:
            ax.fill_between(xs, [lo for lo, _ in ci], [hi for _, hi in ci], color=c, alpha=0.15, lw=0)
        xs, ys = _series(pts, lambda p, h=h: p.probes[h][r1].heldout_acc)
        ax.plot(xs, ys, "-.", color=c, alpha=0.5, lw=1, label=f"{_layer_label(h)}: probe of b (readable)")
    used = answers.bridge_first_used
    if used:
        ax.plot([used.step], [used.switch], "*", ms=12, color="k", label=f"used from step {used.step} (half its final rate)")
    # at the answer position (where the second hop reads the bridge): the hook whose bridge@answer DAS ends highest
    ans = opt(answers.bridge_first_used_answer)
    at = opt(ctl.answer_position) or "answer"
    if ans:
        h = ans.hook
        for key, ls, name in (("das", "D-", f"DAS rank {ctl.rank}"), ("resid_patch", "--", "residual patch")):
            xs, ys = _series(pts, lambda p, key=key: getattr(p.control_answer[h], key))
            ax.plot(xs, ys, ls, ms=3, color="k", alpha=1.0 if key == "das" else 0.5, label=f"{at}, {_layer_label(h)}: {name}")
        ax.plot([ans.step], [ans.switch], "*", ms=12, color="grey", label=f"used at {at} from step {ans.step}")
    ax.set(title=f"bridge used: interchange switch rate\nat {r1} (colours), at {at} (black); {ctl.n_heldout_pairs} held-out pairs",
           ylabel="answers switched to t(b', r2)  /  probe accuracy", ylim=(-0.02, 1.02))
    ax.legend(fontsize=6)


@fail_soft
def plot_dynamics(result, stem: Path) -> list[Path]:
    """`result`: a sae_ooc.dynamics.result.DynamicsResult (read by attribute; viz imports no producer)."""
    pts = result.checkpoints
    hooks = result.hooks
    ctl = result.control
    if ctl:  # a fourth column: is the bridge used (DAS interchange), beside readable (probe)
        fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
        (a_acc, a_r1, a_r2, a_used), (a_ll, a_patch, a_sae, a_off) = axes
        a_off.axis("off")
    else:  # the figure of runs without it, unchanged
        fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
        (a_acc, a_r1, a_r2), (a_ll, a_patch, a_sae) = axes
    r1, at = read_at(result)
    if ctl:
        _plot_used(a_used, pts, ctl, r1, result.answers)
    first = " (first token)" if given(result.targets) else ""  # multi-token names: the logit lens ranks their first token
    for split, color in SPLIT_STYLE.items():
        xs, ys = _series(pts, lambda p, s=split: p.accuracy[s])
        a_acc.plot(xs, ys, "o-", color=color, ms=3, label=split)
    a_acc.set(title="accuracy per split (every example)", ylabel="accuracy", ylim=(-0.02, 1.02))
    a_acc.legend(fontsize=7)
    cmap = plt.get_cmap("viridis")
    for ax, pos in ((a_r1, r1), (a_r2, at)):
        for i, h in enumerate(hooks):
            xs, ys = _series(pts, lambda p, h=h: p.probes[h][pos].heldout_acc)
            ax.plot(xs, ys, "o-", ms=3, color=cmap(i / max(len(hooks) - 1, 1)), label=_layer_label(h))
        xs, ys = _series(pts, lambda p: max((r[pos].shuffled_acc for r in p.probes.values() if pos in r), default=None))
        ax.plot(xs, ys, ":", color="grey", label="shuffled labels (max over layers)")
        n = next((r[pos].n_heldout for p in pts for r in p.probes.values() if pos in r), "?")
        ax.set(title=f"bridge probe at {pos} ({n} held-out prefixes)", ylabel="held-out accuracy", ylim=(-0.02, 1.02))
        ax.legend(fontsize=7)
    labels = pts[0].logit_lens.labels if pts else []
    for i, lab in enumerate(labels):
        xs, ys = _series(pts, lambda p, i=i: 1 + p.logit_lens.series[f"bridge@{r1}"].median_rank[i])
        name = "final resid_post" if lab == "final_post" else f"resid_pre {lab.split('_')[0]}"
        a_ll.plot(xs, ys, "o-", ms=3, color=cmap(i / max(len(labels) - 1, 1)), label=name)
    a_ll.set(yscale="log", title=f"logit lens: bridge{first} at {r1} ({result.n_prompts_logit_lens} test_id prompts)",
             ylabel=f"median rank of the bridge{first} (1 = top)")
    a_ll.legend(fontsize=7)
    for pos, color in ((r1, "C0"), (at, "C1")):
        xs, ys = _series(pts, lambda p, pos=pos: p.patching.by_position[f"peak@{pos}"].value)
        a_patch.plot(xs, ys, "o-", ms=3, color=color, label=f"max over layers at {pos}")
    a_patch.set(title=f"resid_pre patching into corrupted ({result.n_patch_pairs} test_id pairs)",
                ylabel="logit difference recovered (1 = clean)")
    a_patch.axhline(0, color="grey", lw=0.6)
    a_patch.legend(fontsize=7)
    for i, h in enumerate(result.sae_hooks):
        for key, ls in ((f"bridge@{r1}", "-"), (f"bridge@{at}", "--")):
            xs, ys = _series(pts, lambda p, h=h, key=key: p.saes[h].alignment[key].mean_auroc_features)
            a_sae.plot(xs, ys, ls, marker="o", ms=3, color=f"C{i}", label=f"{_layer_label(h)}: {key}")
        xs, ys = _series(pts, lambda p, h=h: p.saes[h].alignment[f"bridge@{r1}"].shuffled_mean_auroc)
        a_sae.plot(xs, ys, ":", color=f"C{i}", alpha=0.6, label=f"{_layer_label(h)}: shuffled labels")
    a_sae.set(title="per-checkpoint SAEs: best feature per bridge value", ylabel="mean held-out AUROC", ylim=(0.25, 1.02))
    if result.sae_hooks:
        a_sae.legend(fontsize=6)
    else:
        a_sae.text(0.5, 0.5, "no SAEs (dynamics.sae_training_tokens = 0)", ha="center", transform=a_sae.transAxes)
    rise = result.rise
    for ax in axes.flat:
        if not ax.axison:
            continue
        mark_empty(ax)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("training step (symlog)")
        ax.grid(alpha=0.3)
        if rise["valid_id"].found:
            ax.axvline(rise["valid_id"].moment, color="k", lw=1, label="_valid_id rise")
        if rise["test_id"].found:
            ax.axvline(rise["test_id"].moment, color="k", lw=1, ls="--", label="_test_id rise")
    fig.suptitle("Training dynamics — solid line: valid_id reaches half its rise (located there); dashed: test_id (reported only)")
    return save_figure(fig, stem, tight_layout=True)
