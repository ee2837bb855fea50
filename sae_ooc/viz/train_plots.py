"""The model's training figure (RUN/model/accuracy.png/.svg): accuracy and loss per split against the step.

A linear step axis from 0 (evaluations are every `train.eval_every` steps, evenly spaced, so a log axis would
crowd them to the right and drop step 0). Each split has its own colour, marker and line style, and a
width and marker size of its own (nested, hollow), so lines that coincide (train and atomic often do) stay visible;
one legend below both panels.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import MaxNLocator

from sae_ooc.viz.plots import fail_soft, mark_empty, na_axes, plt, save_figure

SPLITS = (("train", "train", "o", "-"), ("valid_id", "valid (ID)", "s", "--"), ("test_id", "test (ID)", "^", "-."),
          ("test_ood_sys", "test (OOD, systematic)", "v", ":"),
          ("test_unanswerable", "unanswerable", "x", (0, (1, 2))), ("atomic_test", "atomic", "D", (0, (5, 1.5))))


@fail_soft
def plot_training(records: list[dict], stem: Path) -> list[Path]:
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4.2))
    steps = [r["step"] for r in records]
    every = max(1, len(steps) // 20)  # markers on at most ~20 points per line: a dense run stays legible
    for k, (split, label, marker, ls) in enumerate(SPLITS):
        if not any(f"{split}_acc" in r for r in records):
            continue  # splits an older run did not evaluate
        # earlier splits drawn wider with larger hollow markers: where two splits coincide both stay visible
        style = {"color": f"C{k}", "marker": marker, "ls": ls, "ms": 8 - k, "mfc": "none", "mew": 1.2, "markevery": (k % every, every),
                 "alpha": 0.85, "lw": 2.6 - 0.4 * k, "label": label}
        ax_acc.plot(steps, [r.get(f"{split}_acc", float("nan")) for r in records], **style)
        ax_loss.plot(steps, [r.get(f"{split}_loss", float("nan")) for r in records], **style)
    ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02), title="accuracy")
    ax_loss.set(xlabel="step", ylabel="cross-entropy at the answer", title="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True, steps=[1, 2, 2.5, 5, 10]))
    handles, labels = ax_acc.get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
        for ax in (ax_acc, ax_loss):
            mark_empty(ax)
    else:
        for ax in (ax_acc, ax_loss):
            na_axes(ax, "no evaluation recorded")
    return save_figure(fig, stem, tight_layout={"rect": (0, 0.06, 1, 1)})  # room for the legend under the panels
