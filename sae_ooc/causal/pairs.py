"""The interchange pairs: a base question (h, r1, r2) with bridge b, a counterfactual bridge b' and a donor question whose
first hop (h', r1') lands on b'.

Under causal attention the activation at r1 is a function of the prefix (h, r1) alone, so the prefixes are what is split:
the held-out prefixes are those train-sae held out of the SAE's training and eval-sae held out of its feature labels
(RUN/saes/heldout_rows.safetensors, at r1), so neither the SAE, its labels nor anything fitted here saw them; the other
(fit) prefixes are split again, seeded by prefix, into fit-train (class means, top features, DAS) and fit-valid (DAS's rank).
Base and donor prefixes are always of the same group. b' is drawn uniformly among the entities that give the question a
known answer other than b's by the family's high-level model (sae_ooc.tasks.counterfactuals: t(b', r2) for two hops,
the comparison of b' with the second value for the comparison family), so the counterfactual answer is defined and tells
the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FIT, VALID, HELD = 0, 1, 2
GROUP_NAMES = {FIT: "fit", VALID: "valid", HELD: "heldout"}


@dataclass
class Questions:
    """The analysed questions in planted space, one row each (two hops; three with r3 and bridge2 >= 0)."""

    head: torch.Tensor
    r1: torch.Tensor
    r2: torch.Tensor
    bridge: torch.Tensor
    answer: torch.Tensor
    split: list[str]
    r3: torch.Tensor | None = None  # [n] the threehop family's third relation, -1 (or None) for two-hop questions
    bridge2: torch.Tensor | None = None  # [n] its second bridge t(bridge, r2), -1 (or None) for none

    def __post_init__(self):
        none = torch.full_like(self.head, -1)
        self.r3 = none if self.r3 is None else self.r3
        self.bridge2 = none.clone() if self.bridge2 is None else self.bridge2

    def __len__(self) -> int:
        return len(self.head)

    def subset(self, idx: torch.Tensor) -> "Questions":
        return Questions(self.head[idx], self.r1[idx], self.r2[idx], self.bridge[idx], self.answer[idx],
                         [self.split[i] for i in idx.tolist()], self.r3[idx], self.bridge2[idx])

    def prompts(self) -> list[tuple[int, ...]]:
        """(h, r1[, r2[, r3]]) of each question (what Facts.tokens renders; a one-fact question has no r2: -1)."""
        return [(h, a, *((b,) if b >= 0 else ()), *((c,) if c >= 0 else ())) for h, a, b, c in
                zip(self.head.tolist(), self.r1.tolist(), self.r2.tolist(), self.r3.tolist())]


@dataclass
class Pairs:
    """Interchange pairs: base question i gets its r1 state from donor question i (same r2), whose bridge is b2[i]."""

    head: torch.Tensor  # [n] base head entity (what intervals resample)
    r1: torch.Tensor
    r2: torch.Tensor
    b: torch.Tensor  # [n] base bridge
    b2: torch.Tensor  # [n] counterfactual bridge (the donor's)
    donor: torch.Tensor  # [n, 2] donor (h', r1')
    base_q: torch.Tensor  # [n] row of the base question in the Questions it was drawn from
    r3: torch.Tensor | None = None  # [n] the base's third relation (threehop), -1 (or None) for a two-hop question

    def __post_init__(self):
        self.r3 = torch.full_like(self.b, -1) if self.r3 is None else self.r3

    def __len__(self) -> int:
        return len(self.b)

    def rels(self) -> list[tuple[int, ...]]:
        """The relations after r1 of each base question: (r2,) or (r2, r3): what the bridge goes through to the answer."""
        return [(int(c), *((int(d),) if d >= 0 else ())) for c, d in zip(self.r2, self.r3)]

    def prompts(self) -> list[tuple[int, ...]]:
        return [(int(h), int(a), *rel) for h, a, rel in zip(self.head, self.r1, self.rels())]

    def donor_prompts(self) -> list[tuple[int, ...]]:
        return [(int(h), int(a), *rel) for (h, a), rel in zip(self.donor.tolist(), self.rels())]


def prefix_groups(prefixes: list[tuple[int, int]], held: set[tuple[int, int]], valid_fraction: float, seed: int) -> dict:
    """{(h, r1): FIT | VALID | HELD}: the held-out prefixes, and a seeded `valid_fraction` of the others kept aside."""
    fit = sorted(p for p in set(prefixes) if p not in held)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(fit))
    n_valid = int(round(valid_fraction * len(fit)))
    out = {p: FIT for p in fit}
    for i in order[:n_valid]:
        out[fit[i]] = VALID
    out.update({p: HELD for p in set(prefixes) if p in held})
    return out


def draw_pairs(facts, q: Questions, rows: torch.Tensor, groups: dict, group: int, per_question: int, seed: int,
               allowed_b2: set[int] | None = None) -> Pairs:
    """`per_question` pairs for each question `rows` of q whose prefix is in `group`: b' uniform among the counterfactual
    bridges with a donor prefix in the same group (b and b' both in `allowed_b2`, e.g. entities with a fit class mean), the donor
    prefix uniform among that group's prefixes into b', the base's r1 preferred."""
    rng = np.random.default_rng(seed)
    into: dict[int, list[tuple[int, int]]] = {}
    for (h, r), t in facts.tail.items():
        if groups.get((h, r)) == group:
            into.setdefault(t, []).append((h, r))
    out: list[tuple] = []
    for i in rows.tolist():
        h, r1, r2, b, r3 = int(q.head[i]), int(q.r1[i]), int(q.r2[i]), int(q.bridge[i]), int(q.r3[i])
        if groups.get((h, r1)) != group or (allowed_b2 is not None and b not in allowed_b2):
            continue
        more = (r3,) if r3 >= 0 else ()
        cands = [e for e in facts.counterfactual_bridges(b, r1, (r2, *more)) if e in into and (allowed_b2 is None or e in allowed_b2)]
        if not cands:
            continue
        for _ in range(per_question):
            b2 = cands[int(rng.integers(len(cands)))]
            pool = [p for p in into[b2] if p[1] == r1] or into[b2]
            out.append((h, r1, r2, b, b2, *pool[int(rng.integers(len(pool)))], i, r3))
    t = torch.tensor(out, dtype=torch.long).reshape(-1, 9)
    return Pairs(t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4], t[:, 5:7], t[:, 7], t[:, 8])
