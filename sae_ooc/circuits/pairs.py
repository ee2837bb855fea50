"""Clean/corrupted A→C prompt pairs: the contrast every node effect, ablation and edge is measured on.

A clean two-hop prompt (h, r1, r2) with answer t2 is paired with a corrupted prompt (h', r1, r2) whose bridge
and answer both differ (t2'); (h', r1, r2) is a known two-hop fact of any split.

Multi-token answers (a natural-language task). The metric is the log-probability difference of the two answers'
token sequences, log p(t2 | x) - log p(t2' | x), and scoring a sequence needs it teacher-forced after the prompt.
So a pair is two rows: one continues both prompts with t2's tokens, the other with t2''s (`cont`), and each row's
metric is its share of the pair's (+2 log p(t2), -2 log p(t2'); `Pairs.metric`), so that the mean over rows is
exactly the mean over pairs of the metric and every intervention (patching, ablation, gradients) is applied to
both rows alike. Per-row values (a row's effect, a one-row circuit) are halves of a pair's; the two rows of a pair
share their head entity, so a split by head entities keeps them together.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from sae_ooc.circuits.spliced import task_metric
from sae_ooc.models.evaluate import answer_scores, logit_batch
from sae_ooc.errors import UserError
from sae_ooc.tasks.rows import columns

PAIR_SPLITS = ("train", "valid_id", "test_id", "test_ood_sys", "test_unanswerable")  # the two-hop splits (valid_id: data made since it exists)


# prompt pairs -------------------------------------------------------------------------------------
@dataclass
class Pairs:
    """Clean/corrupted A→C prompts; `answer` is t2 and `answer_corrupt` t2'."""

    clean: torch.Tensor  # [n, layout.n_pos] (the toy: 3; threehop: 4)
    corrupt: torch.Tensor  # [n, layout.n_pos]
    answer_pos: torch.Tensor  # [n]
    answer: torch.Tensor
    answer_corrupt: torch.Tensor
    bridge: torch.Tensor
    bridge_corrupt: torch.Tensor
    head: torch.Tensor  # [n] the clean prompt's head entity (planted; the toy's first token)
    r1: torch.Tensor  # [n] its relations (planted ids; the toy's second and third tokens)
    r2: torch.Tensor
    answer_ids: torch.Tensor  # [n, A] t2's tokens (the toy task: [t2])
    answer_corrupt_ids: torch.Tensor  # [n, A] t2''s tokens
    cont_is_answer: torch.Tensor  # [n] bool: the answer tokens that follow the prompts in this row are t2's (else t2''s)

    @property
    def multi_token(self) -> bool:
        return self.answer_ids.shape[1] > 1

    @property
    def cont(self) -> torch.Tensor:
        """[n, A] the answer tokens teacher-forced after the prompts in each row."""
        return torch.where(self.cont_is_answer[:, None], self.answer_ids, self.answer_corrupt_ids)

    def __len__(self) -> int:
        return int(self.answer.shape[0])

    def subset(self, idx) -> Pairs:
        return Pairs(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def batches(self, size: int):
        for i in range(0, len(self), size):
            yield self.subset(slice(i, i + size))

    def split(self, heldout_fraction: float, seed: int) -> tuple[Pairs, Pairs]:
        """(selection, held-out) pairs: circuits are chosen on the first and scored on the second (`split_indices`)."""
        sel, held = self.split_indices(heldout_fraction, seed)
        return self.subset(sel), self.subset(held)

    def split_indices(self, heldout_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(selection, held-out) indices, by whole head entities: under causal attention the head and r1 activations of
        a prompt depend only on (h) and (h, r1), so a held-out pair that shared its head entity with a selection pair
        would bring the very activations the circuit was chosen on. About `heldout_fraction` of the pairs are held out
        (at least one pair each way when there are two head entities or more); the draw depends only on `seed` and the
        pairs' head entities."""
        sel, held = split_indices(len(self), heldout_fraction, seed, groups=self.head)
        if len(sel) == 0 or len(held) == 0:
            raise UserError(f"the {len(self)} attributed pairs share {len(torch.unique(self.head))} head entit(y/ies): too few to "
                            "choose a circuit on some and score it on others; raise attribution.n_pairs, or set "
                            "attribution.only_correct=false or attribution.split=all, then rerun `sae-ooc attribute`")
        return sel, held

    def relations(self) -> list[tuple[int, int]]:
        """(r1, r2) of each clean prompt."""
        return list(zip(self.r1.tolist(), self.r2.tolist()))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {f"pairs.{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> Pairs:
        missing = [f.name for f in fields(cls) if f"pairs.{f.name}" not in t]
        if missing:
            raise UserError(f"saved prompt pairs lack {', '.join(missing)} (written by an older version); rerun "
                            "`sae-ooc attribute --force` (and the stages after it)")
        return cls(**{f.name: t[f"pairs.{f.name}"] for f in fields(cls)})

    def metric(self, logits: torch.Tensor, kind: str, corrupt: bool = False) -> torch.Tensor:
        """Per-row metric of the clean answer (t2; with `corrupt`, of t2' against t2)."""
        if self.multi_token:
            return self._sequence_metric(logits, kind, corrupt)
        target, foil = self.answer_ids[:, 0], self.answer_corrupt_ids[:, 0]
        if corrupt:
            target, foil = foil, target
        return task_metric(logits, self.answer_pos.to(logits.device), target.to(logits.device), foil.to(logits.device), kind)

    def _sequence_metric(self, logits: torch.Tensor, kind: str, corrupt: bool) -> torch.Tensor:
        lp, _ = answer_scores(logits, self.answer_pos.to(logits.device), self.cont.to(logits.device))
        is_target = self.cont_is_answer.to(logits.device) != corrupt  # this row continues with the metric's target
        if kind == "logit_diff":
            return torch.where(is_target, 2 * lp, -2 * lp)
        lp = torch.where(is_target, 2 * lp, torch.zeros_like(lp))
        return lp if kind == "logprob" else -lp


def split_indices(n: int, heldout_fraction: float, seed: int, groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(selection, held-out) indices, each sorted: disjoint, together 0..n-1. With `groups` (one id per item) whole
    groups go to one side, drawn in a seeded random order until the held-out side has at least its share."""
    groups = torch.arange(n) if groups is None else groups
    ids = torch.unique(groups)
    order = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))]
    target = round(heldout_fraction * n) if heldout_fraction > 0 else 0
    held_mask = torch.zeros(n, dtype=torch.bool)
    for i, g in enumerate(order.tolist()):
        if int(held_mask.sum()) >= max(target, 1 if len(ids) > 1 and heldout_fraction > 0 else 0) or i == len(ids) - 1:
            break
        held_mask |= groups == g
    idx = torch.arange(n)
    return idx[~held_mask], idx[held_mask]


def question(vocab, h: int, r1: int, r2: int, *more: int) -> list[int]:
    """The analysed question about planted (h, r1, r2[, *more]); r2 -1 (a one-fact question: the reversal family's) asks
    (h, r1); `more`: the relations after r2 (the threehop family's r3)."""
    return vocab.question_ids(h, r1, None if r2 < 0 else r2, *more)


def analysed_rows(d, vocab) -> list[tuple]:
    """(h, r1, r2, bridge, answer, tail) of a split's analysed prompts (rows of the layout's question_hop): `tail`, the
    toy prompt's relation tokens after r2 (the threehop family's r3), () otherwise."""
    hop_ = vocab.layout.question_hop
    toy = vocab.layout.render == "toy"
    return [(h, r1, r2, b, t, tuple(ids[3:]) if toy and r2 >= 0 else ()) for ids, h, r1, r2, b, t, hop in
            zip(*columns(d, "input_ids", "head", "r1", "r2", "bridge", "answer", "hop")) if hop == hop_]


def two_hop_facts(ds, vocab) -> dict[tuple, list[tuple[int, int, int]]]:
    """{(r1, r2, tail): [(h, bridge, answer), ...]} over the analysed facts of every split (analysed_rows)."""
    facts: dict[tuple, set] = {}
    for split in (s for s in PAIR_SPLITS if s in ds):
        for h, r1, r2, b, t, tail in analysed_rows(ds[split], vocab):
            facts.setdefault((r1, r2, tail), set()).add((h, b, t))
    return {k: sorted(v) for k, v in facts.items()}


def make_pairs(ds, vocab, split: str, n: int, seed: int, model=None, only_correct: bool = False, device: str = "cpu",
               first_token: bool = False) -> Pairs:
    """Up to `n` clean/corrupted pairs from the two-hop prompts of `split` ('all' = every split),
    deterministic in `seed`. With `only_correct`, only clean prompts `model` answers correctly.

    `first_token`: one row a pair scoring the answers' first tokens, with answer, answer_corrupt, bridge and
    bridge_corrupt the first tokens of those entities' names (what the model-level analyses read off the logits);
    the same as the default in the toy task, whose names are one token each."""
    splits = [s for s in PAIR_SPLITS if s in ds] if split == "all" else (split,)
    if split not in ds and split != "all":
        raise UserError(f"the task data has no split '{split}'; set attribution.split to one of {', '.join(s for s in PAIR_SPLITS if s in ds)}, all "
                        "(or regenerate the data with `sae-ooc data --force`)")
    facts = two_hop_facts(ds, vocab)
    rows = []
    for s in splits:
        rows += analysed_rows(ds[s], vocab)
    if not rows:
        raise UserError(f"split '{split}' has no analysed prompts (the task's questions) to attribute; set attribution.split to one of train, test_id, test_ood_sys, test_unanswerable, all")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    correct = _correct_mask(model, rows, vocab, device) if only_correct and model is not None else None
    chosen = []
    for i in order:
        h, r1, r2, b, t, tail = rows[i]
        if correct is not None and not correct[i]:
            continue
        # the bridge differs too where the question has one (the reversal family's has none: -1)
        cands = [c for c in facts.get((r1, r2, tail), []) if (b < 0 or c[1] != b) and c[2] != t]
        if not cands:
            continue
        h2, b2, t2 = cands[int(rng.integers(len(cands)))]
        chosen.append((h, r1, r2, b, t, h2, b2, t2, tail))
        if len(chosen) == n:
            break
    if not chosen:
        why = " the model answers correctly" if correct is not None else ""
        raise UserError(
            f"no usable A→C prompt pairs in split '{split}' (need clean prompts{why} with a known fact (h', r1, r2) whose bridge and "
            f"answer differ); try --set attribution.split=all or --set attribution.only_correct=false"
        )
    return _build(chosen, vocab, first_token)


def _build(chosen: list[tuple], vocab, first_token: bool = False) -> Pairs:
    """Pairs of the chosen (h, r1, r2, b, t, h', b', t'[, tail]) facts, their prompts rendered by `vocab` (`tail`:
    the relation tokens after r2, analysed_rows)."""
    tails = [x[8] if len(x) > 8 else () for x in chosen]
    chosen = [tuple(x[:8]) for x in chosen]
    c = torch.tensor(chosen, dtype=torch.long)
    clean = torch.tensor([question(vocab, h, r1, r2, *tail) for (h, r1, r2, *_), tail in zip(chosen, tails)], dtype=torch.long)
    corrupt = torch.tensor([question(vocab, h2, r1, r2, *tail) for (_, r1, r2, _, _, h2, _, _), tail in zip(chosen, tails)],
                           dtype=torch.long)
    ans = torch.tensor([vocab.answer_token_ids(t) for *_, t, _, _, _ in chosen], dtype=torch.long).reshape(len(c), -1)
    ans2 = torch.tensor([vocab.answer_token_ids(t2) for *_, t2 in chosen], dtype=torch.long).reshape(len(c), -1)
    if first_token:
        first = torch.tensor([[vocab.answer_token_ids(e)[0] for e in (t, t2, b, b2)] for _, _, _, b, t, _, b2, t2 in chosen],
                             dtype=torch.long).reshape(len(c), 4)
        c = c.clone()
        c[:, [4, 7, 3, 6]] = first
        ans, ans2 = ans[:, :1], ans2[:, :1]
    n, A = ans.shape
    rows = torch.arange(n)
    cont_is_answer = torch.ones(n, dtype=torch.bool)
    if A > 1:  # two rows a pair: t2's tokens after both prompts, then t2''s (module docstring)
        rows = rows.repeat_interleave(2)
        cont_is_answer = torch.tensor([True, False]).repeat(n)
        cont = torch.where(cont_is_answer[:, None], ans[rows], ans2[rows])[:, :-1]
        clean, corrupt = torch.cat([clean[rows], cont], 1), torch.cat([corrupt[rows], cont], 1)
    return Pairs(
        clean=clean, corrupt=corrupt, answer_pos=torch.full((len(rows),), vocab.layout.answer_pos, dtype=torch.long),
        answer=c[rows, 4], answer_corrupt=c[rows, 7], bridge=c[rows, 3], bridge_corrupt=c[rows, 6],
        head=c[rows, 0], r1=c[rows, 1], r2=c[rows, 2], answer_ids=ans[rows], answer_corrupt_ids=ans2[rows], cont_is_answer=cont_is_answer,
    )


@torch.no_grad()
def _correct_mask(model, rows, vocab, device: str, batch: int = 8192) -> np.ndarray:
    """Whether greedy decoding gives each analysed row's (analysed_rows) whole answer."""
    prompts = [question(vocab, h, r1, r2, *tail) for h, r1, r2, _, _, tail in rows]
    answers = torch.tensor([vocab.answer_token_ids(t) for *_, t, _ in rows], dtype=torch.long).reshape(len(rows), -1)
    tokens = torch.cat([torch.tensor(prompts, dtype=torch.long), answers[:, :-1]], 1)
    pos = torch.full((len(rows),), len(prompts[0]) - 1, dtype=torch.long)
    batch = logit_batch(batch, tokens.shape[1], model.cfg.d_vocab_out)
    hits = []
    for i in range(0, len(tokens), batch):
        logits = model(tokens[i : i + batch].to(device))
        if answers.shape[1] == 1:  # the toy path, as before: argmax at the last position
            hits.append((logits[:, -1].argmax(-1).cpu() == answers[i : i + batch, 0]))
        else:
            hits.append(answer_scores(logits, pos[i : i + batch].to(device), answers[i : i + batch].to(device))[1].cpu())
    return torch.cat(hits).numpy()
