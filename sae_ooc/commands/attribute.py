"""Rank SAE nodes by their patching effect on the A→C answer into RUN/attribution/, and check atp/ig against exact patching.

Node effects go to RUN/attribution/node_effects.safetensors (+ node_effects.json); with --validate,
atp and ig are compared with exact patching on attribution.validate_pairs pairs (validation.json and a
scatter plot). Settings: the `attribution` config section (method, metric, split, n_pairs, ig_steps, ...).
"""

import argparse

from sae_ooc.circuits.attribution import EFFECTS_JSON, VALIDATION_FILE, run_attribute
from sae_ooc.io import read_json


def add_arguments(p) -> None:
    p.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                   help="compare atp and ig with exact patching on attribution.validate_pairs pairs (RUN/attribution/validation.json; "
                        "default on, skipped when up to date; --no-validate to skip)")


def main(run, args) -> int:
    run.check_and_save_config(force=args.force)
    done = run_attribute(run, force=args.force, validate=args.validate, device=args.device)
    s = read_json(run.attribution_dir / EFFECTS_JSON)
    top = s["nodes"][0] if s["nodes"] else None
    print(f"attribute: {'wrote' if done else 'unchanged, skipped'} {run.attribution_dir}: {s['method']} on {s['n_pairs']} pairs, "
          f"{s['metric']} clean {s['metric_clean_mean']:.3f} -> corrupted {s['metric_corrupt_mean']:.3f}; "
          f"{s['n_nonzero_nodes']} nonzero nodes" + (f", top {top['node']} ({top['mean_effect']:+.3f})" if top else ""))
    if args.validate:
        v = read_json(run.attribution_dir / VALIDATION_FILE)
        top = v["top"]
        for m, r in v["methods"].items():
            print(f"  {m} vs exact on {v['n_pairs']} pairs, {v['n_active_nodes']} active nodes: Spearman {r['spearman_all']:.3f} "
                  f"(top {top}: {r[f'spearman_top{top}']:.3f}), top-10 overlap {r['top10_overlap']:.2f}, "
                  f"{'trusted' if r['trusted'] else 'NOT trusted'}")
    return 0
