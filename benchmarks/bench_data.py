"""Reading a task's splits: `split_tensors` and the column reads of the stages, batched (`tasks.rows.columns`, today's
code) against the per-column datasets access they replaced (`split["head"]`: a lazy datasets Column that deep-copies
the split's features when made and formats one row at a time when iterated).

Both paths run on the same splits in one process, repeats interleaved so machine load hits both alike, and their
outputs are checked equal before anything is timed. Without `--run`, the default experiment's task is generated in a
temporary folder (no training needed).

    python benchmarks/bench_data.py [--run runs/default] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_ooc.config import load_config  # noqa: E402
from sae_ooc.rundir import RunDir  # noqa: E402
from sae_ooc.tasks.data import SPLITS, load_task, run_data, split_tensors  # noqa: E402
from sae_ooc.tasks.rows import columns  # noqa: E402

COLUMNS = ("input_ids", "answer_ids", "head", "r1", "r2", "answer", "bridge", "hop")


def per_column(ds, vocab):
    """The previous `split_tensors` for a toy task: each column read through `ds[name]`, a row at a time."""
    n, pad_id, seq_len = len(ds), vocab.pad_id, vocab.layout.seq_len
    prompts, answers = ds["input_ids"], ds["answer_ids"]
    a_len = max((len(a) for a in answers), default=1)
    tokens = torch.full((n, seq_len), pad_id, dtype=torch.long)
    lengths = torch.zeros(n, dtype=torch.long)
    answer_ids = torch.full((n, a_len), -1, dtype=torch.long)
    for i, (ids, ans) in enumerate(zip(prompts, answers)):
        row = list(ids) + list(ans[:-1])
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        lengths[i] = len(ids)
        answer_ids[i, : len(ans)] = torch.tensor(ans, dtype=torch.long)
    return tokens, lengths - 1, answer_ids[:, 0], torch.tensor(ds["bridge"], dtype=torch.long), torch.tensor(ds["hop"], dtype=torch.long)


def batched(ds, vocab):
    st = split_tensors(ds, vocab)
    return st.tokens, st.answer_pos, st.answer, st.bridge, st.hop


def rows_per_column(d):
    return list(zip(*(d[c] for c in COLUMNS)))


def rows_batched(d):
    return list(zip(*columns(d, *COLUMNS)))


def timed(f, *args) -> float:
    t = time.perf_counter()
    f(*args)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a run whose data stage has run (default: the default task, generated here)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.run is None:
            run = RunDir(Path(tmp) / "run", load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml"))
            run_data(run)
            data_dir = run.data_dir
        else:
            data_dir = args.run / "data"
        ds, vocab = load_task(data_dir)
        if vocab.layout.render != "toy":
            raise SystemExit("bench_data.py: the per-column reference is the toy layout's; pass a toy run")
        sizes = {s: len(ds[s]) for s in SPLITS}
        for s in SPLITS:  # the same tensors and rows before anything is timed
            assert all(torch.equal(a, b) for a, b in zip(per_column(ds[s], vocab), batched(ds[s], vocab))), s
            assert rows_per_column(ds[s]) == rows_batched(ds[s]), s
        times = {k: [] for k in ("tensors_old", "tensors_new", "rows_old", "rows_new")}
        for _ in range(args.repeats):
            times["tensors_old"].append(sum(timed(per_column, ds[s], vocab) for s in SPLITS))
            times["tensors_new"].append(sum(timed(batched, ds[s], vocab) for s in SPLITS))
            times["rows_old"].append(sum(timed(rows_per_column, ds[s]) for s in SPLITS))
            times["rows_new"].append(sum(timed(rows_batched, ds[s]) for s in SPLITS))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"- task: {data_dir if args.run else 'configs/default.yaml (generated here)'}; rows per split {sizes}; "
          f"{args.repeats} interleaved repeats, medians; the outputs of both paths checked equal")
    print(f"- split_tensors over every split: per-column {med['tensors_old'] * 1e3:.1f} ms, batched {med['tensors_new'] * 1e3:.1f} ms, "
          f"{med['tensors_old'] / med['tensors_new']:.0f}x")
    print(f"- rows of {len(COLUMNS)} columns over every split: per-column {med['rows_old'] * 1e3:.1f} ms, batched "
          f"{med['rows_new'] * 1e3:.1f} ms, {med['rows_old'] / med['rows_new']:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
