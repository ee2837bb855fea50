"""Toy facts -> natural-language texts made of role-tagged pieces (tokenized later, piece by piece).

A text is a list of `(string, role)` pieces: role "head", "r1", "r2" for the subject and relation words of the
prompt, "name" / "rel" for other entity names / relation nouns, None for template words. Every text starts with a space and every placeholder
takes the space in front of it, so a name is always the piece " First Last" (tokenized as alone: the tokenizer
check in generate.py compares) and the answer continuation is " {object name}". What follows the object in a
template (the trailing period) is dropped: the answer is exactly the name's tokens, so accuracy is exact match
of the name and the loss is its log-probability.

What each split holds (rows of the toy generator, `sae_ooc.tasks.data.FAMILIES`, rendered one by one):
- train, hop 1: one document per atomic fact *and train template* (all train paraphrases), e.g. " Alice Smith's
  mentor is" -> " Bob Jones". Reversal: forward facts with the noun, trained inverses with the inverse noun.
- train, hop 2 (task.phi > 0): the question template with its answer.
- valid_id, test_id, test_unanswerable: the two-hop question (`question_template`); reversal: the inverse question,
  `test_templates[0]` with the inverse noun. These are the *analysed* prompts (one layout, checked).
- atomic_test: each train atomic fact once, in a held-out paraphrase drawn from `test_templates` (seeded).
- documents: together (twohop only; "The Two-Hop Curse", Balesni et al. 2024, compare facts seen in separate
  documents with facts seen in one): additionally, for every held-out in-distribution chain (valid_id and
  test_id: a -r1-> b -r2-> c), one training document states both facts, the first in full and the second up to
  its object: " Alice Smith's mentor is Bob Jones. The employer of Bob Jones is" -> " Carol White", each with a
  seeded train paraphrase. Its planted variables are those of the second fact (head b, r1 = the chain's r2,
  hop 1). test_unanswerable chains get none (one of their facts is not in train).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

Piece = tuple[str, "str | None"]


@dataclass
class Rendered:
    """One example: prompt pieces, the answer entity (rendered as " name"), the planted variables."""

    prompt: list[Piece]
    answer_entity: int
    planted: dict  # answer, bridge, hop, head, r1, r2 (Vocab space, -1 for none)
    analysed: bool = False
    answer_space: str = " "  # what stands between the prompt and the answer name (the template's space before {b})


def fill(template: str, values: dict[str, Piece]) -> tuple[list[Piece], list[Piece]]:
    """(pieces before {b}, pieces from {b} on) of " " + template; a placeholder takes the space before it."""
    before: list[Piece] = []
    after: list[Piece] = []
    out = before
    for literal, field, _, _ in string.Formatter().parse(" " + template):
        space = ""
        if field is not None and literal.endswith(" "):
            literal, space = literal[:-1], " "
        if literal:
            out.append((literal, None))
        if field is None:
            continue
        if field == "b":
            out = after
        text, role = values[field]
        out.append((space + text, role))
    return before, after


def _space(rest: list[Piece]) -> str:
    """The space a template puts before {b} (its first piece after the prompt); " " for a prompt-only template."""
    return rest[0][0] if rest else " "


def full_text(pieces: list[Piece]) -> str:
    return "".join(p for p, _ in pieces)


class Renderer:
    """Renders toy rows with entity names and relation nouns (Vocab-space relation id -> noun)."""

    def __init__(self, cfg, entity_names: list[str], relation_names: list[str], rng):
        self.nat, self.family, self.E = cfg.natural, cfg.family, cfg.n_entities
        self.entities, self.relations, self.rng = entity_names, relation_names, rng

    def _rel(self, r: int) -> str:
        return self.relations[r - self.E]

    def atomic(self, template: str, h: int, r: int, t: int, analysed: bool = False) -> Rendered:
        prompt, rest = fill(template, {"a": (self.entities[h], "head"), "r": (self._rel(r), "r1"), "b": ("", "obj")})
        return Rendered(prompt, t, {"answer": t, "bridge": -1, "hop": 1, "head": h, "r1": r, "r2": -1}, analysed, _space(rest))

    def question(self, h: int, r1: int, r2: int, t: int, b: int, analysed: bool) -> Rendered:
        values = {"a": (self.entities[h], "head"), "r1": (self._rel(r1), "r1"), "r2": (self._rel(r2), "r2"), "b": ("", "obj")}
        prompt, rest = fill(self.nat.question_template, values)
        return Rendered(prompt, t, {"answer": t, "bridge": b, "hop": 2, "head": h, "r1": r1, "r2": r2}, analysed, _space(rest))

    def together(self, h: int, r1: int, r2: int, t: int, b: int) -> Rendered:
        """Both facts of the chain h -r1-> b -r2-> t in one document; the second one's object is the answer."""
        first, second = (self.nat.train_templates[int(i)] for i in self.rng.integers(len(self.nat.train_templates), size=2))
        p1, rest = fill(first, {"a": (self.entities[h], "name"), "r": (self._rel(r1), "rel"), "b": (self.entities[b], "name")})
        doc = self.atomic(second, b, r2, t)
        return Rendered(p1 + rest + doc.prompt, t, doc.planted, False, doc.answer_space)

    def row(self, split: str, row: dict) -> list[Rendered]:
        """The rendered examples of one toy row of `split` (several for a train atomic fact: one per paraphrase)."""
        h, r1, r2, t, b, hop = (int(row[k]) for k in ("head", "r1", "r2", "answer", "bridge", "hop"))
        nat = self.nat
        if hop == 2:
            return [self.question(h, r1, r2, t, b, analysed=split != "train")]
        if split == "train":
            return [self.atomic(tpl, h, r1, t) for tpl in nat.train_templates]
        if split == "atomic_test":
            return [self.atomic(nat.test_templates[int(self.rng.integers(len(nat.test_templates)))], h, r1, t)]
        # reversal: valid_id / test_id / test_unanswerable hold the inverse questions, all asked the same way
        return [self.atomic(nat.test_templates[0], h, r1, t, analysed=True)]

    def split(self, name: str, rows: list[dict], held_chains: list[dict] = ()) -> list[Rendered]:
        out = [x for row in rows for x in self.row(name, row)]
        if name == "train" and nat_together(self.nat):
            out += [self.together(*(int(c[k]) for k in ("head", "r1", "r2", "answer", "bridge"))) for c in held_chains]
        if name == "train":  # paraphrases of one fact would otherwise sit next to each other
            out = [out[i] for i in self.rng.permutation(len(out))]
        return out


def nat_together(nat) -> bool:
    return nat.documents == "together"
