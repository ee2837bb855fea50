"""Issue 24 section 3: does the natural-language task compose at the toy's scale? Accuracy curves of natural-language
runs beside the toy's, against training steps and against the task's scale (results/natural/curves.{png,svg}).

    python scripts/natural_curves.py OUT_DIR LABEL=RUN_OR_METRICS_JSONL[@E/R/k/phi] ...

Each argument is a run directory (its model/metrics.jsonl and config.yaml are read) or a metrics.jsonl file with a
scale given after `@` (entities/relations/facts per entity/phi). valid_id, test_id (held-out two-hop questions) and
atomic_test are drawn as they were logged: a natural run's atomic_test asks its facts in held-out paraphrases, a toy
run's asks the trained facts themselves (drawn dotted). The scale panel takes, per run, the row of the best valid_id
(valid_id chose it: in-sample) and its test_id and atomic_test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def _read(arg: str) -> tuple[str, list[dict], dict]:
    label, _, rest = arg.partition("=")
    path, _, scale = rest.partition("@")
    p = Path(path)
    rows = [json.loads(x) for x in ((p / "model" / "metrics.jsonl") if p.is_dir() else p).read_text().splitlines() if x.strip()]
    if scale:
        e, r, k, phi = scale.split("/")
        task = {"n_entities": int(e), "n_relations": int(r), "facts_per_entity": int(k), "phi": float(phi), "render": "natural"}
    else:
        task = yaml.safe_load((p / "config.yaml").read_text())["task"]
    return label, rows, task


def main(out: str, *args: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [_read(a) for a in args]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, rows, task), c in zip(runs, colors):
        steps = [r["step"] for r in rows]
        natural = task.get("render") == "natural"
        axes[0].plot(steps, [r["valid_id_acc"] for r in rows], color=c, ls="-", label=f"{label}: valid_id")
        axes[0].plot(steps, [r["test_id_acc"] for r in rows], color=c, ls="--", label=f"{label}: test_id")
        axes[1].plot(steps, [r["atomic_test_acc"] for r in rows], color=c, ls="-" if natural else ":",
                     label=f"{label}: atomic_test" + (" (held-out paraphrases)" if natural else " (trained facts)"))
        axes[1].plot(steps, [r["train_acc"] for r in rows], color=c, ls="-.", alpha=0.6, label=f"{label}: train")
    for ax, title in zip(axes[:2], ("two-hop questions: held out (valid_id chooses, test_id reports)",
                                    "atomic facts and training rows")):
        ax.set(xlabel="training step", ylabel="accuracy", ylim=(-0.02, 1.02), title=title)
        ax.axhline(0.9, color="grey", lw=0.6)
        ax.legend(fontsize=7)
    ax = axes[2]
    nat = [(label, rows, task) for label, rows, task in runs if task.get("render") == "natural"]
    xs, names = [], []
    for i, (label, rows, task) in enumerate(nat):
        best = max(rows, key=lambda r: (r["valid_id_acc"], -r["step"]))
        xs.append(i)
        names.append(f"{label}\nE{task['n_entities']} R{task['n_relations']} k{task['facts_per_entity']} phi{task['phi']:g}")
        for key, marker, c in (("valid_id_acc", "s", colors[0]), ("test_id_acc", "o", colors[1]), ("atomic_test_acc", "^", colors[2])):
            ax.scatter([i], [best[key]], marker=marker, color=c, label=key[:-4].replace("atomic_test", "held-out paraphrases")
                       + (" (in-sample)" if key == "valid_id_acc" else "") if i == 0 else None)
            ax.annotate(f"{best[key]:.2f}", (i, best[key]), textcoords="offset points", xytext=(6, -3), fontsize=7)
    ax.set_xticks(xs, names, fontsize=7)
    ax.set(ylabel="accuracy at the best valid_id", ylim=(-0.02, 1.02), xlim=(-0.5, len(xs) - 0.5),
           title="natural-language runs by scale (row of best valid_id)")
    ax.axhline(0.9, color="grey", lw=0.6)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(out).mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        fig.savefig(Path(out) / f"curves.{ext}", dpi=120)
    print(f"wrote {out}/curves.png, curves.svg")


if __name__ == "__main__":
    main(*sys.argv[1:])
