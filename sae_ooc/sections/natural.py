"""`task.natural`: the natural-language rendering of the task (used when `task.render: natural`)."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from sae_ooc.sections.check import check as _check

NATURAL_DOCUMENTS = ("separate", "together")
NATURAL_FAMILIES = ("twohop", "reversal")
CHAIN_FAMILIES = ("twohop",)  # families whose held-out facts are chains of two atomic facts (documents: together)  # the task families the natural renderer (sae_ooc/tasks/natural) can render
NATURAL_TOKENIZERS = ("bpe", "pretrained")


def placeholders(template: str) -> list[str] | None:
    """The {fields} of a template in order, or None when it is not a valid format string."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError:
        return None


def _check_template(t: str, where: str, key: str, required: tuple[str, ...], allowed: tuple[str, ...], after: str | None) -> None:
    fields = placeholders(t)
    _check(fields is not None, where, key, f"{t!r} is not a template (unbalanced braces); write e.g. \"{{a}}'s {{r}} is {{b}}.\"")
    for name in required:
        _check(name in fields, where, key, f"{t!r} has no {{{name}}}; every template needs {', '.join('{' + r + '}' for r in required)}")
    bad = [f for f in fields if f not in allowed]
    _check(not bad, where, key, f"{t!r} uses {{{bad[0] if bad else ''}}}; only {', '.join('{' + a + '}' for a in allowed)} are filled in")
    dup = [f for f in set(fields) if fields.count(f) > 1]
    _check(not dup, where, key, f"{t!r} uses {{{dup[0] if dup else ''}}} twice; each placeholder may appear once")
    if after and after in fields:
        # the prompt is the text before the object: the subject and the relation must be in it
        _check(fields.index(after) == len(fields) - 1, where, key, f"{t!r}: {{{after}}} must come after the other placeholders (the prompt is the text before it)")
    _check(not re.match(r"^\s", t) and t.strip() == t, where, key, f"{t!r} starts or ends with whitespace; the renderer adds the spaces")


def prompt_part(template: str) -> str:
    """The text of a template before its object {b} (a prompt), or all of it."""
    return template.split("{b}")[0].rstrip()


@dataclass
class NaturalConfig:
    names: str = "default"  # a shipped list (sae_ooc/tasks/natural/data/names_<x>.txt) or a file: one "First Last" a line
    relations: str = "default"  # a shipped list or a file: a line = "noun" or "noun|inverse noun"
    # every entity name is exactly this many tokens in context; with tokenizer bpe a "First Last" name of the corpus
    # is 2 (once the BPE has merged every word of the corpus), other lengths need a pretrained tokenizer or other names
    name_tokens: int = 2
    # atomic-fact training documents (the prompt is the text before {b}; what follows {b} is dropped)
    train_templates: list[str] = field(default_factory=lambda: [
        "{a}'s {r} is {b}.", "The {r} of {a} is {b}.", "As for {a}, their {r} is {b}."])
    # held-out paraphrases: atomic_test prompts; the first one is also the reversal family's inverse question
    test_templates: list[str] = field(default_factory=lambda: [
        "Who is the {r} of {a}? It is", "We know that the {r} of {a} is named"])
    question_template: str = "{a}'s {r1}'s {r2} is"  # the two-hop question (and the train split's two-hop documents)
    documents: str = "separate"  # separate | together (both facts of each held-out chain also in one training document)
    tokenizer: str = "bpe"  # bpe (byte-level BPE trained on the rendered corpus) | pretrained (model.path's)
    bpe_vocab_size: int = 600

    def validate(self, where: str, family: str = "twohop") -> None:
        p = "task.natural."
        _check(family in NATURAL_FAMILIES, where, "task.render", f"natural renders the families {', '.join(NATURAL_FAMILIES)} "
               f"(task.family {family} has no English rendering yet); use task.render: toy")
        _check(self.name_tokens >= 1, where, p + "name_tokens", "must be at least 1")
        _check(self.documents in NATURAL_DOCUMENTS, where, p + "documents", f"must be one of {', '.join(NATURAL_DOCUMENTS)}")
        _check(self.documents == "separate" or family in CHAIN_FAMILIES, where, p + "documents",
               "together (both facts of a chain in one document) needs task.family twohop; use separate")
        _check(self.tokenizer in NATURAL_TOKENIZERS, where, p + "tokenizer", f"must be one of {', '.join(NATURAL_TOKENIZERS)}")
        _check(self.bpe_vocab_size >= 300, where, p + "bpe_vocab_size", "must be at least 300 (256 bytes + merges)")
        _check(bool(self.names.strip()), where, p + "names", "must name a shipped list (default) or a file")
        _check(bool(self.relations.strip()), where, p + "relations", "must name a shipped list (default) or a file")
        _check(len(self.train_templates) >= 1, where, p + "train_templates", "needs at least one template")
        _check(len(self.test_templates) >= 1, where, p + "test_templates", "needs at least one template")
        for i, t in enumerate(self.train_templates):
            _check_template(t, where, f"{p}train_templates[{i}]", ("a", "r", "b"), ("a", "r", "b"), "b")
        for i, t in enumerate(self.test_templates):
            _check_template(t, where, f"{p}test_templates[{i}]", ("a", "r"), ("a", "r", "b"), "b")
        _check_template(self.question_template, where, p + "question_template", ("a", "r1", "r2"), ("a", "r1", "r2", "b"), "b")
        train_prompts = {prompt_part(t) for t in self.train_templates}
        clash = [t for t in self.test_templates if prompt_part(t) in train_prompts]
        _check(not clash, where, p + "test_templates",
               f"{clash[0] if clash else ''!r} asks like a train template; test paraphrases must differ from training ones")
