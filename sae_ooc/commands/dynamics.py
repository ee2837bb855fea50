"""Training dynamics: accuracy, bridge probes, logit lens, patching and per-checkpoint SAEs against training step.

Runs over every checkpoint train saved (log-spaced, plus step 0) and `dynamics.dense_checkpoints` more, replayed
exactly from the nearest saved one across the window where valid_id accuracy rises (valid_id locates it; test_id is
only reported). Not part of `sae-ooc pipeline`: run it after the pipeline's harvest. Writes RUN/dynamics/
(dynamics.json, dynamics.png/.svg, checkpoints/step_N/); `sae-ooc report` shows it when present.
Per checkpoint too, whether the bridge at r1 is used: a DAS subspace's interchange switch rate on held-out prefixes.
Settings: the `dynamics` config section (dense_checkpoints, dense_max_ratio, rise_low/high, n_prompts, patch_pairs,
sae_hooks, sae_training_tokens, das_rank, das_hooks, das_steps, das_fit_pairs).
"""

from sae_ooc.commands import files_written, verb


def summarize(run, result) -> str:
    i = result.info
    rd = i.get("bridge_first_readable")
    where = (f"the bridge is first readable (held-out probe >= 0.5, above shuffled labels and the step-0 model) at step {rd['step']} in {rd['hook']} at {rd['position']}"
             if rd else "no probe read the bridge at any checkpoint")
    comp = i.get("composition_step_test_id")
    order = {True: "before", False: "not before", None: "(no test_id rise to compare with)"}[i.get("bridge_readable_before_composition")]
    return (f"dynamics: {verb(result)} {files_written(run, 'dynamics')}: {i.get('n_checkpoints')} checkpoints ({i.get('replayed')} replayed); "
            f"test_id rises (half way) at step {comp}; {where}, {order} composition" + _used(i))


def _used(info: dict) -> str:
    if "bridge_first_used" not in info:  # dynamics.das_rank 0
        return ""
    u = info["bridge_first_used"]
    return (f"; used (DAS switch rate >= half its final {u['final_switch']:.2f}) from step {u['step']} in {u['hook']}" if u
            else "; no DAS interchange switched an answer (the bridge is never shown used)")
