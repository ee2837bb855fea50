"""Each task family's high-level model of its analysed question: what the answer is once one variable takes another
value. The interventions (variables, steer, edit, dynamics) build their counterfactual pairs from it, so that no stage
needs to know the family.

A question is (h, r1, *rest): its bridge b = t(h, r1) is what r1's position carries, and `answer(tail, b, r1, rest)`
is the answer the question has when its bridge is b (None when a fact it needs is unknown):
- twohop / threehop: the chain from b along rest (t(b, r2), t(t(b, r2), r3));
- comparison: lt / eq / gt of b (the value of e1 for attribute r1) against the value of e2 = rest[0] for r1;
- reversal: none: its question asks one fact, so it has no bridge (its variables are the head, r1 and the answer).
`continuations(tail, relations, h, r1, b)` are the `rest`s of the inferred questions that read the fact (h, r1) -> b
(what an edit of that fact must move). `specs` overrides how a planted variable is interchanged (sae_ooc.causal.planted:
(Questions field, role, shared fields, differing fields)): the donor shares what the answer depends on besides the
variable, so that its own answer is the counterfactual one. `circuit`: whether the circuit of causal variables (the
two-hop high-level model head, r1 -> bridge -> answer with r2) describes the question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

COMPARISON_LABELS = ("lt", "eq", "gt")  # value(e1, attr) <, =, > value(e2, attr); their token order in the vocabulary


@dataclass(frozen=True)
class HighLevel:
    answer: Callable  # (tail, b, r1, rest) -> the answer, or None
    continuations: Callable  # (tail, relations, h, r1, b) -> [rest, ...]
    specs: dict = field(default_factory=dict)  # planted-variable name -> (field, role, share, differ), overriding the two-hop one
    circuit: bool = True
    no_bridge: str = ""  # why the question has no bridge (empty: it has one)
    # vocab -> {direction: its relation tokens}: the directions whose answer is probed at the head's position (the
    # reversal family: does the residual at b's token in (b, r⁻¹) carry a?); None: the family declares no such probe
    directions: Callable | None = None


def _chain(tail: dict, b: int, r1: int, rest) -> int | None:
    for r in rest:
        b = tail.get((int(b), int(r)))
        if b is None:
            return None
    return b


def _chain_next(tail: dict, relations: dict, h: int, r1: int, b: int) -> list[tuple]:
    return [(r2,) for r2 in relations.get(b, [])]


def _no_answer(tail, b, r1, rest):
    return None


def _none(tail, relations, h, r1, b):
    return []


def comparison(vocab) -> HighLevel:
    """lt / eq / gt of two values; the values are consecutive tokens (v0 < v1 < ...: sae_ooc.tasks.families)."""
    labels = [vocab.names.index(n) for n in COMPARISON_LABELS]
    values = {i for i, n in enumerate(vocab.names) if n.startswith("v") and n[1:].isdigit()}

    def answer(tail, b, r1, rest):
        v2 = tail.get((int(rest[0]), int(r1))) if rest else None
        if v2 is None or int(b) not in values:
            return None
        return labels[(int(b) > v2) - (int(b) < v2) + 1]

    def continuations(tail, relations, h, r1, b):
        return [(e2,) for (e2, r) in tail if r == r1 and e2 != h]

    # the value of e1 at the answer position: the donor has the same second value (bridge2), so its answer is
    # cmp(b', v2); the second value: the same first value (bridge). Both values: Wang et al.'s variables.
    return HighLevel(answer, continuations, specs={"bridge@answer": ("bridge", "answer", ("bridge2",), ("bridge",)),
                                                   "bridge2@answer": ("bridge2", "answer", ("bridge",), ("bridge2",))},
                     circuit=False)


# how the report names a family's counterfactual answers: (with bridge b', with the question's own b, its inferred question)
SAYS = {"twohop": ("t(b', r2)", "t(b, r2)", "two-hop"), "threehop": ("t(t(b', r2), r3)", "t(t(b, r2), r3)", "three-hop"),
        "comparison": ("cmp(b', v2)", "cmp(b, v2)", "comparison"), "reversal": ("–", "–", "reversed")}


def says(family: str) -> tuple[str, str, str]:
    return SAYS.get(family, SAYS["twohop"])


def reversal_directions(vocab) -> dict[str, list[int]]:
    """The reversal family's relation tokens: r0..r{R-1} trained forward, r{R}..r{2R-1} their inverses (generate_reversal)."""
    half = vocab.n_relations // 2
    return {"trained": [vocab.relation_id(r) for r in range(half)], "reversed": [vocab.relation_id(half + r) for r in range(half)]}


def high_level(family: str, vocab) -> HighLevel:
    """The high-level model of `family`'s analysed question (module docstring)."""
    if family == "comparison":
        return comparison(vocab)
    if family == "reversal":
        return HighLevel(_no_answer, _none, no_bridge="the question asks one fact (the answer is the head's tail under r1): "
                                                      "no bridge to interchange", directions=reversal_directions)
    return HighLevel(_chain, _chain_next)
