"""The out-of-context two-hop task (Wang et al. 2024) and the reversal task, as a `DatasetDict`.

Token ids: entities e0..e{E-1} are ids 0..E-1, relations r0.. follow, then `<pad>`. A prompt is a list
of token names (`"e12 r3 r7"`). Atomic facts are `[h, r]` and two-hop facts `[h, r1, r2]`; the answer is
predicted at the last position, so right-padding to length 3 never changes what the model sees.

Splits: `train`; `valid_id` and `test_id`, two disjoint random parts of the same held-out in-distribution pool
(two-hop facts not in train whose two atomic facts are; reversal: inverses not in train whose forward fact is),
`task.valid_fraction` of it in valid_id: early stopping and every tuning choice read valid_id, test_id is only
reported; `test_ood` (a needed atomic fact is not in train) and `atomic_test` (the atomic facts of train).

With `task.render: natural` the data stage renders these facts as English documents and questions over a real
tokenizer (sae_ooc/tasks/natural): same splits and planted variables, multi-token `input_ids`/`answer_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    Sequence,
    Value,
    disable_progress_bars,
    load_from_disk,
)

from sae_ooc.config import TASK_FAMILIES, TASK_SPLITS, TaskConfig
from sae_ooc.registry import Registry
from sae_ooc.errors import UserError, unreadable
from sae_ooc.io import read_json, write_json
from sae_ooc.tasks.layout import LAYOUT_FILE, TOY_LAYOUT, Layout, load_layout
from sae_ooc.tasks.natural.generate import render_natural
from sae_ooc.tasks.natural.text_vocab import TOKENIZER_FILE, TextVocab
from sae_ooc.tasks.vocab import POSITION_ROLES, SEQ_LEN, Vocab  # noqa: F401  (re-exported)

SPLITS = TASK_SPLITS  # listed in config.py, which config validation (harvest.splits) reads without torch
FEATURES = Features(
    {
        "input_ids": Sequence(Value("int64")),  # the prompt, without the answer
        "answer_ids": Sequence(Value("int64")),  # the answer's tokens (the toy task: one)
        "answer": Value("int64"),  # planted variables (answer .. r2): entity and relation ids, -1 for none
        "bridge": Value("int64"),
        "hop": Value("int64"),
        "head": Value("int64"),
        "r1": Value("int64"),
        "r2": Value("int64"),
    }
)


def _rows(facts: list[tuple], hop: int) -> dict[str, list]:
    """Rows for a split from tuples of token ids: (h, r, t) for hop 1, (h, r1, r2, t, b) for hop 2."""
    cols: dict[str, list] = {k: [] for k in FEATURES}
    for f in facts:
        if hop == 1:
            h, r, t = f
            ids, r1, r2, b = [h, r], r, -1, -1
        else:
            h, r1, r2, t, b = f
            ids = [h, r1, r2]
        cols["input_ids"].append(ids)
        cols["answer_ids"].append([t])
        cols["answer"].append(t)
        cols["bridge"].append(b)
        cols["hop"].append(hop)
        cols["head"].append(h)
        cols["r1"].append(r1)
        cols["r2"].append(r2)
    return cols


def _concat(*parts: dict[str, list]) -> dict[str, list]:
    return {k: sum((p[k] for p in parts), []) for k in FEATURES}


def _shuffled(cols: dict[str, list], rng: np.random.Generator) -> dict[str, list]:
    n = len(cols["answer"])
    order = rng.permutation(n)
    return {k: [v[i] for i in order] for k, v in cols.items()}


def valid_test(held: list, cfg: TaskConfig) -> tuple[list, list]:
    """The held-out in-distribution facts (already in random order) cut into (valid_id, test_id), at least one each."""
    n_valid = min(max(int(round(cfg.valid_fraction * len(held))), 1), len(held) - 1)
    return held[:n_valid], held[n_valid:]


FAMILIES: Registry = Registry("task.family", expected=TASK_FAMILIES)


@FAMILIES.register("twohop")
def generate_twohop(cfg: TaskConfig) -> tuple[DatasetDict, Vocab]:
    rng = np.random.default_rng(cfg.seed)
    E, R, k = cfg.n_entities, cfg.n_relations, cfg.facts_per_entity
    vocab = Vocab.build(E, R)
    rel = vocab.relation_id

    # (h, r) -> t: each head gets k distinct relations, each with a random tail entity
    atomic: list[tuple[int, int, int]] = []
    for h in range(E):
        for r in sorted(rng.choice(R, size=k, replace=False).tolist()):
            atomic.append((h, rel(r), int(rng.integers(E))))
    n_ood = int(round(cfg.ood_fraction * len(atomic)))
    held_out = set(rng.choice(len(atomic), size=n_ood, replace=False).tolist()) if n_ood else set()
    by_head: dict[int, list[int]] = {}
    for i, (h, _, _) in enumerate(atomic):
        by_head.setdefault(h, []).append(i)

    inferred_id, inferred_ood = [], []
    for i, (h, r1, b) in enumerate(atomic):
        for j in by_head[b]:
            _, r2, t = atomic[j]
            fact = (h, r1, r2, t, b)
            (inferred_ood if (i in held_out or j in held_out) else inferred_id).append(fact)

    atomic_train = [f for i, f in enumerate(atomic) if i not in held_out]
    n_inferred_train = int(round(cfg.phi * len(atomic_train)))
    if n_inferred_train > len(inferred_id) - 2:
        raise UserError(
            f"task.phi={cfg.phi} asks for {n_inferred_train} inferred facts in train but only {len(inferred_id)} exist, "
            f"leaving fewer than 2 for valid_id and test_id; lower task.phi "
            f"(at most {max(len(inferred_id) - 2, 0) / max(len(atomic_train), 1):.2f})"
        )
    order = rng.permutation(len(inferred_id))
    inferred_train = [inferred_id[i] for i in order[:n_inferred_train]]
    valid_id, test_id = valid_test([inferred_id[i] for i in order[n_inferred_train:]], cfg)

    splits = {
        "train": _shuffled(_concat(_rows(atomic_train, 1), _rows(inferred_train, 2)), rng),
        "valid_id": _rows(valid_id, 2),
        "test_id": _rows(test_id, 2),
        "test_ood": _rows(inferred_ood, 2),
        "atomic_test": _rows(atomic_train, 1),
    }
    return DatasetDict({s: Dataset.from_dict(splits[s], features=FEATURES) for s in SPLITS}), vocab


@FAMILIES.register("reversal")
def generate_reversal(cfg: TaskConfig) -> tuple[DatasetDict, Vocab]:
    """(a, r) -> b in train; (b, r⁻¹) -> a is in train for some pairs and held out (valid_id, test_id) for others.

    Each relation is a random permutation of the entities so that the inverse is a function too.
    Relation r's inverse is token r{R + r}. Pairs in the OOD slice appear in neither direction.
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
    order = rng.permutation(len(pairs))
    n_ood = int(round(cfg.ood_fraction * len(pairs)))
    n_hold = max(2, int(round(cfg.reversal_holdout * (len(pairs) - n_ood))))
    if n_hold >= len(pairs) - n_ood:
        raise UserError(f"the reversal task has {len(pairs) - n_ood} in-distribution pairs, too few to hold out {n_hold} inverses "
                        f"(valid_id and test_id need one each) and train on the rest; raise task.n_entities or task.facts_per_entity")
    ood = [pairs[i] for i in order[:n_ood]]
    held = [pairs[i] for i in order[n_ood : n_ood + n_hold]]
    kept = [pairs[i] for i in order[n_ood + n_hold :]]
    valid, test = valid_test(held, cfg)

    def fwd(ps):
        return [(a, rel(r), b) for a, r, b in ps]

    def inv(ps):
        return [(b, rel(R + r), a) for a, r, b in ps]

    splits = {
        "train": _shuffled(_concat(_rows(fwd(held + kept), 1), _rows(inv(kept), 1)), rng),
        "valid_id": _rows(inv(valid), 1),
        "test_id": _rows(inv(test), 1),
        "test_ood": _rows(inv(ood), 1),
        "atomic_test": _rows(fwd(held + kept), 1),
    }
    return DatasetDict({s: Dataset.from_dict(splits[s], features=FEATURES) for s in SPLITS}), vocab


