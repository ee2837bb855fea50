"""The data of a fine-tuning run (`model.source: run`): new facts for a model pretrained by sae_ooc, in its vocabulary.

The pretrained run's train split taught atomic facts `(h, r) -> t` (its atomic_test) and two-hop facts over them.
The new facts go on the `(h, r)` pairs it never taught (those `facts_per_entity < n_relations` leaves free, and the
pairs whose facts it never trained, those of its test_unanswerable; their tails are drawn afresh, so no pretraining split asked them), so a
new fact never contradicts an old one. Splits (what the train stage evaluates, every `eval_every` steps):

- `train`: the new atomic facts; with `task.finetune.control`, also two-hop examples of their own (phi per new fact,
  drawn from the questions below); with `replay`, every row of the pretrained run's train split beside them
  (the new rows repeated to make up 1 - replay of the split);
- `atomic_test` (= new_atomic): the new atomic facts, what `train.stop_on: atomic` stops on;
- `valid_id`, `test_id`: the pretrained run's own held-out two-hop questions over old facts (forgetting of composition),
  and `pretrain_atomic`: its atomic facts (forgetting of facts);
- the two-hop questions that use a new fact, none of them in train (a control run's examples are drawn out before the
  rest is cut, from the same seed, so the held-out questions are the same with and without the control): a
  `task.valid_fraction` share in `new_valid` (for choosing settings), the rest in `test_ood_sys` (all) and, by which fact
  is new, `new_new` (both), `new_old` (the first), `old_new` (the second).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from datasets import Dataset, DatasetDict

from sae_ooc.config import TASK_SPLITS as SPLITS
from sae_ooc.errors import UserError
from sae_ooc.tasks.finetune_result import FINETUNE_FILE, FinetuneMeta  # noqa: F401  RUN/data/finetune.json (FINETUNE_FILE)
from sae_ooc.tasks.rows import FEATURES, _concat, _rows, _shuffled, columns, valid_test
from sae_ooc.typed_yaml import load_yaml

KINDS = ("new_new", "new_old", "old_new")  # (first fact new?, second fact new?)
EXTRA_SPLITS = ("new_valid",) + KINDS + ("pretrain_atomic",)
# task fields that generated model.run's facts: the fine-tuning run's task section must repeat them (the report and
# the later stages read them), a different value is refused rather than silently ignored
SOURCE_TASK_FIELDS = ("family", "n_entities", "n_relations", "facts_per_entity", "phi", "ood_fraction",
                      "unanswerable_fraction", "max_test", "valid_fraction", "seed", "render")


def _columns(split: Dataset) -> dict[str, list]:
    return dict(zip(FEATURES, columns(split, *FEATURES)))


def check_source(cfg, src: Path) -> None:
    """model.run must be a finished run of the same toy two-hop task as this config's task section."""
    if not (src / "model" / "model.safetensors").is_file():
        raise UserError(f"model.run {src} has no trained model (model/model.safetensors); train it first "
                        f"(`sae-ooc pipeline --run {src}`) or point model.run at a finished run")
    try:
        theirs = (load_yaml((src / "config.yaml").read_text()) or {}).get("task", {})
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{src / 'config.yaml'} is unreadable ({type(e).__name__}); model.run must be a run directory of sae_ooc") from None
    ours = vars(cfg.task)
    diff = [f"task.{k}: {ours[k]!r} here, {theirs.get(k)!r} in model.run" for k in SOURCE_TASK_FIELDS if theirs.get(k) != ours[k]]
    if diff:
        raise UserError(f"the task section must be model.run's ({src}), whose facts are fine-tuned on: {'; '.join(diff)}; "
                        f"copy model.run's task section into the config (only task.finetune is new)")


