"""The task families (`task.family`), each a generator of the toy task's splits: twohop, reversal, comparison.

Every family writes the same splits (sae_ooc.sections.model.TASK_SPLITS) with the same planted columns, and its
analysed prompts have the two-hop question's roles (head, r1, r2: the layout every stage reads), so no stage needs
to know the family:
- `train`; `valid_id` and `test_id`, two disjoint random parts of one held-out in-distribution pool (inferred
  facts none of whose atomic facts is OOD or unanswerable), `task.valid_fraction` of it in valid_id;
- `test_ood_sys`, the systematic out-of-distribution split of Wang et al. 2024 ("Grokked transformers are implicit
  reasoners"): a share `task.ood_fraction` of the atomic facts is marked OOD; they *are* trained as atomic facts,
  but no inferred training fact uses one (inferred facts touching one are left out of every split), and
  test_ood_sys asks the inferred facts all of whose atomic facts are OOD. Their composition model scores ~0 there,
  their comparison model generalizes;
- `test_unanswerable`, the control no model can answer: inferred facts that need an atomic fact never trained
  (`task.unanswerable_fraction` of them);
- `atomic_test`, the atomic facts of train.
Each held-out split keeps at most `task.max_test` examples (drawn at random), so that a family with many inferred
facts (comparison: every pair of entities) keeps its evaluation and activation caches small.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset, DatasetDict

from sae_ooc.config import TASK_SPLITS, TaskConfig
from sae_ooc.errors import UserError
from sae_ooc.registry import Registry
from sae_ooc.tasks.layout import ONE_HOP_LAYOUT, THREEHOP_LAYOUT, TOY_LAYOUT, Layout
from sae_ooc.tasks.rows import FEATURES, _concat, _rows, _shuffled, valid_test  # noqa: F401  (re-exported)
from sae_ooc.tasks.vocab import Vocab

SPLITS = TASK_SPLITS
COMPARISON_LABELS = ("lt", "eq", "gt")  # the comparison family's answers: value(e1, attr) <, =, > value(e2, attr)


def _capped(facts: list, n: int, rng: np.random.Generator) -> list:
    """At most `n` of `facts`, a random subset in their order (all when there are no more)."""
    if len(facts) <= n:
        return facts
    return [facts[i] for i in sorted(rng.choice(len(facts), size=n, replace=False).tolist())]


def _marks(n: int, cfg: TaskConfig, rng: np.random.Generator) -> tuple[set, set]:
    """(unanswerable, OOD) index sets of `n` atomic facts, disjoint: never trained / trained but in no inferred training fact."""
    order = rng.permutation(n).tolist()
    n_un = int(round(cfg.unanswerable_fraction * n))
    n_ood = int(round(cfg.ood_fraction * n))
    return set(order[:n_un]), set(order[n_un : n_un + n_ood])


def _inferred_splits(inferred: list[tuple], needs: list[tuple], unanswerable: set, ood: set, n_train: int,
                     cfg: TaskConfig, rng: np.random.Generator) -> dict[str, list]:
    """Inferred facts, each with the atomic facts it needs (indices), into train / valid_id / test_id / test_ood_sys /
    test_unanswerable (Wang et al.'s rule: a fact touching an OOD atomic fact but not only OOD ones goes nowhere)."""
    pool, sys_, un = [], [], []
    for fact, need in zip(inferred, needs):
        if any(i in unanswerable for i in need):
            un.append(fact)
        elif all(i in ood for i in need):
            sys_.append(fact)
        elif not any(i in ood for i in need):
            pool.append(fact)
    if n_train > len(pool) - 2:
        raise UserError(
            f"task.phi={cfg.phi} asks for {n_train} inferred facts in train but only {len(pool)} in-distribution ones exist, "
            f"leaving fewer than 2 for valid_id and test_id; lower task.phi, task.ood_fraction or task.unanswerable_fraction"
        )
    order = rng.permutation(len(pool))
    held = _capped([pool[i] for i in order[n_train:]], cfg.max_test, rng)
    valid, test = valid_test(held, cfg)
    return {"train": [pool[i] for i in order[:n_train]], "valid_id": valid, "test_id": test,
            "test_ood_sys": _capped(sys_, cfg.max_test, rng), "test_unanswerable": _capped(un, cfg.max_test, rng)}


def _dataset(train_atomic: list, inferred: dict[str, list], rng: np.random.Generator, hop: int = 2) -> DatasetDict:
    splits = {"train": _shuffled(_concat(_rows(train_atomic, 1), _rows(inferred["train"], hop)), rng),
              **{s: _rows(inferred[s], hop) for s in ("valid_id", "test_id", "test_ood_sys", "test_unanswerable")},
              "atomic_test": _rows(train_atomic, 1)}
    return DatasetDict({s: Dataset.from_dict(splits[s], features=FEATURES) for s in SPLITS})


FAMILIES: Registry = Registry("task.family")
# the layout of each family's analysed prompts (sae_ooc.tasks.layout), the toy's two-hop question unless named here
LAYOUTS: dict[str, Layout] = {"reversal": ONE_HOP_LAYOUT, "threehop": THREEHOP_LAYOUT}


def layout_of(family: str) -> Layout:
    """The layout every stage reads the analysed prompts of `family` by (RUN/data/layout.json)."""
    return LAYOUTS.get(family, TOY_LAYOUT)


def _chain_atomic(cfg: TaskConfig, rng: np.random.Generator) -> tuple[Vocab, list, set, set, dict[int, list[int]]]:
    """The atomic facts of the chain families (twohop, threehop): vocab, facts (h, r, t), their (unanswerable, OOD)
    marks and {head: indices of its facts}. Each head gets k distinct relations, each with a random tail entity."""
    E, R, k = cfg.n_entities, cfg.n_relations, cfg.facts_per_entity
    vocab = Vocab.build(E, R)
    atomic: list[tuple[int, int, int]] = []
    for h in range(E):
        for r in sorted(rng.choice(R, size=k, replace=False).tolist()):
            atomic.append((h, vocab.relation_id(r), int(rng.integers(E))))
    unanswerable, ood = _marks(len(atomic), cfg, rng)
    by_head: dict[int, list[int]] = {}
    for i, (h, _, _) in enumerate(atomic):
        by_head.setdefault(h, []).append(i)
    return vocab, atomic, unanswerable, ood, by_head


@FAMILIES.register("twohop")
def generate_twohop(cfg: TaskConfig) -> tuple[DatasetDict, Vocab]:
    """(h, r1) -> b and (b, r2) -> t give the two-hop fact (h, r1, r2) -> t, with b the bridge."""
    rng = np.random.default_rng(cfg.seed)
    vocab, atomic, unanswerable, ood, by_head = _chain_atomic(cfg, rng)
    inferred, needs = [], []
    for i, (h, r1, b) in enumerate(atomic):
        for j in by_head[b]:
            _, r2, t = atomic[j]
            inferred.append((h, r1, r2, t, b))
            needs.append((i, j))
    n_id_atomic = len(atomic) - len(unanswerable) - len(ood)  # Wang et al.: phi counts the ID atomic facts
    parts = _inferred_splits(inferred, needs, unanswerable, ood, int(round(cfg.phi * n_id_atomic)), cfg, rng)
    return _dataset([f for i, f in enumerate(atomic) if i not in unanswerable], parts, rng), vocab


def threehop_facts(cfg: TaskConfig) -> dict:
    """The threehop family's facts before rendering (generate_threehop's rows; scripts and tests read them too):
    `atomic` (h, r, t) with their `unanswerable` and `ood` index sets; the two-hop facts (h, r1, r2, b2, b1, b2) and the
    three-hop facts (h, r1, r2, r3, t, b1, b2), each with the atomic facts it needs; `parts`, the three-hop facts by
    split (Wang et al.'s rule, as the other families); `two_train` and `two_heldout`, the in-distribution two-hop facts
    trained and not (the two-hop accuracy of a threehop model is read on the latter)."""
    rng = np.random.default_rng(cfg.seed)
    vocab, atomic, unanswerable, ood, by_head = _chain_atomic(cfg, rng)
    two, two_needs, three, three_needs = [], [], [], []
    for i, (h, r1, b1) in enumerate(atomic):
        for j in by_head[b1]:
            _, r2, b2 = atomic[j]
            two.append((h, r1, r2, b2, b1, b2))  # bridge2 = the answer b2: what the three-hop question carries at r2
            two_needs.append((i, j))
            for m in by_head[b2]:
                _, r3, t = atomic[m]
                three.append((h, r1, r2, r3, t, b1, b2))
                three_needs.append((i, j, m))
    n_train = int(round(cfg.phi * (len(atomic) - len(unanswerable) - len(ood))))  # phi per ID atomic fact, each of 2 and 3 hops
    marked = unanswerable | ood  # a two-hop fact touching an OOD atomic fact is in no split, as a three-hop one
    pool2 = [f for f, need in zip(two, two_needs) if not any(i in marked for i in need)]
    order2 = rng.permutation(len(pool2)).tolist()
    parts = _inferred_splits(three, three_needs, unanswerable, ood, n_train, cfg, rng)
    return {"vocab": vocab, "atomic": atomic, "unanswerable": unanswerable, "ood": ood, "two": two, "two_needs": two_needs,
            "three": three, "three_needs": three_needs, "parts": parts,
            "two_train": [pool2[i] for i in order2[:n_train]], "two_heldout": [pool2[i] for i in order2[n_train:]]}


@FAMILIES.register("threehop")
def generate_threehop(cfg: TaskConfig) -> tuple[DatasetDict, Vocab]:
    """(h, r1) -> b1, (b1, r2) -> b2, (b2, r3) -> t give the three-hop fact (h, r1, r2, r3) -> t through two bridges.

    train: every trained atomic fact, phi per in-distribution atomic fact of two-hop facts (h, r1, r2) -> b2 and as
    many three-hop facts; the held-out splits ask three-hop facts (the two-hop ones are the recipe, not the question).
    """
    f = threehop_facts(cfg)
    rng = np.random.default_rng([cfg.seed, 3])  # the shuffle of train, apart from threehop_facts' draws
    parts, trained = f["parts"], [a for i, a in enumerate(f["atomic"]) if i not in f["unanswerable"]]
    splits = {"train": _shuffled(_concat(_rows(trained, 1), _rows(f["two_train"], 2), _rows(parts["train"], 3)), rng),
              **{s: _rows(parts[s], 3) for s in ("valid_id", "test_id", "test_ood_sys", "test_unanswerable")},
              "atomic_test": _rows(trained, 1)}
    vocab = f["vocab"]
    vocab.layout = THREEHOP_LAYOUT
    return DatasetDict({s: Dataset.from_dict(splits[s], features=FEATURES) for s in SPLITS}), vocab


@FAMILIES.register("reversal")
def generate_reversal(cfg: TaskConfig) -> tuple[DatasetDict, Vocab]:
    """(a, r) -> b in train; (b, r⁻¹) -> a is in train for some pairs and held out (valid_id, test_id) for others.

    Each relation is a random permutation of the entities so that the inverse is a function too. Relation r's inverse
    is token r{R + r}. Unanswerable pairs appear in neither direction. The systematic split: `task.ood_fraction` of the
    pairs are OOD, trained forward, and their inverses form test_ood_sys. One atomic fact makes one inferred fact
    here, so it asks the same as test_id; it is kept so that every family reports the same splits.
    """
    rng = np.random.default_rng(cfg.seed)
    E, R, k = cfg.n_entities, cfg.n_relations, cfg.facts_per_entity
    vocab = Vocab.build(E, 2 * R)
    rel = vocab.relation_id
    perms = [rng.permutation(E) for _ in range(R)]
    pairs = []
    for a in range(E):
        for r in sorted(rng.choice(R, size=k, replace=False).tolist()):
            pairs.append((a, r, int(perms[r][a])))
    unanswerable, ood = _marks(len(pairs), cfg, rng)
    rest = [i for i in rng.permutation(len(pairs)).tolist() if i not in unanswerable and i not in ood]
    n_hold = max(2, int(round(cfg.reversal_holdout * len(rest))))
    if n_hold >= len(rest):
        raise UserError(f"the reversal task has {len(rest)} in-distribution pairs, too few to hold out {n_hold} inverses "
                        f"(valid_id and test_id need one each) and train on the rest; raise task.n_entities or task.facts_per_entity")
    held = _capped([pairs[i] for i in rest[:n_hold]], cfg.max_test, rng)
    kept = [pairs[i] for i in rest[n_hold:]]
    valid, test = valid_test(held, cfg)

    def fwd(ps):
        return [(a, rel(r), b) for a, r, b in ps]

    def inv(ps):
        return [(b, rel(R + r), a) for a, r, b in ps]

    trained = [p for i, p in enumerate(pairs) if i not in unanswerable]
    parts = {"train": inv(kept), "valid_id": inv(valid), "test_id": inv(test),
             "test_ood_sys": _capped(inv([pairs[i] for i in sorted(ood)]), cfg.max_test, rng),
             "test_unanswerable": _capped(inv([pairs[i] for i in sorted(unanswerable)]), cfg.max_test, rng)}
    return _dataset(fwd(trained), parts, rng, hop=1), vocab


@FAMILIES.register("comparison")
def generate_comparison(cfg: TaskConfig) -> tuple[DatasetDict, Vocab]:
    """Wang et al. 2024's comparison: atomic facts (e, attr) -> v, inferred facts (e1, attr, e2) -> lt / eq / gt.

    Each entity has `task.facts_per_entity` of the `task.n_relations` attributes, each with a value v0..v{n_values-1}
    drawn at random. The analysed prompt is `e1 attr e2` (Wang et al. write `attr e1 e2`; this order gives it the
    two-hop question's roles: head e1, r1 the attribute, where v1 = value(e1, attr) is the bridge, r2 the second
    entity, whose value v2 is `bridge2`), answered with lt, eq or gt. Both orders of each pair of distinct entities
    that share the attribute are inferred facts. OOD and unanswerable marks are per atomic fact (Wang et al. mark
    10% of the entities OOD per attribute, the same thing).

    Token ids: the entity block (Vocab.n_entities: every token a planted variable can take) holds the entities
    e0.., the values v0.. and the labels; then the attributes r0..; then `<pad>`.
    """
    rng = np.random.default_rng(cfg.seed)
    E, A, k, V = cfg.n_entities, cfg.n_relations, cfg.facts_per_entity, cfg.n_values
    names = ([f"e{i}" for i in range(E)] + [f"v{i}" for i in range(V)] + list(COMPARISON_LABELS)
             + [f"r{i}" for i in range(A)] + ["<pad>"])
    vocab = Vocab(names, E + V + len(COMPARISON_LABELS), A)
    value_id = E
    label_id = E + V

    atomic: list[tuple[int, int, int]] = []  # (e, attr token, value token)
    by_attr: dict[int, list[int]] = {}
    for e in range(E):
        for a in sorted(rng.choice(A, size=k, replace=False).tolist()):
            by_attr.setdefault(a, []).append(len(atomic))
            atomic.append((e, vocab.relation_id(a), value_id + int(rng.integers(V))))
    unanswerable, ood = _marks(len(atomic), cfg, rng)
    inferred, needs = [], []
    for a in sorted(by_attr):
        for i in by_attr[a]:
            for j in by_attr[a]:
                if i == j:
                    continue
                (e1, r, v1), (e2, _, v2) = atomic[i], atomic[j]
                inferred.append((e1, r, e2, label_id + int(np.sign(v1 - v2)) + 1, v1, v2))
                needs.append((i, j))
    n_id_atomic = len(atomic) - len(unanswerable) - len(ood)
    parts = _inferred_splits(inferred, needs, unanswerable, ood, int(round(cfg.phi * n_id_atomic)), cfg, rng)
    return _dataset([f for i, f in enumerate(atomic) if i not in unanswerable], parts, rng), vocab


DESCRIPTIONS = {  # what a family's facts are, in the report's task section
    "twohop": "{E} entities, {R} relations, {k} atomic facts `(h, r) → t` per entity; two-hop facts `(h, r1, r2) → t2` through a "
              "bridge `b` with `(h, r1) → b`, `(b, r2) → t2`.",
    "reversal": "{E} entities, {R} relations (each a permutation of the entities) and their inverses, {k} facts `(a, r) → b` per "
                "entity, trained forward; the inverse questions `(b, r⁻¹) → a` are trained for some pairs and held out for others.",
    "threehop": "{E} entities, {R} relations, {k} atomic facts `(h, r) → t` per entity; three-hop facts `(h, r1, r2, r3) → t3` "
                "through two bridges, `b1` with `(h, r1) → b1` and `b2` with `(b1, r2) → b2`; train holds two-hop facts "
                "`(h, r1, r2) → b2` beside the three-hop ones, the held-out splits ask three hops.",
    "comparison": "{E} entities, {R} attributes, {k} attribute values `(e, attr) → v` (v0..v{V1}) per entity; inferred facts "
                  "`(e1, attr, e2)` answered lt / eq / gt by comparing the two values (Wang et al. 2024), with the two-hop roles: "
                  "the first value is the bridge (at r1 = attr), the second (of e2, at r2) `bridge2`.",
}


QUESTIONS = {  # what each family asks of the model (the report's family section answers it)
    "twohop": "Does the model compose two facts it learned separately, `(h, r1) → b` and `(b, r2) → t`, into `(h, r1, r2) → t`: "
              "in distribution (test_id) and on OOD atomic facts no inferred training fact used (test_ood_sys, where Wang et al. "
              "2024 find composition fails)?",
    "reversal": "Having learned `(a, r) → b`, does the model answer the reversed question `(b, r⁻¹) → a`, never trained for these "
                "pairs (test_id; the reversal curse, Berglund et al. 2023), and what does it answer instead?",
    "comparison": "Does the model compare two attribute values it learned separately, `(e1, attr, e2)` → lt / eq / gt: in "
                  "distribution (test_id) and on OOD facts (test_ood_sys, where Wang et al. 2024 find comparison generalizes)?",
    "threehop": "Does the model compose three facts it learned separately, `(h, r1) → b1`, `(b1, r2) → b2`, `(b2, r3) → t3`, into "
                "`(h, r1, r2, r3) → t3` out of context (test_id; test_ood_sys on OOD atomic facts), and where are its two bridges "
                "(the lead section \"Three hops\")?",
}


ASKED = {  # the family's question in a few words, for the report's headings ("does it compose A→C?")
    "twohop": "A→C", "reversal": "the reversed question (b, r⁻¹) → a", "comparison": "the comparison (e1, attr, e2) → lt / eq / gt",
    "threehop": "three hops (h, r1, r2, r3) → t3",
}


def asked(family: str, s: str = "") -> str:
    """The verb and the family's question for a heading: "compose A→C" (twohop), "answer the reversed question ..." (the
    others); `s` = "s": the third person ("composes A→C")."""
    return f"compose{s} A→C" if family == "twohop" else f"answer{s} {ASKED[family]}"


def answered(family: str) -> str:
    """The family's answer as a heading names it: "A→C" (twohop), "the answer to the reversed question ..." (the others)."""
    return "A→C" if family == "twohop" else f"the answer to {ASKED[family]}"


def describe(cfg: TaskConfig) -> str:
    """One sentence on the facts of `cfg.family` (the report's task section)."""
    return DESCRIPTIONS[cfg.family].format(E=cfg.n_entities, R=cfg.n_relations, k=cfg.facts_per_entity, V1=cfg.n_values - 1)


def extra_sets(cfg: TaskConfig) -> dict[str, Dataset]:
    """Evaluation sets a family asks beside its splits (the report's family section reads them): the threehop family's
    in-distribution two-hop facts held out of train (`two_hop_heldout`) and trained (`two_hop_train`, in-sample), so that
    the three-hop model's two-hop accuracy is known; none for the other families."""
    if cfg.family != "threehop":
        return {}
    f = threehop_facts(cfg)
    return {k: Dataset.from_dict(_rows(f[s], 2), features=FEATURES) for k, s in (("two_hop_heldout", "two_heldout"),
                                                                               ("two_hop_train", "two_train"))}


def inverse_relations(family: str, vocab: Vocab) -> dict[int, int]:
    """{relation token: its inverse's token}: the reversal family's r{i} and r{R + i} (generate_reversal), else none."""
    if family != "reversal":
        return {}
    half = vocab.n_relations // 2
    pairs = [(vocab.relation_id(r), vocab.relation_id(half + r)) for r in range(half)]
    return {**{a: b for a, b in pairs}, **{b: a for a, b in pairs}}


FAMILIES.check()  # every name of the one list (sae_ooc.registry.NAMES) is registered above
