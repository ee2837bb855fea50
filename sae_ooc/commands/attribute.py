"""Rank SAE nodes by their patching effect on the A→C answer into RUN/attribution/, and check atp/ig against exact patching.

Node effects go to RUN/attribution/node_effects.safetensors (+ node_effects.json); with --validate (default),
every estimated method is compared with exact patching on attribution.validate_pairs pairs (validation.json
and a scatter plot). Settings: the `attribution` config section (method, metric, split, n_pairs, ig_steps, ...).
"""

import argparse

from sae_ooc.commands import verb


def add_arguments(p) -> None:
    p.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                   help="compare atp, ig and atp_verified with exact patching on attribution.validate_pairs pairs "
                        "(RUN/attribution/validation.json); --no-validate to skip")


def options(args) -> dict:
    return {"validate": args.validate}


def summarize(run, result) -> str:
    from sae_ooc.circuits.effects import EFFECTS_JSON
    from sae_ooc.circuits.validation import VALIDATION_FILE
    from sae_ooc.io import read_json

    s = read_json(run.attribution_dir / EFFECTS_JSON)
    top = s["nodes"][0] if s["nodes"] else None
    lines = [f"attribute: {verb(result)} {run.attribution_dir}: {s['method']} on {s['n_pairs']} pairs, "
             f"{s['metric']} clean {s['metric_clean_mean']:.3f} -> corrupted {s['metric_corrupt_mean']:.3f}; "
             f"{s['n_nonzero_nodes']} nonzero nodes" + (f", top {top['node']} ({top['mean_effect']:+.3f})" if top else "")]
    if (run.attribution_dir / VALIDATION_FILE).exists():  # written exactly when the stage ran with validation
        v = read_json(run.attribution_dir / VALIDATION_FILE)
        k = v["top"]
        for m, r in v["methods"].items():
            lines.append(f"  {m} vs exact on {v['n_pairs']} pairs, {v['n_active_nodes']} active nodes: Spearman {r['spearman_all']:.3f} "
                         f"(top {k}: {r[f'spearman_top{k}']:.3f}), top-10 overlap {r['top10_overlap']:.2f}, "
                         f"{'trusted' if r['trusted'] else 'NOT trusted'}")
    return "\n".join(lines)
