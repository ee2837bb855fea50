"""Rerun the SAE training choices of the default experiment on valid_id, two seeds each.

    python scripts/tune_sae_valid.py runs/default OUT_DIR [--only NAME ...]

Each variant is one `train_sae.py`-style SAE on the run's activation cache (sae_ooc.saes.standalone), judged by
spliced-in loss recovered on **valid_id** (what a choice reads); explained variance, L0 and dead features are on the
held-out prefixes of the cache, and test_id accuracy with the SAE spliced in is printed as reported only. Prints a
Markdown table (mean and the two seeds) for results/sae_tuning.md; finished variants are reused on a rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from sae_ooc.config import load_config
from sae_ooc.saes.standalone import _run_task_eval, train_standalone

B1, B3P, B0 = "blocks.1.hook_resid_pre", "blocks.3.hook_resid_post", "blocks.0.hook_resid_pre"
# name: (hook, overrides of the default `sae` section); the default's own values are in configs/default.yaml
VARIANTS = {
    "b1_default": (B1, {}),
    "b1_d256": (B1, {"d_sae": 256}),
    "b3post_default": (B3P, {}),
    "b3post_d256": (B3P, {"d_sae": 256}),
    "b0_k3_default": (B0, {}),
    "b0_k4": (B0, {"k": 4}),
    "b1_batch2048": (B1, {"batch_size": 2048}),
    "b1_lr1e-3": (B1, {"lr": 1e-3}),
    "b1_aux1_dw50": (B1, {"aux_loss_coefficient": 1.0, "dead_feature_window": 50}),
}
SEEDS = (0, 1)
ONE_SEED = ("b3post_default", "b3post_d256", "b1_batch2048", "b1_lr1e-3", "b1_aux1_dw50")  # compared with the default's two-seed spread (time)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("out")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    run, out = Path(args.run), Path(args.out)
    cfg = load_config(run / "config.yaml")
    acts = run / "activations"
    rows = []
    task_eval = None
    for name, (hook, over) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        per_seed = []
        for seed in SEEDS[:1] if name in ONE_SEED else SEEDS:
            d = out / f"{name}_s{seed}"
            mfile = d / "tuning.json"
            if mfile.is_file():
                per_seed.append(json.loads(mfile.read_text()))
                continue
            p = dataclasses.replace(cfg.sae, seed=seed, **over)
            if "d_sae" in over:
                p = dataclasses.replace(p, d_sae_by_hook={})
            if "k" in over:
                p = dataclasses.replace(p, k_by_hook={})
            m = train_standalone(acts, hook, d, p)
            if task_eval is None:
                from sae_ooc.activations.cache import open_cache

                task_eval = _run_task_eval(acts, open_cache(acts), "cpu")
            from sae_lens import SAE

            t = task_eval(SAE.load_from_disk(d))
            r = m[hook]["reconstruction"] if hook in m else m["reconstruction"]
            rec = {"loss_recovered_valid_id": t.get("loss_recovered_valid_id"), "ev": r["explained_variance"], "l0": r["l0"],
                   "dead": r["dead_fraction"], "test_id_acc": t.get("splits", {}).get("test_id", {}).get("acc_sae")}
            mfile.write_text(json.dumps(rec))
            per_seed.append(rec)
        rows.append((name, hook, over, per_seed))
        print(json.dumps({"variant": name, "seeds": per_seed}), flush=True)
    print("\n| variant | hook | change | **loss recovered, valid_id** (mean; seeds) | EV held-out prefixes | L0 | dead | test_id acc spliced (reported) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, hook, over, ps in rows:
        def mean(k):
            return sum(p[k] for p in ps) / len(ps)
        lr = ", ".join(f"{p['loss_recovered_valid_id']:.3f}" for p in ps)
        print(f"| {name} | {hook} | {over or 'default'} | **{mean('loss_recovered_valid_id'):.3f}** ({lr}) | {mean('ev'):.3f} | "
              f"{mean('l0'):.1f} | {100 * mean('dead'):.1f}% | {mean('test_id_acc'):.3f} |")


if __name__ == "__main__":
    main()
