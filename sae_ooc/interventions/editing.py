"""Which facts are edited, which prompts each edit is judged on, and the batched evaluation of many independent edits.

An edit (h, r1) -> b' (instead of b) is judged on
- efficacy: (h, r1) now answers b';
- propagation: every two-hop prompt (h, r1, r2) with r2 known for both b and b' (and different answers) now answers
  t(b', r2); measured on the prompts the model answered t(b, r2) before the edit (the model did the two hops);
- specificity: the other facts of the same head (h, r != r1), unrelated atomic facts and unrelated two-hop prompts keep
  their pre-edit answer (share) and next-token distribution (KL(pre || post));
- reverse (reversal family): (b', r1^-1) now answers h.
Every prompt of every edit of a layer goes through the model in one batched forward pass, each row with its own edit.
Answers are whole answers (sae_ooc.interventions.prompts): a row hits its target when its greedy answer is exactly the
target's tokens, keeps its answer when its greedy answer is unchanged, p is the target answer's probability (all of its
tokens, teacher forced); KL is of the next-token distribution at the answer position (the first answer token).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae_ooc.interventions.facts import Facts
from sae_ooc.interventions.prompts import Answers, matches, read_batched
from sae_ooc.interventions.rome import RankOneEdits, edit_hooks

KINDS = ("efficacy", "propagation", "reverse", "same_head", "atomic", "two_hop")


@dataclass
class EvalSet:
    """Every prompt of every edit, one row each: which edit, which kind, the target (b', t(b', r2) or h; -1 for
    specificity rows) and the pre-edit logits."""

    tokens: torch.Tensor  # [m, width] prompts, with room for the answer's tokens
    answer_pos: torch.Tensor
    edit: torch.Tensor  # [m] index of the edit the row judges
    kind: torch.Tensor  # [m] index into KINDS
    target: torch.Tensor  # [m] entity
    old: torch.Tensor  # [m] the answer before the fact changed (b, t(b, r2)); -1 where none
    pre: torch.Tensor  # [m, d_vocab] logits (of the first answer token) before the edit
    target_ids: torch.Tensor | None = None  # [m, answer_len] the target's answer tokens (None: one token, = target)
    old_ids: torch.Tensor | None = None  # [m, answer_len]
    pre_answers: Answers | None = None  # the answers before the edit (None: one token, read from pre)
    trained: torch.Tensor | None = None  # [m] bool: the row's prompt is a train example (a trained two-hop fact)

    @property
    def answer_len(self) -> int:
        return 1 if self.target_ids is None else self.target_ids.shape[1]

    def ids(self, which: str) -> torch.Tensor:
        t = self.target_ids if which == "target" else self.old_ids
        return t if t is not None else (self.target if which == "target" else self.old)[:, None]

    @property
    def before(self) -> Answers:
        return self.pre_answers if self.pre_answers is not None else Answers.of_logits(self.pre)


def choose_edits(facts: Facts, model, n_edits: int, seed: int, batch: int = 4096) -> list[dict]:
    """A seeded sample of train atomic facts the model answers correctly, each with a new tail b' drawn (seeded) among the
    entities that change at least one inferred answer by the family's high-level model (Facts.moved: a two-hop answer
    t(b', r2), a comparison's label), or any other entity where the family has reverse facts and no bridge (reversal)."""
    atomic = facts.atomic()
    tok, pos = facts.tokens([(h, r) for h, r, _ in atomic])
    right = matches(read_batched(model, tok, pos, facts.answer_len, batch).greedy, facts.answer_ids([t for _, _, t in atomic]))
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(atomic)):
        h, r, b = atomic[i]
        if not right[i]:
            continue
        # reversal (no inferred question reads the fact): any other tail; else a tail that changes an inferred answer
        cands = [e for e in range(facts.n_entities) if e != b and (facts.inverse or facts.moved(h, r, b, e))]
        if not cands:
            continue
        out.append({"h": h, "r1": r, "b": b, "b2": int(cands[int(rng.integers(len(cands)))])})
        if len(out) == n_edits:
            break
    return out


def build_eval_set(facts: Facts, model, edits: list[dict], n_spec: int, seed: int, batch: int = 4096) -> EvalSet:
    atomic = facts.atomic()
    rng = np.random.default_rng(seed + 7)
    atomic_pool = [atomic[i] for i in rng.permutation(len(atomic))]
    two_hop_pool = [(h, r1, *rest) for h, r1, b in atomic for rest in facts.continuations(h, r1, b)]
    two_hop_pool = [two_hop_pool[i] for i in rng.permutation(len(two_hop_pool))]
    prompts, edit, kind, target, old = [], [], [], [], []
    trained = []

    def add(p, e, k, t=-1, o=-1):
        trained.append(len(p) == 3 and tuple(p) in facts.two_hop_train)
        prompts.append(p)
        edit.append(e)
        kind.append(KINDS.index(k))
        target.append(t)
        old.append(o)

    for e, ed in enumerate(edits):
        h, r1, b, b2 = ed["h"], ed["r1"], ed["b"], ed["b2"]
        add((h, r1), e, "efficacy", b2, b)
        for rest, new, old_answer in facts.moved(h, r1, b, b2):
            add((h, r1, *rest), e, "propagation", new, old_answer)
        if r1 in facts.inverse:
            add((b2, facts.inverse[r1]), e, "reverse", h)
        for r in facts.relations.get(h, []):
            if r != r1:
                add((h, r), e, "same_head")
        # unrelated: another head, and nothing that reads the edited fact or its old and new tails as a head
        for p in [a[:2] for a in atomic_pool if a[0] not in (h, b, b2)][:n_spec]:
            add(p, e, "atomic")
        for p in [q for q in two_hop_pool if q[0] != h and q[0] not in (b, b2)][:n_spec]:
            add(p, e, "two_hop")
    tok, pos = facts.tokens(prompts)
    uniq, inv = torch.unique(tok, dim=0, return_inverse=True)
    upos = torch.zeros(len(uniq), dtype=torch.long).scatter_(0, inv, pos)
    target, old = torch.tensor(target), torch.tensor(old)
    if facts.answer_len == 1:
        pre = read_batched(model, uniq, upos, 1, batch).first[inv]
        return EvalSet(tok, pos, torch.tensor(edit), torch.tensor(kind), target, old, pre, trained=torch.tensor(trained, dtype=torch.bool))
    t_ids, o_ids = facts.answer_ids(target), facts.answer_ids(old)
    pre = read_batched(model, uniq, upos, facts.answer_len, batch)[inv]
    pre.logprob = read_batched(model, tok, pos, facts.answer_len, batch, targets=t_ids).logprob
    return EvalSet(tok, pos, torch.tensor(edit), torch.tensor(kind), target, old, pre.first, t_ids, o_ids, pre,
                   trained=torch.tensor(trained, dtype=torch.bool))


def edited_answers(model, es: EvalSet, edits: RankOneEdits, batch: int = 4096) -> Answers:
    """The answers of every row under its own edit (one forward pass per answer token and `batch` rows; with multi-token
    answers one more for the target's probability)."""
    return read_batched(model, es.tokens, es.answer_pos, es.answer_len, batch, lambda sl: edit_hooks(edits.rows(es.edit[sl])),
                        es.target_ids)


def edited_logits(model, es: EvalSet, edits: RankOneEdits, batch: int = 4096) -> torch.Tensor:
    """[m, d_vocab] answer logits (first answer token) of every row under its own edit."""
    return read_batched(model, es.tokens, es.answer_pos, 1, batch, lambda sl: edit_hooks(edits.rows(es.edit[sl]))).first


def row_outcomes(es: EvalSet, post: Answers | torch.Tensor) -> dict[str, torch.Tensor]:
    """Per row: hits its target after / before the edit, keeps its pre-edit answer, KL(pre || post), p(target) after and before."""
    post = Answers.of_logits(post) if isinstance(post, torch.Tensor) else post
    pre = es.before
    rows = torch.arange(len(post.first))
    t = es.target.clamp(min=0)
    lp_pre, lp_post = es.pre.log_softmax(-1), post.first.log_softmax(-1)
    target = es.ids("target")
    if post.logprob is None:  # one-token answers: p is the answer position's softmax
        p, p_pre = lp_post[rows, t].exp(), lp_pre[rows, t].exp()
    else:
        p, p_pre = post.logprob.exp(), pre.logprob.exp()
    return {"hit": matches(post.greedy, target), "hit_pre": matches(pre.greedy, target),
            "was_old": matches(pre.greedy, es.ids("old")), "kept": (post.greedy == pre.greedy).all(-1),
            "kl": (lp_pre.exp() * (lp_pre - lp_post)).sum(-1), "p": p, "p_pre": p_pre}


def per_edit(es: EvalSet, out: dict[str, torch.Tensor], n_edits: int) -> list[dict]:
    """Each edit's numbers on its own prompts (None where it has none of a kind)."""

    def mean(x, m):
        return float(x[m].double().mean()) if m.any() else None

    recs = []
    for e in range(n_edits):
        at = es.edit == e
        k = {name: at & (es.kind == i) for i, name in enumerate(KINDS)}
        eff = k["efficacy"]
        p, p0 = float(out["p"][eff].squeeze()), float(out["p_pre"][eff].squeeze())
        prop = k["propagation"] & out["was_old"]
        recs.append({"efficacy": bool(out["hit"][eff].squeeze()), "p_new": p, "p_new_pre": p0,
                     "rewrite": (p - p0) / max(1 - p0, 1e-9), "propagation": mean(out["hit"], prop),
                     "n_propagation": int(prop.sum()), "n_two_hop_of_fact": int(k["propagation"].sum()),
                     "propagation_all": mean(out["hit"], k["propagation"]), "reverse": mean(out["hit"], k["reverse"]),
                     "specificity_same_head": mean(out["kept"], k["same_head"]), "specificity_atomic": mean(out["kept"], k["atomic"]),
                     "specificity_two_hop": mean(out["kept"], k["two_hop"]), "kl_atomic": mean(out["kl"], k["atomic"]),
                     "kl_two_hop": mean(out["kl"], k["two_hop"]), "kl_same_head": mean(out["kl"], k["same_head"])})
    return recs
