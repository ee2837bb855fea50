"""The rows of a task's splits: the features every split has, and the helpers that build them from fact tuples
(shared by the task generators of tasks/data.py and the fine-tuning task of tasks/finetune.py)."""

from __future__ import annotations

import numpy as np
from datasets import Features, Sequence, Value

FEATURES = Features(
    {
        "input_ids": Sequence(Value("int64")),  # the prompt, without the answer
        "answer_ids": Sequence(Value("int64")),  # the answer's tokens (the toy task: one)
        "answer": Value("int64"),  # planted variables (answer .. bridge2): token ids, -1 for none
        "bridge": Value("int64"),  # the first intermediate value (twohop: b = t(h, r1); comparison: v1 = value(e1, attr))
        "hop": Value("int64"),
        "head": Value("int64"),
        "r1": Value("int64"),
        "r2": Value("int64"),
        "bridge2": Value("int64"),  # the second intermediate value (comparison: v2 = value(e2, attr); threehop: t(bridge, r2)), -1 for none
    }
)


def columns(split, *names: str) -> tuple[list, ...]:
    """The named columns of a split (a datasets.Dataset, or the dict of lists it is built from) as lists, a Dataset's
    read in one batch. Why not `split[name]`: datasets returns a lazy Column that deep-copies the split's features when
    made and formats one row at a time when iterated: on the default task's splits, `split_tensors` was 30x and reading
    rows of 8 columns 160x slower that way (benchmarks/bench_data.py)."""
    batch = split if isinstance(split, dict) else split[:] if len(split) else {}
    return tuple(batch.get(n, []) for n in names)


def _rows(facts: list[tuple], hop: int) -> dict[str, list]:
    """Rows for a split from tuples of token ids: (h, r, t) for hop 1, (h, r1, r2, t, b[, b2]) for hop 2,
    (h, r1, r2, r3, t, b, b2) for hop 3 (the threehop family: r3 is the prompt's fourth token, no column of its own)."""
    cols: dict[str, list] = {k: [] for k in FEATURES}
    for f in facts:
        if hop == 1:
            h, r, t = f
            ids, r1, r2, b, b2 = [h, r], r, -1, -1, -1
        elif hop == 3:
            h, r1, r2, r3, t, b, b2 = f
            ids = [h, r1, r2, r3]
        else:
            h, r1, r2, t, b, *rest = f
            ids, b2 = [h, r1, r2], (rest[0] if rest else -1)
        for k, v in (("input_ids", ids), ("answer_ids", [t]), ("answer", t), ("bridge", b), ("hop", hop), ("head", h),
                     ("r1", r1), ("r2", r2), ("bridge2", b2)):
            cols[k].append(v)
    return cols


def _concat(*parts: dict[str, list]) -> dict[str, list]:
    return {k: sum((p[k] for p in parts), []) for k in FEATURES}


def _shuffled(cols: dict[str, list], rng: np.random.Generator) -> dict[str, list]:
    n = len(cols["answer"])
    order = rng.permutation(n)
    return {k: [v[i] for i in order] for k, v in cols.items()}


def valid_test(held: list, cfg) -> tuple[list, list]:
    """The held-out in-distribution facts (already in random order) cut into (valid_id, test_id), at least one each."""
    n_valid = min(max(int(round(cfg.valid_fraction * len(held))), 1), len(held) - 1)
    return held[:n_valid], held[n_valid:]