def generate(cfg: TaskConfig) -> tuple[DatasetDict, Vocab]:
    """The task of `cfg.family`: its splits as a DatasetDict and its vocabulary."""
    return FAMILIES.get(cfg.family)(cfg)


def save_task(ds: DatasetDict, vocab: Vocab, data_dir: Path, layout: Layout = TOY_LAYOUT, extra: dict | None = None) -> None:
    """Write the task atomically: the DatasetDict, vocab.json, layout.json and `extra` files ({name: write(path)})."""
    data_dir = Path(data_dir)
    tmp = data_dir.with_name(data_dir.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    disable_progress_bars()  # three bars for a sub-second write is noise
    ds.save_to_disk(str(tmp))
    write_json(tmp / "vocab.json", vocab.to_json())
    write_json(tmp / LAYOUT_FILE, layout.to_json())
    for name, write in (extra or {}).items():
        write(tmp / name)
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    tmp.rename(data_dir)


def load_task(data_dir: Path) -> tuple[DatasetDict, Vocab]:
    data_dir = Path(data_dir)
    if not (data_dir / "vocab.json").exists():
        raise UserError(f"no task data in {data_dir}; run `sae-ooc data --run {data_dir.parent}` first")
    rebuild = f"sae-ooc data --run {data_dir.parent} --force"
    try:
        d = read_json(data_dir / "vocab.json")
        vocab = TextVocab.from_json(d, data_dir) if d.get("render") == "natural" else Vocab.from_json(d)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise unreadable(data_dir / "vocab.json", e, rebuild) from None
    try:
        ds = load_from_disk(str(data_dir))
    except Exception as e:  # datasets raises many kinds on a damaged folder (arrow, JSON, missing files)
        raise unreadable(data_dir, e, rebuild) from None
    missing = [s for s in SPLITS if s not in ds]
    if missing:  # data written before a split existed (valid_id)
        raise UserError(f"task data in {data_dir} has no split {', '.join(missing)} (written by an older version); rerun `{rebuild}`")
    vocab.layout = load_layout(data_dir)
    return ds, vocab


@dataclass
class SplitTensors:
    """A split as padded tensors: what the model sees and where the answer is read."""

    tokens: torch.Tensor  # [n, SEQ_LEN], right-padded
    answer_pos: torch.Tensor  # [n] index of the last real token
    answer: torch.Tensor  # [n]
    bridge: torch.Tensor  # [n], -1 when there is none
    hop: torch.Tensor  # [n]

    def __len__(self) -> int:
        return int(self.answer.shape[0])

    def subset(self, idx: torch.Tensor) -> "SplitTensors":
        return SplitTensors(self.tokens[idx], self.answer_pos[idx], self.answer[idx], self.bridge[idx], self.hop[idx])


def split_tensors(ds: Dataset, pad_id: int) -> SplitTensors:
    n = len(ds)
    tokens = torch.full((n, SEQ_LEN), pad_id, dtype=torch.long)
    lengths = torch.zeros(n, dtype=torch.long)
    for i, ids in enumerate(ds["input_ids"]):
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        lengths[i] = len(ids)
    return SplitTensors(
        tokens=tokens,
        answer_pos=lengths - 1,
        answer=torch.tensor(ds["answer"], dtype=torch.long).reshape(n),
        bridge=torch.tensor(ds["bridge"], dtype=torch.long).reshape(n),
        hop=torch.tensor(ds["hop"], dtype=torch.long).reshape(n),
    )


def majority_rate(ds: Dataset) -> float:
    """Accuracy of always answering the most common answer of this split (the floor to beat)."""
    if len(ds) == 0:
        return 0.0
    counts = np.bincount(np.asarray(ds["answer"]))
    return float(counts.max() / counts.sum())


def run_data(run, force: bool = False) -> dict:
    """Stage `data`: generate the task into RUN/data (a DatasetDict + vocab.json + layout.json; natural: + tokenizer.json)."""
    ds, vocab = generate(run.cfg.task)
    if run.cfg.task.render == "natural":
        ds, vocab, layout, tok = render_natural(run.cfg.task, ds, FEATURES, getattr(run.cfg.model, "path", None))
        save_task(ds, vocab, run.data_dir, layout, {TOKENIZER_FILE: lambda path: tok.tokenizer.save(str(path))})
    else:
        save_task(ds, vocab, run.data_dir, TOY_LAYOUT)
    return {"sizes": {s: len(ds[s]) for s in SPLITS}, "majority_rate": {s: majority_rate(ds[s]) for s in SPLITS}}