def finetune_task(cfg, src: Path, load_task) -> tuple[DatasetDict, object, dict]:
    """(the fine-tuning run's splits, the vocabulary (model.run's), what RUN/data/finetune.json records); `load_task`:
    tasks.data's reader of a run's data (passed in: tasks.data calls this module)."""
    check_source(cfg, src)
    fc = cfg.task.finetune
    src_ds, vocab = load_task(src / "data")
    # model.run may itself be a fine-tuning run (one phase of a data-ordering experiment): its pretraining facts are
    # then its pretrain_atomic, and the same seed draws the same new facts and questions again
    chained = "pretrain_atomic" in src_ds
    old_E, added = vocab.n_entities, 0
    if chained:
        theirs = int(((load_yaml((src / "config.yaml").read_text()) or {}).get("task", {}).get("finetune") or {}).get("new_entities", 0))
        if theirs != fc.new_entities:
            raise UserError(f"model.run {src} is a fine-tuning run with task.finetune.new_entities={theirs}, this config asks "
                            f"{fc.new_entities}; a fine-tuning run of a fine-tuning run keeps its entities: set task.finetune.new_entities: {theirs}")
        old_E -= theirs
    elif fc.new_entities:
        src_ds, vocab = with_new_entities(src_ds, vocab, fc.new_entities)
        added = fc.new_entities
    E, R = vocab.n_entities, vocab.n_relations
    a = src_ds["pretrain_atomic" if chained else "atomic_test"]
    old = {(int(h), int(r)): int(t) for h, r, t in zip(*columns(a, "head", "r1", "answer"))}
    free = [(h, vocab.relation_id(r)) for h in range(E) for r in range(R) if (h, vocab.relation_id(r)) not in old]
    n = fc.n_facts or len(free)
    if not free or n > len(free):
        raise UserError(f"model.run's task leaves {len(free)} (h, r) pairs untaught, so task.finetune.n_facts={fc.n_facts} "
                        f"new facts do not fit; lower task.finetune.n_facts (0 = all), or pretrain with facts_per_entity < "
                        f"n_relations or ood_fraction > 0")
    rng = np.random.default_rng(fc.seed)
    chosen = sorted(free[i] for i in rng.permutation(len(free))[:n])
    new = {(h, r): int(rng.integers(E)) for h, r in chosen}
    facts = {**old, **new}
    by_head: dict[int, list[tuple[int, int]]] = {}
    for (h, r), t in sorted(facts.items()):
        by_head.setdefault(h, []).append((r, t))
    pool, kind_of = [], {}
    for (h, r1), b in sorted(facts.items()):
        for r2, t in by_head.get(b, []):
            n1, n2 = (h, r1) in new, (b, r2) in new
            if n1 or n2:
                kind_of[(h, r1, r2)] = KINDS[[(True, True), (True, False), (False, True)].index((n1, n2))]
                pool.append((h, r1, r2, t, b))
    pool = [pool[i] for i in rng.permutation(len(pool))]
    phi = fc.phi if fc.phi >= 0 else cfg.task.phi
    n_ctrl = int(round(phi * len(new)))
    if n_ctrl > len(pool) - 2:
        raise UserError(f"task.finetune.phi={phi} asks for {n_ctrl} two-hop examples of the {len(new)} new facts but only "
                        f"{len(pool)} exist, leaving fewer than 2 held out; lower task.finetune.phi (at most "
                        f"{max(len(pool) - 2, 0) / len(new):.2f})")
    control, held = pool[:n_ctrl], pool[n_ctrl:]  # drawn out in both runs: the held-out questions do not depend on `control`
    valid, test = valid_test(held, cfg.task)
    atomic = _rows([(h, r, t) for (h, r), t in sorted(new.items())], 1)
    taught = _concat(atomic if fc.atomic else _rows([], 1), _rows(control, 2) if fc.control else _rows([], 2))
    natural = vocab.layout.render != "toy"
    if natural:  # model.run's text: each new fact a document per train template, its two-hop examples questions
        taught = _as_text(cfg, vocab, {"train": taught})["train"]
    n_taught, copies = len(taught["answer"]), 1
    if fc.replay > 0:
        replay = _pretraining_rows(src_ds["train"], set(new), {f[:3] for f in pool}) if chained else _columns(src_ds["train"])
        if not replay["answer"]:
            raise UserError(f"model.run {src} is a fine-tuning run without replay, so it holds no pretraining rows to replay; "
                            f"set task.finetune.replay: 0, or fine-tune a run that had replay")
        copies = max(1, int(round((1 - fc.replay) / fc.replay * len(replay["answer"]) / n_taught)))
        train = _concat({k: v * copies for k, v in taught.items()}, replay)
    else:
        train = taught
    splits = {
        "train": _shuffled(train, rng),
        "valid_id": _columns(src_ds["valid_id"]),
        "test_id": _columns(src_ds["test_id"]),
        # the new facts' held-out questions: their atomic facts are trained, no trained two-hop fact uses them (Wang et
        # al.'s systematic sense; strictly so for new_new); no question here is unanswerable, so that split is empty
        "test_ood_sys": _rows(test, 2),
        "test_unanswerable": _rows([], 2),
        "atomic_test": atomic,
        "new_valid": _rows(valid, 2),
        **{k: _rows([f for f in test if kind_of[f[:3]] == k], 2) for k in KINDS},
        "pretrain_atomic": _columns(a),  # model.run's taught facts (a chained run: the first run's pretraining facts)
    }
    if natural:  # the new facts' held-out splits asked in model.run's text (its own splits are text already)
        splits.update(_as_text(cfg, vocab, {s: splits[s] for s in ("test_ood_sys", "test_unanswerable", "atomic_test", "new_valid", *KINDS)}))
    ds = DatasetDict({s: Dataset.from_dict(splits[s], features=FEATURES) for s in SPLITS + EXTRA_SPLITS})
    n_train = len(splits["train"]["answer"])
    meta = {
        "model_run": str(src.resolve()), "n_free_pairs": len(free), "n_new_facts": len(new),
        # task.finetune.new_entities: entity ids old_n_entities.. are new (every relation id moved up by them); the train
        # stage inserts their embedding rows (models.hooked.with_new_tokens) when this run added them
        "old_n_entities": old_E, "new_entities": fc.new_entities, "new_entities_added": added,
        "pretrain_ood_pairs_reused": sum(1 for p in new if p in _ood_pairs(src_ds, old)),
        "new_facts": [[h, r, t] for (h, r), t in sorted(new.items())],
        "chained": chained, "atomic": fc.atomic, "control": fc.control, "phi": phi, "n_control_examples": n_ctrl, "replay": fc.replay, "copies_of_new_rows": copies,
        "replay_share": 0.0 if fc.replay == 0 else 1 - copies * n_taught / n_train,
        "pool": {k: sum(1 for f in pool if kind_of[f[:3]] == k) for k in KINDS},
        "r2_shortcut": {s: r2_shortcut(splits["train"], splits[s]) for s in ("new_valid", *KINDS, "test_id")},
    }
    return ds, vocab, meta


