"""RUN/model/final_metrics.json as a typed object: what the train stage (or `sae-ooc finetune`) measured at the end.

    fm = TrainMetrics.load(run.model_dir)
    fm.accuracy["test_id"], fm.reached("test_id", 0.9)
    rows = read_train_log(run.model_dir)     # RUN/model/metrics.jsonl: the periodic evaluations, typed
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.records import Record, StageOutput, key, rest

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


METRICS_LOG = "metrics.jsonl"  # RUN/model/metrics.jsonl: one EvalRow a line (models.train.METRICS_FILE)


@dataclass(kw_only=True)
class EvalRow(Record):
    """One periodic evaluation of the train stage (or `sae-ooc finetune`): a line of RUN/model/metrics.jsonl."""

    step: int  # optimizer steps taken (0: before training)
    elapsed_s: float  # wall-clock seconds of training so far
    lr: float  # learning rate of the last step
    loss: float | None  # mean training loss since the last evaluation (None at step 0)
    splits: dict[str, float] = rest()  # "<split>_acc" and "<split>_loss" on a fixed subsample of each split

    def acc(self, split: str) -> float | None:
        """`split`'s accuracy at this evaluation (None where the row has none)."""
        return self.splits.get(f"{split}_acc")

    @property
    def accuracy(self) -> dict[str, float]:
        """{split: accuracy} of every split the row measured."""
        return {k[:-4]: v for k, v in self.splits.items() if k.endswith("_acc") and isinstance(v, (int, float))}


def read_train_log(model_dir: str | Path) -> list[EvalRow] | None:
    """The evaluation rows of RUN/model/metrics.jsonl in order, None where the file is missing; one line naming the
    file and the fix where it is unreadable."""
    path = Path(model_dir) / METRICS_LOG
    if not path.is_file():
        return None
    try:
        return [EvalRow.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is unreadable ({e}); rerun `sae-ooc train --force --run {Path(model_dir).parent}`") from None


def train_log_text(rows: list[EvalRow]) -> str:
    """metrics.jsonl's bytes for `rows` (json.dumps per line, as the train stage appends them)."""
    return "".join(json.dumps(r.to_json()) + "\n" for r in rows)
