"""The task's vocabulary and prompt shape, without torch: `sae-ooc query` reads them before deciding whether it
needs the model at all."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from sae_ooc.errors import UserError
from sae_ooc.tasks.layout import TOY_LAYOUT, Layout

# the toy task's prompt shape; every stage reads `vocab.layout` (the task's own) instead
SEQ_LEN = TOY_LAYOUT.seq_len
POSITION_ROLES = TOY_LAYOUT.position_names


@dataclass
class Vocab:
    names: list[str]
    n_entities: int
    n_relations: int  # relation tokens in the vocabulary (2R for the reversal family: r and its inverse)
    layout: Layout = field(default=TOY_LAYOUT, compare=False)  # set by load_task from data/layout.json

    @classmethod
    def build(cls, n_entities: int, n_relation_tokens: int) -> "Vocab":
        names = [f"e{i}" for i in range(n_entities)] + [f"r{i}" for i in range(n_relation_tokens)] + ["<pad>"]
        return cls(names, n_entities, n_relation_tokens)

    @property
    def pad_id(self) -> int:
        return len(self.names) - 1

    @property
    def d_vocab(self) -> int:
        return len(self.names)

    def relation_id(self, r: int) -> int:
        return self.n_entities + r

    def name(self, token_id: int) -> str:
        return self.names[token_id]

    def encode(self, prompt: str) -> list[int]:
        """Token names separated by spaces to ids; an unknown name is an error that suggests close ones."""
        index = {n: i for i, n in enumerate(self.names)}
        ids = []
        for tok in prompt.split():
            if tok not in index:
                close = difflib.get_close_matches(tok, self.names, n=3, cutoff=0.4)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UserError(
                    f"unknown token '{tok}' in prompt {prompt!r}; valid tokens are e0..e{self.n_entities - 1} and "
                    f"r0..r{self.n_relations - 1}{hint}"
                )
            ids.append(index[tok])
        if not 1 <= len(ids) <= self.layout.seq_len:
            question = " ".join(("h",) + self.layout.position_names[1:])
            raise UserError(f"prompt {prompt!r} has {len(ids)} tokens; write 'h r' (atomic) or '{question}' "
                            f"({self.layout.question_hop}-hop)")
        return ids

    @property
    def planted_names(self) -> list[str]:
        """The name of each planted variable value (entities, then relations), by id: the toy's are its tokens."""
        return self.names

    def entity_name(self, e: int) -> str:
        """The name of planted entity `e` (toy: its token)."""
        return self.names[int(e)]

    def relation_name(self, r: int) -> str:
        """The name of planted relation id `r` (Vocab space: n_entities + relation index)."""
        return self.names[int(r)]

    def question_ids(self, head: int, r1: int, r2: int | None = None, *more: int) -> list[int]:
        """The token ids of the analysed question about planted (head, r1[, r2, *more]) (toy: the ids themselves;
        `more`: the threehop family's r3)."""
        return [int(head), int(r1)] + ([] if r2 is None else [int(r2)]) + [int(r) for r in more]

    def answer_token_ids(self, e: int) -> list[int]:
        """The token ids that name entity `e` as an answer (toy: one token, `e`)."""
        return [int(e)]

    def decode(self, ids) -> str:
        return " ".join(self.names[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {
            "names": self.names,
            "id_of": {n: i for i, n in enumerate(self.names)},
            "n_entities": self.n_entities,
            "n_relations": self.n_relations,
            "pad_id": self.pad_id,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Vocab":
        return cls(list(d["names"]), int(d["n_entities"]), int(d["n_relations"]))


def read_vocab(data_dir) -> Vocab:
    """The task's vocabulary from RUN/data (vocab.json, and tokenizer.json for a natural-language task), with its
    layout; no torch. Raises ValueError/KeyError/TypeError/OSError on a damaged file (callers name the fix)."""
    import json
    from pathlib import Path

    from sae_ooc.tasks.layout import load_layout

    data_dir = Path(data_dir)
    d = json.loads((data_dir / "vocab.json").read_text())
    if d.get("render", "toy") == "toy":
        vocab = Vocab.from_json(d)
    else:
        from sae_ooc.tasks.natural.text_vocab import TextVocab

        vocab = TextVocab.from_json(d, data_dir)
    vocab.layout = load_layout(data_dir)
    return vocab