def _as_text(cfg, vocab, named: dict[str, dict[str, list]]) -> dict[str, dict[str, list]]:
    """Toy rows {split: columns} rendered in a natural-language model.run's names, nouns and tokenizer (`vocab`)."""
    from sae_ooc.tasks.natural.generate import render_with_vocab

    rows = {s: [dict(zip(cols, v)) for v in zip(*cols.values())] for s, cols in named.items()}
    return {s: _columns(d) for s, d in render_with_vocab(cfg.task, rows, FEATURES, vocab).items()}


ID_COLUMNS = ("input_ids", "answer_ids", "answer", "bridge", "head", "r1", "r2", "bridge2")  # token ids (-1: none); hop is not


def with_new_entities(ds: DatasetDict, vocab, k: int) -> tuple[DatasetDict, object]:
    """model.run's splits and vocabulary with `k` new entity tokens e{E}..e{E+k-1} after its E entities: every relation
    id and the pad id move up by k (the toy's planted ids are its token ids, so the planted columns move with them)."""
    from sae_ooc.tasks.vocab import Vocab

    if vocab.layout.render != "toy":
        raise UserError("task.finetune.new_entities adds toy entity tokens; model.run must be a toy-task run (task.render: toy)")
    E = vocab.n_entities

    def shift(i: int) -> int:
        return i + k if i >= E else i

    out = {}
    for name, split in ds.items():
        cols = _columns(split)
        for c in ID_COLUMNS:
            cols[c] = [[shift(i) for i in v] for v in cols[c]] if c.endswith("_ids") else [shift(v) for v in cols[c]]
        out[name] = Dataset.from_dict(cols, features=FEATURES)
    new = Vocab.build(E + k, vocab.n_relations)
    new.layout = vocab.layout
    return DatasetDict(out), new


def r2_shortcut(train: dict[str, list], split: dict[str, list]) -> float | None:
    """Accuracy of answering each two-hop question (h, r1, r2) with the most common tail of the atomic facts in train
    with relation r2 (ties: the smallest id), without reading h or r1 at all: a model that only learned "after r2 comes
    one of the taught r2-tails" scores this. Few new facts share an r2, so on old_new it is far above the majority rate."""
    counts: dict[int, dict[int, int]] = {}
    for (h, r), t in {(h, r): t for h, r, t, hop in zip(*columns(train, "head", "r1", "answer", "hop")) if hop == 1}.items():
        counts.setdefault(r, {}).setdefault(t, 0)
        counts[r][t] += 1
    guess = {r: min(c, key=lambda t: (-c[t], t)) for r, c in counts.items()}
    r2s, answers = columns(split, "r2", "answer")
    if not answers:
        return None
    return sum(guess.get(r2) == t for r2, t in zip(r2s, answers)) / len(answers)


def _pretraining_rows(train: Dataset, new: set, questions: set) -> dict[str, list]:
    """The rows of a fine-tuning run's train split that are not about its new facts: its replay of pretraining rows."""
    cols = _columns(train)
    keep = [i for i, (h, r1, r2, hop) in enumerate(zip(cols["head"], cols["r1"], cols["r2"], cols["hop"]))
            if not ((h, r1) in new if hop == 1 else (h, r1, r2) in questions)]
    seen, rows = set(), []
    for i in keep:  # the new rows were repeated, the pretraining rows were not: keep each prompt once
        key = (cols["head"][i], cols["r1"][i], cols["r2"][i])
        if key not in seen:
            seen.add(key)
            rows.append(i)
    return {k: [v[i] for i in rows] for k, v in cols.items()}


def _ood_pairs(src_ds, old: dict) -> set[tuple[int, int]]:
    """The (h, r) pairs of model.run's test_unanswerable questions that it never taught (its never-trained atomic facts)."""
    d = src_ds["test_unanswerable"]
    out = set()
    for h, r1, r2, b in zip(*columns(d, "head", "r1", "r2", "bridge")):
        out |= {p for p in ((int(h), int(r1)), (int(b), int(r2))) if p not in old}
    return out
