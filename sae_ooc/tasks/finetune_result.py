"""RUN/data/finetune.json as a typed object: the new facts of a fine-tuning run and how its splits were made (stage
`data` with task.finetune; the report's fine-tuning section reads it)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, StageOutput

FINETUNE_FILE = "finetune.json"


@dataclass(kw_only=True)
class FinetuneMeta(StageOutput):
    """What a fine-tuning run teaches on top of model.run's model (sae_ooc.tasks.finetune)."""

    FILE = FINETUNE_FILE
    STAGE = "data"
    FORMAT_NAME = "sae_ooc.finetune"

    model_run: str  # the pretrained run
    n_free_pairs: int  # (h, r) pairs its training never taught
    n_new_facts: int
    pretrain_ood_pairs_reused: int  # of them, the pairs of its test_unanswerable (never trained)
    new_facts: list[list[int]]  # [h, r, t] (planted ids)
    chained: bool  # model.run is itself a fine-tuning run
    atomic: bool
    control: bool  # two-hop examples of the new facts are trained too (the control)
    phi: float  # the control's two-hop examples per atomic fact
    n_control_examples: int
    replay: float  # task.finetune.replay
    copies_of_new_rows: int
    replay_share: float  # share of the train rows that are replayed pretraining rows
    pool: dict[str, int]  # held-out two-hop questions per kind (new_new, new_old, old_new)
    r2_shortcut: dict[str, float | None]  # split -> accuracy of answering the most common taught tail of the last relation
    old_n_entities: int = OMIT  # entity ids from here on are new (task.finetune.new_entities; relation ids moved up by them)
    new_entities: int = OMIT  # task.finetune.new_entities
    new_entities_added: int = OMIT  # of them, added by this run (0 in a fine-tuning run of one, which keeps them)
