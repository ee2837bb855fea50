"""`task.finetune`: the second fact set a fine-tuning run (`model.source: run`) teaches a model pretrained by sae_ooc."""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.sections.check import check as _check

@dataclass
class FinetuneConfig:
    # new atomic facts (h, r) -> t over the pretrained run's entities and relations, on (h, r) pairs its training never
    # taught (the pairs facts_per_entity < n_relations leaves free, and the pairs never trained: test_unanswerable's); 0 = every such pair
    n_facts: int = 0
    # share of the fine-tuning train split made of model.run's own train split (every row of it; the new rows are
    # repeated to make up the rest): rehearsal against forgetting. 0 = the new atomic facts alone
    replay: float = 0.0
    # the control: the new facts are also taught with two-hop examples of their own (phi per new atomic fact), as
    # pretraining taught the old ones; the held-out two-hop questions are the same as without it
    control: bool = False
    # teach the new atomic facts; false (with control: true) teaches only their two-hop examples: one phase of a
    # data-ordering experiment (facts before their implications or after), the other phase a fine-tuning run on this one
    atomic: bool = True
    phi: float = -1.0  # two-hop examples per new atomic fact in the control (and held out of the test splits); < 0: task.phi
    # new entity tokens e{E}..e{E+k-1} added to model.run's vocabulary (relation ids move up by k) and to its model's
    # embedding and unembedding (rows at the mean of the old entities'); every (h, r) pair of a new entity is free, so the
    # new facts include theirs (with n_facts: 0, all of them), with tails among old and new entities. Toy task only
    new_entities: int = 0
    seed: int = 0  # which free pairs, their tails, which two-hop questions go to the control's train split

    def validate(self, where: str) -> None:
        _check(self.new_entities >= 0, where, "task.finetune.new_entities", "must be >= 0 (0 = no new entity tokens)")
        _check(self.n_facts >= 0, where, "task.finetune.n_facts", "must be >= 0 (0 = every (h, r) pair pretraining never taught)")
        _check(self.atomic or self.control, where, "task.finetune.atomic", "false teaches only the two-hop examples of the "
               "control; set task.finetune.control: true with it, or leave atomic: true")
        _check(0 <= self.replay < 1, where, "task.finetune.replay", "must be in [0, 1): the share of train rows from model.run's train split")
