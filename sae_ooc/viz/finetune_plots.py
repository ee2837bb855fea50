"""A fine-tuning run's figure (RUN/model/finetune.png/.svg): accuracy on the new facts and their two-hop questions,
and on the pretrained run's splits (forgetting), against the fine-tuning step (step 0 = the pretrained model)."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.viz.plots import fail_soft, mark_empty, plt, save_figure

# (split in metrics.jsonl, label, colour, line style): new facts solid, the pretrained run's splits dashed
CURVES = (("atomic_test", "new atomic facts (taught)", "C0", "-"), ("new_new", "two-hop: new, new", "C1", "-"),
          ("new_old", "two-hop: new, old", "C2", "-"), ("old_new", "two-hop: old, new", "C3", "-"),
          ("test_id", "pretraining test_id (old, old)", "C4", "--"), ("pretrain_atomic", "pretraining atomic facts", "C5", "--"))


@fail_soft
def plot_finetune(records: list[dict], stem: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = [r["step"] for r in records]
    for split, label, colour, ls in CURVES:
        if any(f"{split}_acc" in r for r in records):
            ax.plot(steps, [r.get(f"{split}_acc", float("nan")) for r in records], color=colour, ls=ls, marker="o", ms=3, label=label)
    ax.set(xlabel="fine-tuning step", ylabel="accuracy", ylim=(-0.02, 1.02),
           title="new facts taught by fine-tuning: learned, composed, and forgetting")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    mark_empty(ax)
    fig.tight_layout()
    return save_figure(fig, stem)
