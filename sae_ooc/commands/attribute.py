"""Rank SAE nodes by their patching effect on the A→C answer into RUN/attribution/, and check atp/ig against exact patching.

Node effects go to RUN/attribution/node_effects.safetensors (+ node_effects.json); with --validate (default),
every estimated method is compared with exact patching on attribution.validate_pairs pairs (validation.json
and a scatter plot). Settings: the `attribution` config section (method, metric, split, n_pairs, ig_steps, ...).
"""

import argparse

from sae_ooc.commands import files_written, verb
from sae_ooc.viz.text import fmt as num


def add_arguments(p) -> None:
    p.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                   help="compare atp, ig and atp_verified with exact patching on attribution.validate_pairs pairs "
                        "(RUN/attribution/validation.json); --no-validate to skip")


def options(args) -> dict:
    return {"validate": args.validate}


def summarize(run, result) -> str:
    from sae_ooc.circuits.attribute_result import AttributionValidation, NodeEffectsSummary  # no torch there

    s = NodeEffectsSummary.load(run.attribution_dir)
    top = s.nodes[0] if s.nodes else None
    lines = [f"attribute: {verb(result)} {files_written(run, 'attribute')}: {s.method} on {s.n_pairs} pairs, "
             f"{s.metric} clean {s.metric_clean_mean:.3f} -> corrupted {s.metric_corrupt_mean:.3f}; "
             f"{s.n_nonzero_nodes} nonzero nodes" + (f", top {top.node} ({top.mean_effect:+.3f})" if top else "")]
    v = AttributionValidation.load_if(run.attribution_dir)  # written exactly when the stage ran with validation
    if v is not None:
        for m, r in v.methods.items():
            lines.append(f"  {m} vs exact on {v.n_pairs} pairs (per pair, mean): recall of exact's top 10 {num(r.recall_top10)}, "
                         f"top 50 {num(r.recall_top50)}; Spearman on the nodes it did not patch exactly {num(r.spearman_not_exact)}; "
                         f"{r.speedup_vs_batched_exact:.1f}x batched exact; {'trusted' if r.trusted else 'NOT trusted'}")
    return "\n".join(lines)
