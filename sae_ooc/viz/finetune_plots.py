"""A fine-tuning run's figure (RUN/model/finetune.png/.svg): accuracy on the new facts and their two-hop questions,
and on the pretrained run's splits (forgetting), against the fine-tuning step (step 0 = the pretrained model)."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.viz.plots import fail_soft, mark_empty, plt, save_figure

# (split in metrics.jsonl, label, colour, line style): new facts solid, the pretrained run's splits dashed
CURVES = (("atomic_test", "new atomic facts (taught)", "C0", "-"), ("new_new", "two-hop: new, new", "C1", "-"),
          ("new_old", "two-hop: new, old", "C2", "-"), ("old_new", "two-hop: old, new", "C3", "-"),
          ("test_id", "pretraining test_id (old, old)", "C4", "--"), ("pretrain_atomic", "pretraining atomic facts", "C5", "--"))
# a natural task's atomic_test (and its pretrain_atomic) asks the facts in held-out paraphrases; its taught documents are train
NATURAL_LABELS = {"atomic_test": "new atomic facts, held-out paraphrases", "pretrain_atomic": "pretraining atomic facts, held-out paraphrases"}
TAUGHT = ("train", "taught rows (train split, in-sample)", "C6", ":")


@fail_soft
def plot_finetune(records: list[dict], stem: Path, natural: bool = False) -> list[Path]:
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    steps = [r["step"] for r in records]
    curves = [TAUGHT, *((sp, NATURAL_LABELS.get(sp, label), c, ls) for sp, label, c, ls in CURVES)] if natural else CURVES
    for split, label, colour, ls in curves:
        if any(f"{split}_acc" in r for r in records):
            ax.plot(steps, [r.get(f"{split}_acc", float("nan")) for r in records], color=colour, ls=ls, marker="o", ms=3, label=label)
    ax.set(xlabel="fine-tuning step", ylabel="accuracy", ylim=(-0.02, 1.02),
           title="new facts taught by fine-tuning: learned, composed, and forgetting")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the panel: inside it covered the curves
    mark_empty(ax)
    return save_figure(fig, stem, tight_layout=True)


@fail_soft
def plot_finetune_compare(res: dict, stem: Path) -> list[Path]:
    """`sae-ooc compare`'s figure for a pretrained run and its fine-tuning run (sae_ooc.compare.finetune's result): the MLP
    tracing effect by layer at the atomic prompt's last position, the pretrained bridge probe by hook, and the pretrained
    DAS subspace's switch rate beside the residual patch and random subspaces."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    ax = axes[0]
    for name, t in res["tracing"].items():
        last = t["last_position"]
        ax.plot(range(len(t["mlp"])), [row[last] for row in t["mlp"]], marker="o", label=f"{name} (n={t['n_prompts']})")
    ax.set(xlabel="layer (MLP restored)", ylabel="indirect effect on p(tail)", title="causal tracing of atomic facts, last position")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    bp = res["bridge_probe"]
    ax = axes[1]
    hooks = bp["hooks"]
    for case in next(iter(bp["acc"].values()), {}):
        ax.plot(range(len(hooks)), [bp["acc"][h][case] for h in hooks], marker="o", label=case)
    ax.set_xticks(range(len(hooks)), [h.replace("blocks.", "L").replace(".hook_", " ") for h in hooks], fontsize=7, rotation=20)
    ax.set(ylabel="held-out accuracy", ylim=(-0.02, 1.02), title="pretrained bridge probe at r1")
    ax.legend(fontsize=7)
    ax = axes[2]
    das = res["das"]
    if "cases" in das:
        names = list(das["cases"])
        for k, (unit, colour) in enumerate((("unit", "C0"), ("resid_patch", "C7"), ("random", "C3"))):
            vals = [(das["cases"][n].get(unit) or {}).get("switch") for n in names]
            ax.bar([i + (k - 1) * 0.27 for i in range(len(names))], [float("nan") if v is None else v for v in vals], 0.27,
                   color=colour, label={"unit": f"pretrained DAS rank {das['rank']}", "resid_patch": "residual patch",
                                        "random": f"random rank {das['rank']}"}[unit])
        ax.set_xticks(range(len(names)), [f"{n.replace('@', chr(10) + '@')}\n({das['cases'][n]['n_correct_bases']} bases)" for n in names],
                      fontsize=7)
        ax.legend(fontsize=7)
    ax.set(ylabel="switch rate (held out)", ylim=(0, 1.02), title=f"bridge interchange at {das.get('hook', '?')} r1")
    for ax in axes:
        ax.grid(alpha=0.3)
    for ax in axes[:2]:  # line panels (mark_empty reads lines, not bars)
        mark_empty(ax)
    fig.suptitle(f"{Path(res['finetuned_run']).name} fine-tuned from {Path(res['pretrained_run']).name}", fontsize=9)
    return save_figure(fig, stem, tight_layout=True)
