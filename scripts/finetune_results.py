"""Collect fine-tuning runs (model.source: run, issue 24) into results/finetune/runs.json and a markdown table.

    python scripts/finetune_results.py DIR/run_a DIR/run_b ... --out results/finetune/runs.json

Per run: its settings, steps, the accuracy of every fine-tuning split at the end with a 95% Wilson interval, the
majority-answer rate and the r2 shortcut (RUN/data/finetune.json), and the pretrained model's accuracy (step 0)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

# train: the taught rows (a natural run's new-fact documents; its atomic_test asks them in held-out paraphrases)
SPLITS = ("train", "atomic_test", "new_new", "new_old", "old_new", "new_valid", "test_id", "pretrain_atomic")


def wilson(p: float, n: int) -> list[float] | None:
    """The 95% Wilson interval (sae_ooc.saes.probes.wilson), to 3 decimals."""
    from sae_ooc.saes.probes import wilson as interval

    ci = interval(p, n)
    return None if ci is None else [round(v, 3) for v in ci]


def collect(run: Path) -> dict:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    fm = json.loads((run / "model" / "final_metrics.json").read_text())
    meta = json.loads((run / "data" / "finetune.json").read_text())
    first = json.loads((run / "model" / "metrics.jsonl").read_text().splitlines()[0])
    acc, n = fm["accuracy"], fm["n_examples"]
    t = cfg["train"]
    return {"model_run": cfg["model"]["run"], "task.finetune": cfg["task"]["finetune"],
            "train": {k: t[k] for k in ("steps", "lr", "trainable", "stop_on", "stop_at_valid_id", "eval_every")},
            "steps_run": fm["steps"], "stopped_early": fm["stopped_early"],
            "accuracy": {s: acc[s] for s in SPLITS}, "ci95_wilson": {s: wilson(acc[s], n[s]) for s in SPLITS},
            "n": {s: n[s] for s in SPLITS}, "majority_rate": {s: fm["majority_rate"][s] for s in SPLITS},
            "r2_shortcut": meta["r2_shortcut"], "before_step0": {s: first.get(f"{s}_acc") for s in SPLITS},
            "replay_share": meta["replay_share"], "n_control_examples": meta["n_control_examples"] if meta["control"] else 0,
            "n_new_facts": meta["n_new_facts"]}


def table(runs: dict) -> str:
    cols = SPLITS
    lines = ["| run | steps | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, r in runs.items():
        cells = []
        for s in cols:
            ci = r["ci95_wilson"][s]
            cells.append(f"{r['accuracy'][s]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
        lines.append(f"| {name} | {r['steps_run']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    runs = {r.name: collect(r) for r in args.runs}
    args.out.write_text(json.dumps(runs, indent=1) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
