"""The one definition of a dead SAE feature, for every number called "dead": train-sae's log line and metrics.json,
eval-sae's metrics and summary, the feature browser and the report. Torch-free (the report and the browser's index
name the rule).

Its window is the whole of the held-out prefixes (RUN/saes/heldout_rows.safetensors: data the SAE was not trained on).
It is not the last steps of training (SAELens's `sae.dead_feature_window`, which only steers the AuxK loss; train-sae
logs it apart, as `dead_fraction_training_window` in train_log.jsonl) nor the whole cache (training rows included:
a feature that fires only on prompts it was trained on would not count as dead there).
"""

from __future__ import annotations

DEAD_ON = "never active on the held-out prefixes"


def dead_on_heldout_prefixes(n_active):
    """The dead features (`DEAD_ON`) as a bool tensor like `n_active`: how many held-out rows each feature is active on.
    Rows that share a prefix have the same activation, so counting rows or distinct prefixes gives the same answer."""
    return n_active == 0
