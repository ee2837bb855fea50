"""`TextVocab`: the natural task's vocabulary, with the toy `Vocab`'s API (sae_ooc/tasks/vocab.py).

Token side (`d_vocab`, `pad_id`, `name`, `names`, `encode`, `decode`) from the tokenizer (RUN/data/tokenizer.json);
planted-variable side (`n_entities`, `n_relations`, `relation_id`, `entity_name`, `relation_name`) from the
names the data stage chose: entities 0..E-1, relations E..E+R'-1 (reversal: R nouns, then their R inverses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.tasks.layout import TOY_LAYOUT, Layout

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class TextVocab:
    tokenizer: object  # tokenizers.Tokenizer
    entity_names: list[str]
    relation_names: list[str]  # Vocab-space relation i is relation_names[i - n_entities]
    bos_id: int | None
    pad: int
    source: str = "bpe"  # bpe | pretrained
    example: str = ""  # an analysed prompt's text (what `encode` errors suggest)
    question_template: str = ""  # the two-hop question (task.natural.question_template)
    inverse_template: str = ""  # the reversal family's inverse question (task.natural.test_templates[0])
    layout: Layout = field(default=TOY_LAYOUT, compare=False)  # set by the data stage / load_task
    _names: list[str] | None = field(default=None, repr=False, compare=False)

    render = "natural"

    @property
    def n_entities(self) -> int:
        return len(self.entity_names)

    @property
    def n_relations(self) -> int:
        return len(self.relation_names)

    @property
    def pad_id(self) -> int:
        return self.pad

    @property
    def d_vocab(self) -> int:
        return self.tokenizer.get_vocab_size()

    def relation_id(self, r: int) -> int:
        return self.n_entities + r

    @property
    def planted_names(self) -> list[str]:
        """The name of each planted variable value by id: entities 0..E-1, then relations (what labels show)."""
        return list(self.entity_names) + list(self.relation_names)

    def entity_name(self, e: int) -> str:
        return self.entity_names[int(e)]

    def relation_name(self, r: int) -> str:
        """The noun of planted relation id `r` (Vocab space: n_entities + relation index)."""
        return self.relation_names[int(r) - self.n_entities]

    @property
    def names(self) -> list[str]:
        """Every token's text (index = token id), as it reads in decoded text (a leading space included)."""
        if self._names is None:
            self._names = self.tokenizer.decode_batch([[i] for i in range(self.d_vocab)], skip_special_tokens=False)
        return self._names

    def name(self, token_id: int) -> str:
        return self.names[int(token_id)]

    def decode(self, ids) -> str:
        """The text of token ids; BOS, padding and -1 (no token) are left out."""
        skip = {self.bos_id, self.pad}
        return self.tokenizer.decode([int(i) for i in ids if int(i) >= 0 and int(i) not in skip], skip_special_tokens=False)

    def encode(self, prompt: str) -> list[int]:
        """A prompt as the data stage renders it: BOS, then the text with one leading space."""
        text = " " + " ".join(prompt.split())
        ids = ([] if self.bos_id is None else [self.bos_id]) + self.tokenizer.encode(text, add_special_tokens=False).ids
        if not prompt.strip() or len(ids) > self.layout.seq_len:
            raise UserError(f"prompt {prompt!r} has {len(ids)} tokens; the model reads 1 to {self.layout.seq_len}: "
                            f"ask like the task's questions, e.g. {self.example.strip()!r}")
        return ids

    def _piece_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def question_ids(self, head: int, r1: int, r2: int | None = None) -> list[int]:
        """The analysed question about planted (head, r1, r2) (the reversal family's inverse question about (head,
        r1) when r2 is None), tokenized piece by piece as the data stage does: its exact input_ids."""
        from sae_ooc.tasks.natural.render import fill

        if r2 is None:
            values = {"a": (self.entity_name(head), "head"), "r": (self.relation_name(r1), "r1"), "b": ("", "obj")}
            prompt, _ = fill(self.inverse_template, values)
        else:
            values = {"a": (self.entity_name(head), "head"), "r1": (self.relation_name(r1), "r1"),
                      "r2": (self.relation_name(r2), "r2"), "b": ("", "obj")}
            prompt, _ = fill(self.question_template, values)
        ids = [] if self.bos_id is None else [self.bos_id]
        for text, _ in prompt:
            ids += self._piece_ids(text)
        return ids

    def answer_token_ids(self, e: int) -> list[int]:
        """The tokens of entity `e`'s name as an answer (after a space, as every template puts it)."""
        return self._piece_ids(" " + self.entity_name(e))

    def to_json(self) -> dict:
        return {"render": "natural", "tokenizer": TOKENIZER_FILE, "source": self.source, "d_vocab": self.d_vocab,
                "n_entities": self.n_entities, "n_relations": self.n_relations, "entity_names": list(self.entity_names),
                "relation_names": list(self.relation_names), "bos_id": self.bos_id, "pad_id": self.pad,
                "example": self.example, "question_template": self.question_template, "inverse_template": self.inverse_template}

    @classmethod
    def from_json(cls, d: dict, data_dir: Path) -> "TextVocab":
        """The vocab of vocab.json `d`, with the tokenizer beside it in `data_dir`."""
        from tokenizers import Tokenizer

        f = Path(data_dir) / str(d.get("tokenizer", TOKENIZER_FILE))
        try:
            tokenizer = Tokenizer.from_file(str(f))
        except Exception as e:  # tokenizers raises a bare Exception for missing and malformed files alike
            from sae_ooc.errors import unreadable

            raise unreadable(f, e, f"sae-ooc data --run {Path(data_dir).parent} --force") from None
        bos = d.get("bos_id")
        return cls(tokenizer, [str(n) for n in d["entity_names"]], [str(n) for n in d["relation_names"]],
                   None if bos is None else int(bos), int(d["pad_id"]), str(d.get("source", "bpe")), str(d.get("example", "")),
                   str(d["question_template"]), str(d.get("inverse_template", "")))
