"""What the model answers, right or wrong: each analysed prompt's greedy answer in one class of the task's facts.

A question the model fails is not answered at random: it can give the answer of another fact it knows. Each prompt
of a split (its analysed prompts: rows of the layout's question_hop) gets the first class its greedy first answer
token falls in, in this order:
- `correct`: the planted answer;
- `inverse_tail`: the tail of (head, inverse of r1), a trained fact (only where the task's relations have inverses:
  the reversal family, whose question (b, r⁻¹) asks for a and whose forward fact (b, r) → b' the model knows);
- `head_tail`: the tail of another trained fact of the head (two-hop: the bridge t(h, r1) is one, the first hop's answer);
- `head`: the head entity itself (echo);
- `most_frequent`: the most frequent answer of train;
- `relation_tail`: the tail of a trained fact of relation r1 about another head (an answer of the right type);
- `task_answer`: another answer some analysed prompt of train has (comparison: another of lt / eq / gt);
- `other_entity`: another token of the entity block; `other_token`: anything else (a relation, `<pad>`).
Tokens are compared as entities, as in the toy task (a natural task's names are several tokens: there only `correct`,
by the first token, is exact). Control: `chance`, the share of each class a uniformly random entity-block token would fall in, per prompt, averaged
(what the shares are read against); and the classes on atomic_test, the trained facts.
"""

from __future__ import annotations

from collections import Counter

import torch

from sae_ooc.tasks.data import first_tokens, split_tensors
from sae_ooc.tasks.families import inverse_relations
from sae_ooc.tasks.rows import columns

CLASSES = ("correct", "inverse_tail", "head_tail", "head", "most_frequent", "relation_tail", "task_answer", "other_entity",
           "other_token")
SPLITS = ("test_id", "test_ood_sys", "test_unanswerable", "atomic_test")


def trained_facts(ds) -> dict[tuple[int, int], int]:
    """{(h, r): t} over the one-fact rows (hop 1) of train: every fact the model was trained on directly."""
    d = ds["train"]
    return {(int(h), int(r)): int(t) for h, r, t, hop in zip(*columns(d, "head", "r1", "answer", "hop")) if hop == 1}


def classify(pred: int, head: int, r1: int, answer: int, facts: dict, by_head: dict, by_rel: dict, inverse: dict,
             frequent: int, task_answers: set, n_entities: int) -> str:
    """The first class of CLASSES that token `pred` falls in, for the question (head, r1) -> answer (planted ids)."""
    inv = inverse.get(r1)
    tests = (pred == answer, inv is not None and facts.get((head, inv)) == pred, pred in by_head.get(head, ()),
             pred == head, pred == frequent, pred in by_rel.get(r1, set()) - {facts.get((head, r1))}, pred in task_answers,
             0 <= pred < n_entities)
    return next((c for c, hit in zip(CLASSES, tests) if hit), "other_token")


@torch.no_grad()
def answer_classes(model, ds, vocab, family: str, batch_size: int = 8192) -> dict:
    """Per split: the share of its analysed prompts in each class, the chance share of each, and the commonest wrong answers."""
    facts = trained_facts(ds)
    by_head: dict[int, set] = {}
    by_rel: dict[int, set] = {}
    for (h, r), t in facts.items():
        by_head.setdefault(h, set()).add(t)
        by_rel.setdefault(r, set()).add(t)
    inverse = inverse_relations(family, vocab)
    hop = vocab.layout.question_hop
    train = ds["train"]
    answers, hops = columns(train, "answer", "hop")
    counts = Counter(int(a) for a, k in zip(answers, hops) if k == 1)
    frequent = counts.most_common(1)[0][0] if counts else -1
    task_answers = {int(a) for a, k in zip(answers, hops) if k == hop}
    device = next(model.parameters()).device
    out = {"classes": list(CLASSES), "most_frequent_answer": vocab.names[frequent] if frequent >= 0 else None,
           "has_inverse": bool(inverse), "splits": {}}
    for split in SPLITS:
        st = split_tensors(ds[split], vocab)
        keep = (st.hop == (1 if split == "atomic_test" else hop)).nonzero().squeeze(1)
        st = st.subset(keep)
        if not len(st):
            out["splits"][split] = None
            continue
        preds = []
        for i in range(0, len(st), batch_size):
            logits = model(st.tokens[i : i + batch_size].to(device))
            preds.append(logits[torch.arange(len(logits)), st.answer_pos[i : i + batch_size].to(device)].argmax(-1).cpu())
        pred = torch.cat(preds)
        head, r1 = st.variable("head").tolist(), st.variable("r1").tolist()
        answer = first_tokens(vocab, st.variable("answer")).tolist()
        n_ent = vocab.n_entities
        labels, chance = [], Counter()
        for p, h, r, a in zip(pred.tolist(), head, r1, answer):
            args = (h, r, a, facts, by_head, by_rel, inverse, frequent, task_answers, n_ent)
            labels.append(classify(p, *args))
            chance.update(classify(e, *args) for e in range(n_ent))
        n = len(labels)
        got = Counter(labels)
        wrong = Counter(vocab.names[p] for p, c in zip(pred.tolist(), labels) if c != "correct")
        out["splits"][split] = {"n": n, "share": {c: got[c] / n for c in CLASSES},
                                "chance": {c: chance[c] / (n * n_ent) for c in CLASSES},
                                "top_wrong": [[name, k] for name, k in wrong.most_common(5)]}
    return out
