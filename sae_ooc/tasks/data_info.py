"""The data stage's `info` block in RUN/stages.json as a typed object: split sizes and majority-answer rates (the
report's task and model sections read it). Torch- and datasets-free.

    info = DataInfo.of(run)          # None before the data stage has run
    info.sizes["test_id"], info.majority_rate["test_id"]
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, Record


@dataclass(kw_only=True)
class DataInfo(Record):
    """What stage `data` records of the task it wrote (RUN/stages.json's "data" → "info")."""

    sizes: dict[str, int]  # split -> examples
    majority_rate: dict[str, float]  # split -> accuracy of always giving the split's most common answer
    finetune: dict = OMIT  # a fine-tuning run's data/finetune.json less its new_facts (FinetuneMeta's keys)

    @classmethod
    def of(cls, run) -> "DataInfo | None":
        """The data stage's info from `run`'s stages.json; None where the stage has not run (or recorded none)."""
        rec = run.stage_record("data") or {}
        return cls.from_json(rec["info"]) if rec.get("info") else None
