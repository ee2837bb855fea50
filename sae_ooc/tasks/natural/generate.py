"""`task.render: natural`: the toy generator's facts rendered as text, tokenized, aligned and checked.

Steps (deterministic given task.seed): (1) the toy generator gives the facts of every split (Vocab space); (2)
names and relation nouns come in a seeded order from their lists; (3) with `tokenizer: bpe` the corpus rendered
with the first n_entities names and n_relations nouns trains the BPE; (4) the entities are the first names (in
that order) that are exactly `name_tokens` tokens, the relations the first nouns of the most common token
length (reversal: of the inverse nouns, which the analysed question uses), so every analysed prompt has the
same length and role spans; when (4) keeps the names of (3), as with a large enough bpe_vocab_size, the BPE was
trained on exactly the final corpus, else on the corpus with the replaced names; (5) every example is tokenized
whole and piece by piece: the two must agree and every name must be its tokens alone, so no answer is
mis-scored; (6) the layout is built from the first analysed prompt and checked on all of them.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from sae_ooc.errors import UserError
from sae_ooc.tasks.layout import Layout
from sae_ooc.tasks.natural.bpe import Tok, pretrained_tokenizer, train_bpe
from sae_ooc.tasks.natural.lists import load_names, load_relations
from sae_ooc.tasks.natural.render import Renderer, Rendered, full_text
from sae_ooc.tasks.natural.text_vocab import TextVocab

ROLES = ("head", "r1", "r2")
PLANTED = ("answer", "bridge", "hop", "head", "r1", "r2", "bridge2")


def _relation_nouns(pairs, family: str) -> list[tuple[str, str | None]]:
    return pairs if family == "reversal" else [(n, None) for n, _ in pairs]


def _relation_names(chosen: list[tuple[str, str | None]], family: str) -> list[str]:
    """Vocab-space relation names: the nouns, then (reversal) their inverses, as the toy's r{R + r}."""
    return [n for n, _ in chosen] + ([inv for _, inv in chosen] if family == "reversal" else [])


def _render_all(cfg, toy_rows: dict, entities: list[str], relations: list[str]) -> dict[str, list[Rendered]]:
    renderer = Renderer(cfg, entities, relations, np.random.default_rng([cfg.seed, 2]))
    held = toy_rows.get("valid_id", []) + toy_rows.get("test_id", []) if cfg.family == "twohop" else []
    return {s: renderer.split(s, rows, held) for s, rows in toy_rows.items()}


def _texts(rendered: dict[str, list[Rendered]], entities: list[str]) -> list[str]:
    return [full_text(x.prompt) + x.answer_space + entities[x.answer_entity] for xs in rendered.values() for x in xs]


def _choose_names(tok: Tok, order: list[str], cfg) -> list[str]:
    nat, E = cfg.natural, cfg.n_entities
    lengths = {n: len(tok.ids(" " + n)) for n in order}
    fit = [n for n in order if lengths[n] == nat.name_tokens]
    if len(fit) < E:
        have = ", ".join(f"{k} tokens: {v}" for k, v in sorted(Counter(lengths.values()).items()))
        more = " or raise task.natural.bpe_vocab_size" if nat.tokenizer == "bpe" else ""
        raise UserError(f"only {len(fit)} of the {len(order)} names of task.natural.names={nat.names} are exactly "
                        f"{nat.name_tokens} tokens under the {nat.tokenizer} tokenizer ({have}) and task.n_entities={E} "
                        f"needs {E}; set task.natural.name_tokens to a length with enough names, lower task.n_entities{more}, "
                        f"or give a longer list")
    return fit[:E]


def _choose_relations(tok: Tok, order: list[tuple[str, str | None]], cfg) -> list[tuple[str, str | None]]:
    """n_relations relations whose asked noun (the inverse for reversal) has one token length: the length of most of
    the first n_relations in `order` (those the BPE was trained with) that enough relations have, else the commonest."""
    R = cfg.n_relations
    asked = {pair: pair[1] if cfg.family == "reversal" else pair[0] for pair in order}
    length = {pair: len(tok.ids(" " + asked[pair])) for pair in order}
    counts, first = Counter(length.values()), Counter(length[p] for p in order[:R])
    best = min(counts, key=lambda k: (counts[k] < R, -first[k], -counts[k], k))
    if counts[best] < R:
        have = ", ".join(f"{k} tokens: {v}" for k, v in sorted(counts.items()))
        raise UserError(f"only {counts[best]} relation nouns of task.natural.relations={cfg.natural.relations} share a token "
                        f"length ({have}) and task.n_relations={R} needs {R} (a relation word must have one length in the "
                        f"question); lower task.n_relations or add relations of {best} tokens")
    return [p for p in order if length[p] == best][:R]


