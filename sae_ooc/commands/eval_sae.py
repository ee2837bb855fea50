"""Evaluate every SAE in RUN/saes: reconstruction, spliced-in task metrics, ground-truth feature alignment.

Writes RUN/sae_eval/<hook_name>/metrics.json (with the feature labels circuit and query show), RUN/sae_eval/summary.md
and alignment heatmaps RUN/sae_eval/alignment_<variable>.png/.svg; RUN/saes is only read.
"""

from sae_ooc.commands import files_written, verb


def summarize(run, result) -> str:
    info = result.info
    recovered = ", ".join(f"{h} {'n/a' if v is None else format(v, '.3f')}" for h, v in info.get("loss_recovered", {}).items())
    return f"eval-sae: {verb(result)} {files_written(run, 'eval-sae')}" + (f": loss recovered {recovered}" if recovered else "")
