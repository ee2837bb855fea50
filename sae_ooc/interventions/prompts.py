"""The prompts interventions ask, rendered as the task renders them, and the model's answers to them.

Facts live in planted-variable space (entities 0..E-1, relations E..; the toy's token ids). `Prompter` turns them into
token rows: a two-hop prompt (h, r1, r2) is the task's analysed question (`vocab.question_ids`; the toy's three tokens),
so a position means the same role in every one of them (`vocab.layout`); an atomic prompt (h, r) is the toy's two tokens
or, for a natural-language task, the prompt of its first training template (`task.natural.train_templates[0]`, a
document the model was trained on, tokenized piece by piece as the data stage does), with its role spans.

Answers are judged on the whole answer (`Answers`): the greedy answer (as many tokens as the longest answer, one forward
pass per token, each fed back: greedy decoding) must equal an entity's answer tokens exactly, and an answer's
log-probability is the sum over its tokens, teacher forced. A toy answer is one token, so these are the answer
position's argmax and log-softmax, computed exactly as before. `first` keeps the logits of the first answer token (what
next-token KL and logit changes are measured on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_ooc.errors import UserError
from sae_ooc.models.evaluate import answer_scores


class Prompter:
    """Renders planted facts as token rows of the task (`vocab`; `atomic_template`: a natural task's train template)."""

    def __init__(self, vocab, atomic_template: str | None = None):
        self.vocab = vocab
        self.natural = vocab.layout.render != "toy"
        self.template = atomic_template
        self.answer_len = max((len(vocab.answer_token_ids(e)) for e in range(vocab.n_entities)), default=1) if self.natural else 1

    def two_hop(self, h: int, r1: int, r2: int) -> list[int]:
        return list(self.vocab.question_ids(int(h), int(r1), int(r2)))

    def atomic_with_spans(self, h: int, r: int) -> tuple[list[int], dict[str, range]]:
        """The atomic prompt (h, r) and the token span of each of its roles (head, r1)."""
        if not self.natural:
            return [int(h), int(r)], {"head": range(1), "r1": range(1, 2)}
        if not self.template:
            raise UserError("the run's task data is natural-language but its config's task.render is not natural: run with the "
                            "config that made the data (--config), or rerun `sae-ooc data --force` with this one")
        from sae_ooc.tasks.natural.render import fill

        v = self.vocab
        pieces, _ = fill(self.template, {"a": (v.entity_name(h), "head"), "r": (v.relation_name(r), "r1"), "b": ("", "obj")})
        ids, spans = ([] if v.bos_id is None else [v.bos_id]), {}
        for text, role in pieces:
            piece = v.tokenizer.encode(text, add_special_tokens=False).ids
            if role:
                spans[role] = range(len(ids), len(ids) + len(piece))
            ids += piece
        return ids, spans

    def render(self, prompt: tuple) -> list[int]:
        """(h, r) -> the atomic prompt, (h, r1, r2[, r3]) -> the analysed question (two or three hops)."""
        if len(prompt) > 3:
            return list(self.vocab.question_ids(*(int(x) for x in prompt)))
        return self.two_hop(*prompt) if len(prompt) == 3 else self.atomic_with_spans(*prompt)[0]

    def atomic_position(self, role: str, facts: list[tuple[int, int]]) -> int:
        """The position of `role` (the last token of its span) in the atomic prompts of `facts`: one position for all."""
        where = {self.atomic_with_spans(h, r)[1][role][-1] for h, r in facts}
        if len(where) > 1:
            raise UserError(f"the atomic prompts put {role} at positions {sorted(where)}; every name must be task.natural.name_tokens "
                            "tokens and every relation noun one length: rerun `sae-ooc data --force`")
        return where.pop() if where else 0

    def answer(self, e: int) -> list[int]:
        return list(self.vocab.answer_token_ids(int(e)))

    def answer_ids(self, entities) -> torch.Tensor:
        """[n, answer_len] answer tokens of each entity, -1 padded (-1 for entity -1: no answer)."""
        out = torch.full((len(entities), self.answer_len), -1, dtype=torch.long)
        for i, e in enumerate(entities):
            if int(e) >= 0:
                a = self.answer(e)
                out[i, : len(a)] = torch.tensor(a, dtype=torch.long)
        return out

    def rows(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """[n, width] right-padded token rows with room for the answer's tokens after each prompt, and [n] answer
        positions (each prompt's last token). The width is at least the task's seq_len (the toy's: exactly it)."""
        longest = max((len(p) for p in prompts), default=1)
        width = max(self.vocab.layout.seq_len, longest + self.answer_len - 1)
        out = torch.full((len(prompts), width), self.vocab.pad_id, dtype=torch.long)
        for i, p in enumerate(prompts):
            out[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        return out, torch.tensor([len(p) - 1 for p in prompts], dtype=torch.long)


def with_answers(tokens: torch.Tensor, answer_pos: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """The rows with each answer but its last token written after the prompt (teacher forcing); -1 entries skipped."""
    out = tokens.clone()
    rows = torch.arange(len(tokens), device=tokens.device)
    for j in range(answer_ids.shape[1] - 1):
        ok = answer_ids[:, j] >= 0
        out[rows[ok], answer_pos[ok] + 1 + j] = answer_ids[ok, j]
    return out


@dataclass
class Answers:
    first: torch.Tensor  # [n, d_vocab] logits predicting the first answer token
    greedy: torch.Tensor  # [n, answer_len] the greedy answer
    logprob: torch.Tensor | None = None  # [n] log-probability of each row's target answer (None: not asked, or one token)

    @classmethod
    def of_logits(cls, logits: torch.Tensor) -> Answers:
        """One-token answers from answer-position logits [n, d_vocab]."""
        return cls(logits, logits.argmax(-1)[:, None])

    def __getitem__(self, idx) -> Answers:
        return Answers(self.first[idx], self.greedy[idx], None if self.logprob is None else self.logprob[idx])

    @classmethod
    def cat(cls, parts: list[Answers], d_vocab: int, answer_len: int) -> Answers:
        if not parts:
            return cls(torch.zeros(0, d_vocab), torch.zeros(0, answer_len, dtype=torch.long))
        lp = None if parts[0].logprob is None else torch.cat([p.logprob for p in parts])
        return cls(torch.cat([p.first for p in parts]), torch.cat([p.greedy for p in parts]), lp)


def matches(greedy: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """[n] the greedy answer is exactly the answer (every token; -1 padding ignored; no answer (-1) never matches)."""
    a = answer_ids[:, : greedy.shape[1]]
    return ((greedy[:, : a.shape[1]] == a) | (a < 0)).all(-1) & (a[:, 0] >= 0)


@torch.no_grad()
def read_answers(model, tokens: torch.Tensor, answer_pos: torch.Tensor, answer_len: int, fwd_hooks=(), targets: torch.Tensor | None = None) -> Answers:
    """One batch: the first answer token's logits, the greedy answer of `answer_len` tokens and (`targets` [n, L], -1
    padded, given when answers are longer than one token) each target answer's teacher-forced log-probability."""
    dev = model.cfg.device
    tok = tokens.to(dev)
    rows = torch.arange(len(tok), device=dev)
    pos = answer_pos.to(dev)
    lg = model.run_with_hooks(tok, return_type="logits", fwd_hooks=list(fwd_hooks))
    first = lg[rows, pos].float().cpu()
    greedy = [first.argmax(-1)]
    for j in range(1, answer_len):  # greedy decoding: feed each chosen token back
        tok = tok.clone()
        tok[rows, pos + j] = greedy[-1].to(dev)
        lg = model.run_with_hooks(tok, return_type="logits", fwd_hooks=list(fwd_hooks))
        greedy.append(lg[rows, pos + j].float().argmax(-1).cpu())
    lp = None
    if targets is not None:
        t = targets.to(dev)
        lg = model.run_with_hooks(with_answers(tokens.to(dev), pos, t), return_type="logits", fwd_hooks=list(fwd_hooks))
        lp = answer_scores(lg, pos, t)[0].float().cpu()
        lp[targets[:, 0] < 0] = float("nan")
    return Answers(first, torch.stack(greedy, 1), lp)


def read_batched(model, tokens: torch.Tensor, answer_pos: torch.Tensor, answer_len: int, batch: int, hooks_for=None,
                 targets: torch.Tensor | None = None) -> Answers:
    """`read_answers` over batches; `hooks_for(slice)` gives the forward hooks of the rows in that slice."""
    parts = []
    for s in range(0, len(tokens), batch):
        sl = slice(s, s + batch)
        parts.append(read_answers(model, tokens[sl], answer_pos[sl], answer_len, hooks_for(sl) if hooks_for else (),
                                  None if targets is None else targets[sl]))
    return Answers.cat(parts, model.cfg.d_vocab_out, answer_len)