def _encode(tok: Tok, rendered: list[Rendered], entities: list[str], name_ids: dict[str, tuple]) -> list[tuple]:
    """(input_ids, answer_ids, role spans) per example, after checking the tokenization in context."""
    full = tok.batch([full_text(x.prompt) + x.answer_space + entities[x.answer_entity] for x in rendered])
    out = []
    for x, whole in zip(rendered, full):
        ids, spans = list(tok.bos), {}
        for text, role in x.prompt:
            piece = tok.ids(text)
            if role in ("head", "name"):
                _same_as_alone(tok, text, piece, name_ids, x)
            if role in ROLES:
                spans[role] = [len(ids), len(ids) + len(piece)]
            ids.extend(piece)
        name = entities[x.answer_entity]
        answer = list(tok.ids(x.answer_space + name))
        _same_as_alone(tok, x.answer_space + name, answer, name_ids, x)
        if whole != ids[len(tok.bos):] + answer:
            text = full_text(x.prompt) + x.answer_space + name
            raise UserError(f"the tokenizer splits {text.strip()!r} differently as a whole than piece by piece (an entity "
                            f"name or relation word merges with the text beside it); put a space before every placeholder "
                            f"of the task.natural templates and punctuation or a space after it")
        out.append((ids, answer, spans))
    return out


def _same_as_alone(tok: Tok, text: str, piece, name_ids: dict, x: Rendered) -> None:
    name = text.strip()
    if tuple(piece) != name_ids[name]:
        shown = [tok.tokenizer.decode([i]) for i in piece]
        alone = [tok.tokenizer.decode([i]) for i in name_ids[name]]
        raise UserError(f"the tokenizer splits entity name {name!r} differently in context ({shown} in "
                        f"{(full_text(x.prompt) + x.answer_space + '...').strip()!r}) than alone ({alone}); put a space "
                        f"before every placeholder of the task.natural templates")


def _position_names(tok: Tok, x: Rendered, ids: list[int]) -> tuple[str, ...]:
    names: list[str] = ["bos"] if tok.bos else []
    for text, role in x.prompt:
        piece = tok.ids(text)
        if role in ROLES:
            names += [f"{role}.{k}" for k in range(len(piece) - 1)] + [role]
        else:
            names += [tok.tokenizer.decode([i]).strip() or "space" for i in piece]
    if not any(n == r or n.startswith(r + ".") for r in ROLES for n in names[-1:]):
        names[-1] = "last"
    seen: Counter = Counter()
    unique = []
    for n in names:  # a template word used twice ("'s") is "'s" then "'s#2"
        seen[n] += 1
        unique.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return tuple(unique)


def build_layout(tok: Tok, rendered: dict[str, list[Rendered]], encoded: dict[str, list[tuple]]) -> Layout:
    """The layout of the analysed prompts, checked on every one of them (one-line error otherwise)."""
    analysed = [(s, x, e) for s in rendered for x, e in zip(rendered[s], encoded[s]) if x.analysed]
    if not analysed:
        raise UserError("the natural task has no analysed prompts (valid_id, test_id and test_unanswerable are empty); raise task.n_entities")
    _, x0, (ids0, _, spans0) = analysed[0]
    n = len(ids0)
    roles = {r: spans0[r] for r in ROLES if r in spans0}
    roles["last"] = [n - 1, n]
    fixed = [i for i in range(n) if not any(a <= i < b for a, b in spans0.values())]
    for split, x, (ids, _, spans) in analysed:
        if len(ids) != n or spans != spans0 or any(ids[i] != ids0[i] for i in fixed):
            raise UserError(f"the {split} prompt {full_text(x.prompt).strip()!r} ({len(ids)} tokens, roles {spans}) does not "
                            f"share the layout of {full_text(x0.prompt).strip()!r} ({n} tokens, roles {spans0}); every name must "
                            f"be task.natural.name_tokens tokens and every relation noun one length: rerun `sae-ooc data --force`")
    seq_len = max(len(i) + len(a) - 1 for enc in encoded.values() for i, a, _ in enc)
    answer_len = max(len(a) for enc in encoded.values() for _, a, _ in enc)
    return Layout("natural", _position_names(tok, x0, ids0), n - 1, seq_len, answer_len, roles)


