"""The task's facts as lookup tables, for interventions that ask what the model *should* answer once one fact changes.

Only the atomic facts of the train split count as known: a two-hop answer t(b, r2) is defined when (b, r2) is one of
them. Facts are read from the planted columns (head, r1, answer of the train split's hop-1 rows: entities and relations
in planted-variable space, the toy's token ids), so a natural-language task's paraphrases of one fact are one fact.
Prompts are rendered by `prompter` (sae_ooc.interventions.prompts) as padded token rows (right padding never changes
what the model sees).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sae_ooc.tasks.counterfactuals import HighLevel, high_level
from sae_ooc.tasks.families import inverse_relations
from sae_ooc.tasks.rows import columns
from sae_ooc.interventions.prompts import Prompter, read_batched


@dataclass
class Facts:
    n_entities: int
    pad_id: int
    tail: dict[tuple[int, int], int]  # (h, r) -> t for every atomic fact of the train split (planted ids)
    relations: dict[int, list[int]]  # entity -> the relations it has a train atomic fact for
    inverse: dict[int, int]  # relation -> its inverse relation (reversal family; empty otherwise)
    prompter: Prompter | None = field(default=None, repr=False)
    two_hop_train: frozenset = frozenset()  # (h, r1, r2) of the train split's two-hop facts: prompts the model was trained on
    high: HighLevel = field(default_factory=lambda: high_level("twohop", None), repr=False)  # the family's high-level model (sae_ooc.tasks.counterfactuals)

    @classmethod
    def from_dataset(cls, ds, vocab, family: str, atomic_template: str | None = None) -> Facts:
        """`atomic_template`: a natural-language task's train template, how its atomic prompts are asked."""
        tail: dict[tuple[int, int], int] = {}
        # a fine-tuning run's train split holds its new facts; the facts model.run taught are its pretrain_atomic split
        for split in ("pretrain_atomic", "train") if "pretrain_atomic" in ds else ("train",):
            d = ds[split]
            for h, r, a, hop in zip(*columns(d, "head", "r1", "answer", "hop")):
                if hop == 1:
                    tail[(int(h), int(r))] = int(a)
        d = ds["train"]
        relations: dict[int, list[int]] = {}
        for h, r in sorted(tail):
            relations.setdefault(h, []).append(r)
        inverse = inverse_relations(family, vocab)
        trained = frozenset((int(h), int(r1), int(r2)) for h, r1, r2, hop in zip(*columns(d, "head", "r1", "r2", "hop")) if hop == 2)
        return cls(vocab.n_entities, vocab.pad_id, tail, relations, inverse, Prompter(vocab, atomic_template), trained,
                   high_level(family, vocab))

    @property
    def answer_len(self) -> int:
        return self.prompter.answer_len

    def atomic(self) -> list[tuple[int, int, int]]:
        """Every known (h, r, t), in a fixed order."""
        return [(h, r, t) for (h, r), t in sorted(self.tail.items())]

    def chain(self, e: int, rels) -> int | None:
        """The entity reached from `e` along the relations `rels` (known facts only), None where one hop is unknown:
        t(e, r2) for (r2,), t(t(e, r2), r3) for the threehop family's (r2, r3)."""
        for r in rels:
            e = self.tail.get((int(e), int(r)))
            if e is None:
                return None
        return e

    def answer_via(self, b: int, r1: int, rest) -> int | None:
        """The answer of a question (h, r1, *rest) whose bridge is b, by the family's high-level model (t(b, r2) for two
        hops; the comparison of b with the value of e2 = rest[0]); None where a needed fact is unknown."""
        return self.high.answer(self.tail, b, r1, tuple(rest))

    def counterfactual_bridges(self, b: int, r1: int, rest) -> list[int]:
        """Entities b' != b that give the question (h, r1, *rest) a known answer other than b's: a bridge that changes
        the answer (none for a question without a bridge)."""
        t = self.answer_via(b, r1, rest)
        return [e for e in range(self.n_entities) if e != b and (c := self.answer_via(e, r1, rest)) is not None and c != t]

    def continuations(self, h: int, r1: int, b: int) -> list[tuple]:
        """The `rest`s of the inferred questions (h, r1, *rest) that read the fact (h, r1) -> b (the family's)."""
        return self.high.continuations(self.tail, self.relations, h, r1, b)

    def heads_into(self, b: int) -> list[tuple[int, int]]:
        """Every (h, r1) whose known tail is b."""
        return [(h, r) for (h, r), t in self.tail.items() if t == b]

    def shared_relations(self, b: int, b2: int) -> list[int]:
        """Relations r2 known for both b and b2 with different answers: the two-hop prompts an edit b -> b2 must move."""
        return [r for r in self.relations.get(b, []) if (b2, r) in self.tail and self.tail[(b2, r)] != self.tail[(b, r)]]

    def moved(self, h: int, r1: int, b: int, b2: int) -> list[tuple[tuple, int, int]]:
        """(rest, new answer, old answer) of every inferred question (h, r1, *rest) whose answer an edit (h, r1): b -> b2
        changes, by the family's high-level model."""
        out = []
        for rest in self.continuations(h, r1, b):
            new, old = self.answer_via(b2, r1, rest), self.answer_via(b, r1, rest)
            if new is not None and old is not None and new != old:
                out.append((rest, new, old))
        return out

    def tokens(self, prompts: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        """[n, width] right-padded token rows of atomic (h, r) and two-hop (h, r1, r2) prompts, with room for the
        answer's tokens, and [n] answer positions (the last prompt token)."""
        return self.prompter.rows([self.prompter.render(p) for p in prompts])

    def answer_ids(self, entities) -> torch.Tensor:
        """[n, answer_len] the entities' answer tokens (-1 padded)."""
        return self.prompter.answer_ids(entities)

    def targets(self, entities) -> torch.Tensor:
        """What a loss reads: [n] answer tokens when every answer is one token, else [n, answer_len]."""
        ids = self.answer_ids(entities)
        return ids[:, 0] if ids.shape[1] == 1 else ids


def atomic_template(task_cfg) -> str | None:
    """How a natural-language task's atomic prompts are asked: its first train template (None for the toy)."""
    return task_cfg.natural.train_templates[0] if task_cfg.render == "natural" else None


def answer_logits(model, tokens: torch.Tensor, answer_pos: torch.Tensor, batch: int = 4096, fwd_hooks=()) -> torch.Tensor:
    """[n, d_vocab] logits at each row's answer position (batched; `fwd_hooks` as TransformerLens takes them, for every batch)."""
    return read_batched(model, tokens, answer_pos, 1, batch, lambda sl: list(fwd_hooks)).first


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson interval of a share k/n (None when n is 0)."""
    if n == 0:
        return None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / den
    # the interval contains p: at k = 0 (k = n) rounding leaves mid - half a hair above 0 (mid + half below 1), which
    # made the steer figure's error bars negative and stopped the stage on a model that switched no answer
    return [max(0.0, min(p, mid - half)), min(1.0, max(p, mid + half))]


def mean_ci(x: torch.Tensor) -> dict:
    """Mean and its 95% normal interval over the entries of x (NaNs dropped)."""
    x = x[~torch.isnan(x)].double()
    n = len(x)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    m = float(x.mean())
    se = float(x.std() / n**0.5) if n > 1 else 0.0
    return {"mean": m, "ci95": [m - 1.96 * se, m + 1.96 * se], "n": n}


def share(mask: torch.Tensor) -> dict:
    """Share of True entries with its 95% Wilson interval."""
    k, n = int(mask.sum()), int(mask.numel())
    return {"share": k / n if n else None, "ci95": wilson(k, n), "n": n}
