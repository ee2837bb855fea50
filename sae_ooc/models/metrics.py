"""RUN/model/final_metrics.json as a typed object: what the train stage (or `sae-ooc finetune`) measured at the end.

    fm = TrainMetrics.load(run.model_dir)
    fm.accuracy["test_id"], fm.reached("test_id", 0.9)
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import StageOutput, key

THRESHOLDS = (0.5, 0.9)  # accuracies whose first step is recorded


@dataclass(kw_only=True)
class TrainMetrics(StageOutput):
    """The trained model's accuracy on every example of each split, and when the held-out splits rose (stage `train`)."""

    FILE = "final_metrics.json"
    STAGE = "train"
    FORMAT_NAME = "sae_ooc.train"

    steps: int  # optimizer steps taken
    stopped_early: bool  # early stopping ended training
    stop_split: str  # the split early stopping read (in-sample for it)
    minutes: float  # wall-clock minutes of training
    accuracy: dict[str, float]  # split -> accuracy on every example (answer_len > 1: the whole name, greedy)
    loss: dict[str, float]  # split -> mean cross-entropy of the answer
    majority_rate: dict[str, float]  # split -> accuracy of always answering the split's most common answer
    n_examples: dict[str, int]
    valid_id_0_5_step: int | None = key("valid_id_0.5_step")  # first evaluation step with valid_id accuracy >= 0.5 (None: never)
    valid_id_0_5_minutes: float | None = key("valid_id_0.5_minutes")
    valid_id_0_9_step: int | None = key("valid_id_0.9_step")
    valid_id_0_9_minutes: float | None = key("valid_id_0.9_minutes")
    test_id_0_5_step: int | None = key("test_id_0.5_step")
    test_id_0_5_minutes: float | None = key("test_id_0.5_minutes")
    test_id_0_9_step: int | None = key("test_id_0.9_step")
    test_id_0_9_minutes: float | None = key("test_id_0.9_minutes")

    def reached(self, split: str, threshold: float) -> tuple[int | None, float | None]:
        """(step, minutes) at which `split` (valid_id or test_id) first reached `threshold` (0.5 or 0.9); (None, None): never."""
        th = str(threshold).replace(".", "_")
        return getattr(self, f"{split}_{th}_step"), getattr(self, f"{split}_{th}_minutes")
