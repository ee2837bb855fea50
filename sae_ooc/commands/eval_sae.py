"""Evaluate every SAE in RUN/saes: reconstruction, spliced-in task metrics, ground-truth feature alignment.

Writes RUN/saes/<hook_name>/metrics.json, RUN/saes/summary.md and alignment heatmaps RUN/saes/alignment_<variable>.png/.svg.
"""

from sae_ooc.saes.evaluate import run_eval_sae


def add_arguments(p) -> None:
    pass


def main(run, args) -> int:
    run.check_and_save_config(force=False)
    done = run_eval_sae(run, force=args.force)
    print(f"eval-sae: {'wrote' if done else 'unchanged, skipped'} {run.saes_dir / 'summary.md'}")
    return 0