def render_natural(cfg, toy_ds, features, model_path=None, hub: str = "gpt2"):
    """(DatasetDict, TextVocab, Layout, Tok) of the natural rendering of the toy task `toy_ds` (same splits)."""
    from datasets import DatasetDict

    nat = cfg.natural
    names = load_names(nat.names)
    pairs = _relation_nouns(load_relations(nat.relations, need_inverse=cfg.family == "reversal"), cfg.family)
    if len(names) < cfg.n_entities or len(pairs) < cfg.n_relations:
        what = (f"{len(names)} names" if len(names) < cfg.n_entities else f"{len(pairs)} relations")
        raise UserError(f"task.natural lists only {what} but task.n_entities={cfg.n_entities} and task.n_relations="
                        f"{cfg.n_relations} need more; lower them or give longer lists (task.natural.names / relations)")
    rng = np.random.default_rng([cfg.seed, 1])
    name_order = [names[i] for i in rng.permutation(len(names))]
    pair_order = [pairs[i] for i in rng.permutation(len(pairs))]
    toy_rows = {s: [{k: r[k] for k in PLANTED} for r in toy_ds[s]] for s in toy_ds}

    if nat.tokenizer == "bpe":
        provisional = _render_all(cfg, toy_rows, name_order[:cfg.n_entities],
                                  _relation_names(pair_order[:cfg.n_relations], cfg.family))
        tok = train_bpe(_texts(provisional, name_order[:cfg.n_entities]), nat.bpe_vocab_size)
    else:
        tok = pretrained_tokenizer(model_path, hub)  # hub: the id the error message says to download
    entities = _choose_names(tok, name_order, cfg)
    relations = _relation_names(_choose_relations(tok, pair_order, cfg), cfg.family)
    rendered, encoded, splits = _rendered_splits(cfg, toy_rows, features, tok, entities, relations)
    layout = build_layout(tok, rendered, encoded)
    first = next(x for xs in rendered.values() for x in xs if x.analysed)
    vocab = TextVocab(tok.tokenizer, entities, relations, tok.bos_id, tok.pad_id, tok.source,
                      example=full_text(first.prompt).strip(), question_template=nat.question_template,
                      inverse_template=nat.test_templates[0], layout=layout)
    return DatasetDict(splits), vocab, layout, tok


def _rendered_splits(cfg, toy_rows: dict, features, tok: Tok, entities: list[str], relations: list[str]):
    """(rendered, encoded, {split: Dataset}) of toy rows {split: [row dict]} under `tok`, `entities` and `relations`."""
    from datasets import Dataset

    rendered = _render_all(cfg, toy_rows, entities, relations)
    name_ids = {n: tok.ids(" " + n) for n in entities}
    encoded = {s: _encode(tok, xs, entities, name_ids) for s, xs in rendered.items()}
    splits = {}
    for s, xs in rendered.items():
        cols = {"input_ids": [e[0] for e in encoded[s]], "answer_ids": [e[1] for e in encoded[s]]}
        cols.update({k: [int(x.planted.get(k, -1)) for x in xs] for k in PLANTED})
        splits[s] = Dataset.from_dict({k: cols[k] for k in features}, features=features)
    return rendered, encoded, splits


def render_with_vocab(cfg, toy_rows: dict, features, vocab: TextVocab) -> dict:
    """{split: Dataset} of toy rows {split: [row dict]} rendered with an existing natural task's names, relation nouns and
    tokenizer (`vocab`, e.g. a finished run's): the new facts of a fine-tuning run (tasks/finetune.py) in model.run's text.
    Split names decide the rendering as in `render_natural` (train: documents, one per train template; atomic_test: a
    test template; two-hop rows: the question template)."""
    tok = Tok(vocab.tokenizer, vocab.bos_id, vocab.pad, vocab.source)
    return _rendered_splits(cfg, toy_rows, features, tok, list(vocab.entity_names), list(vocab.relation_names))[2]
