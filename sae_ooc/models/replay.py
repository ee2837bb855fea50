"""Checkpoints the train stage did not save, recomputed exactly: where accuracy rises, and replaying training to it.

Training is a pure function of the step (batches from (seed, step), the learning rate from the step), and every
saved checkpoint holds the optimizer state, so continuing from the nearest saved checkpoint before a step gives
the model that an uninterrupted run had at that step (tests check it bit for bit against a saved checkpoint).
`sae-ooc dynamics` uses this to add checkpoints densely around the moment composition appears.
"""

from __future__ import annotations

import math
from pathlib import Path

from tqdm.auto import tqdm

from sae_ooc.errors import UserError
from sae_ooc.io import load_tensors, read_json
from sae_ooc.models.hooked import save_model
from sae_ooc.models.metrics import EvalRow
from sae_ooc.models.source import initial_model
from sae_ooc.models.train import (
    TRAINER_STATE_FILE,
    BatchSampler,
    _complete,
    load_checkpoint,
    lr_at,
    make_optimizer,
    train_step,
)
from sae_ooc.tasks.data import load_task, split_tensors
from sae_ooc.threads import torch_threads


def accuracy_rise(rows: list[EvalRow], split: str, low: float, high: float) -> dict:
    """Where `split` accuracy rises in the periodic evaluations: from its first value a0 to its best b, `start` is the
    last evaluated step below a0 + low (b - a0) before `end`, the first at or above a0 + high (b - a0); `moment` is
    the first at or above half way. `found` is False when the accuracy never rises by 0.05."""
    pts = [(r.step, a) for r in rows if isinstance(a := r.acc(split), float) and math.isfinite(a)]  # (metrics.jsonl's rows)
    if not pts:
        return {"split": split, "found": False}
    a0, best = pts[0][1], max(a for _, a in pts)
    out = {"split": split, "first_acc": a0, "best_acc": best, "found": best - a0 >= 0.05}
    if not out["found"]:
        return out
    th = {k: a0 + f * (best - a0) for k, f in (("low", low), ("mid", 0.5), ("high", high))}
    end = next(s for s, a in pts if a >= th["high"])
    out["moment"] = next(s for s, a in pts if a >= th["mid"])
    out["end"] = end
    out["start"] = max((s for s, a in pts if s < end and a < th["low"]), default=pts[0][0])
    return out


def saved_checkpoints(model_dir: Path) -> dict[int, Path]:
    """{step: RUN/model/checkpoints/step_N} for every complete checkpoint the train stage saved."""
    root = Path(model_dir) / "checkpoints"
    out = {}
    for d in sorted(root.glob("step_*")) if root.is_dir() else []:
        if _complete(d):
            out[int(read_json(d / TRAINER_STATE_FILE)["step"])] = d
    return out


def dense_steps(start: int, end: int, n: int, have: set[int]) -> list[int]:
    """`n` steps evenly spread over (start, end], without those already in `have`."""
    if n <= 0 or end <= start:
        return []
    steps = {round(start + (end - start) * (i + 1) / n) for i in range(n)}
    return sorted(s for s in steps if s not in have and s > 0)


def fill_gaps(steps: list[int], start: int, end: int, ratio: float) -> list[int]:
    """Steps to add inside [start, end] so that no two consecutive of `steps` (plus these) there are more than `ratio`
    apart (geometrically spaced between each such pair); none when ratio is 0."""
    if ratio <= 0 or end <= start:
        return []
    have = sorted(set(steps))
    out: set[int] = set()
    for a, b in zip(have, have[1:]):
        if b <= start or a >= end or b <= max(a, 1) * ratio:
            continue
        lo = max(a, 1)
        k = math.ceil(math.log(b / lo) / math.log(ratio)) - 1
        out.update(round(lo * (b / lo) ** ((i + 1) / (k + 1))) for i in range(k))
    return sorted(s for s in out if start <= s <= end and s not in have and s > 0)


def _readable(step_dir: Path) -> bool:
    """A replayed checkpoint kept from an earlier run: present and not truncated (else it is replayed again)."""
    from safetensors import SafetensorError

    try:
        load_tensors(step_dir / "model.safetensors")
        read_json(step_dir / "config.json")
    except (OSError, ValueError, SafetensorError):  # missing, garbled JSON, or a truncated or garbled weights file
        return False
    return True


def replay_checkpoints(run, steps: list[int], out_root: Path) -> dict[int, Path]:
    """The model at each of `steps`, saved as out_root/step_N (model.safetensors + config.json), by continuing
    training from the nearest saved checkpoint at or before it. Steps already replayed there are kept."""
    saved = saved_checkpoints(run.model_dir)
    if not saved:
        raise UserError(f"no saved checkpoints in {run.model_dir / 'checkpoints'}; rerun `sae-ooc train --force --run {run.root}` "
                        f"with train.n_checkpoints > 0")
    todo = sorted(s for s in steps if not _readable(out_root / f"step_{s}"))
    out = {s: out_root / f"step_{s}" for s in steps}
    if not todo:
        return out
    tc = run.cfg.train
    ds, vocab = load_task(run.data_dir)
    train = split_tensors(ds["train"], vocab)
    sampler = BatchSampler(len(train), tc.batch_size, tc.seed)
    model = initial_model(run, vocab, device=run.device)  # its weights are replaced by a checkpoint's below
    opt = make_optimizer(model, tc)
    model.train()
    cur = None
    n_steps, at = 0, None  # the steps the loop below will take
    for t in todo:
        b = max(s for s in saved if s <= t)
        n_steps += t - (b if at is None or b > at else at)
        at = t
    with torch_threads(tc.threads), tqdm(total=n_steps, desc="dynamics: replaying training", unit="step", dynamic_ncols=True) as bar:
        for target in todo:
            base = max(s for s in saved if s <= target)
            if cur is None or base > cur:  # restart from a saved checkpoint closer than where the replay stands
                cur = int(load_checkpoint(saved[base], model, opt, run.device)["step"])
            while cur < target:
                idx = sampler.indices(cur)
                batch = train if idx is None else train.subset(idx)
                train_step(model, opt, batch.tokens.to(run.device), batch.answer_pos.to(run.device), batch.targets.to(run.device),
                           lr_at(tc, cur), tc.grad_clip)
                cur += 1
                bar.update(1)
            save_model(model, out[target])
    return out
