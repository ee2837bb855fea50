"""Stage `train`: train the toy HookedTransformer from scratch, or fine-tune a pretrained checkpoint, on RUN/data.

Where the starting model comes from (`model.source`) and which weights are trained (`train.trainable`) is
`models/source.py`; everything below is the same for both sources.

The loss is cross-entropy at the answer position only. Every `train.eval_every` steps each split is
evaluated (a fixed subsample), a line goes to RUN/model/metrics.jsonl and a rolling checkpoint to
RUN/model/checkpoints/latest/. Early stopping reads valid_id (STOP_SPLIT) and atomic_test, never test_id, so
the reported test_id accuracy is not selected on. Batches are a pure function of (seed, step) and the learning
rate a pure function of the step, so a run resumed from a checkpoint ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sae_ooc.config import STOP_SPLITS, TrainConfig
from sae_ooc.errors import UserError
from sae_ooc.io import (
    append_jsonl,
    load_tensors,
    read_json,
    read_jsonl,
    save_tensors,
    write_json,
    write_text,
)
from sae_ooc.models.evaluate import answer_logits, answer_token_logits, evaluate_splits
from sae_ooc.models.hooked import CONFIG_FILE, MODEL_FILE, save_model
from sae_ooc.models.metrics import THRESHOLDS, TrainMetrics
from sae_ooc.models.source import initial_model, source_info, trainable_parameters
from sae_ooc.tasks.data import (
    SPLITS,
    load_task,
    majority_rate,
    split_tensors,
)
from sae_ooc.threads import torch_threads
from sae_ooc.viz.finetune_plots import plot_finetune
from sae_ooc.viz.train_plots import plot_training

METRICS_FILE = "metrics.jsonl"
FINAL_METRICS_FILE = TrainMetrics.FILE
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
TRAINER_STATE_FILE = "trainer_state.json"
LATEST = "latest"
STOP_SPLIT = "valid_id"  # the split early stopping reads (recorded in final_metrics.json as stop_split)


# evaluation ---------------------------------------------------------------------------------------
# schedules --------------------------------------------------------------------------------------
def lr_at(tc: TrainConfig, step: int) -> float:
    """Learning rate for the update that takes the model from `step` to `step + 1`."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    span = max(tc.steps - tc.warmup_steps, 1)
    frac = min((step - tc.warmup_steps) / span, 1.0)
    if tc.lr_schedule == "cosine":
        return tc.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    return tc.lr * (1.0 - frac)  # linear


def checkpoint_steps(total: int, n: int) -> list[int]:
    """Log-spaced steps in [1, total] (n of them at most, fewer after rounding), plus `total`."""
    if n <= 0:
        return [total]
    steps = np.unique(np.round(np.logspace(0, math.log10(max(total, 1)), n)).astype(int)).tolist()
    return sorted(set(s for s in steps if 1 <= s <= total) | {total})


class BatchSampler:
    """Batch indices as a pure function of (seed, step): epoch-wise shuffles, each seeded by (seed, epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.seed = n, seed
        self.batch_size = n if batch_size <= 0 else batch_size
        self.full = batch_size <= 0
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor | None:
        """Indices for update `step` (0-based); None means the whole split."""
        if self.full:
            return None
        start = step * self.batch_size
        flat = torch.arange(start, start + self.batch_size)
        epochs, pos = flat // self.n, flat % self.n
        if int(epochs[0]) == int(epochs[-1]):
            return self._perm(int(epochs[0]))[pos]
        return torch.cat([self._perm(int(e))[pos[epochs == e]] for e in torch.unique(epochs).tolist()])


# one step --------------------------------------------------------------------------------------
def train_step(model, opt, tokens, answer_pos, answer, lr: float, grad_clip: float = 0.0) -> torch.Tensor:
    """One AdamW update on a batch; returns the (detached) loss before the update. `answer` is [n] answer tokens,
    or [n, A] token ids (-1 padded) of multi-token answers: then the loss is the mean cross-entropy per answer token."""
    for group in opt.param_groups:
        group["lr"] = lr
    if answer.dim() == 1:
        loss = F.cross_entropy(answer_logits(model, tokens, answer_pos), answer)
    else:
        lg = answer_token_logits(model(tokens, return_type="logits"), answer_pos, answer.shape[1])
        loss = F.cross_entropy(lg.flatten(0, 1), answer.flatten(), ignore_index=-1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach()


def make_optimizer(model, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the parameters `train.trainable` leaves trainable (it freezes the others in place)."""
    return torch.optim.AdamW(trainable_parameters(model, tc.trainable), lr=tc.lr, betas=(tc.beta1, tc.beta2),
                             weight_decay=tc.weight_decay)


# optimizer state in safetensors + JSON -----------------------------------------------------------
def flatten_optimizer_state(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW's state dict as tensors (`state.<param>.<key>`) plus a JSON-able rest (param_groups, scalars)."""
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = val
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = val
    for name, val in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# checkpoints ------------------------------------------------------------------------------------
def _replace_dir(tmp: Path, final: Path) -> None:
    """Put a fully written directory under its final name; a crash leaves the old or the new one."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(out_dir: Path, model, opt, state: dict) -> Path:
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model, tmp)
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    save_tensors(tmp / OPTIMIZER_FILE, tensors)
    write_json(tmp / OPTIMIZER_JSON, meta)
    write_json(tmp / TRAINER_STATE_FILE, state)  # last: its presence marks a complete checkpoint
    _replace_dir(tmp, out_dir)
    return out_dir


def _complete(ckpt: Path) -> bool:
    return all((ckpt / f).exists() for f in (MODEL_FILE, CONFIG_FILE, OPTIMIZER_FILE, OPTIMIZER_JSON, TRAINER_STATE_FILE))


def find_resume_checkpoint(ckpt_root: Path, fingerprint: str) -> Path | None:
    """The furthest complete checkpoint written by a run with this exact fingerprint."""
    best, best_step = None, -1
    if not ckpt_root.exists():
        return None
    for d in ckpt_root.iterdir():
        if not d.is_dir() or d.name.endswith(".tmp") or not _complete(d):
            continue
        try:
            st = read_json(d / TRAINER_STATE_FILE)
        except ValueError:
            continue
        if st.get("fingerprint") == fingerprint and int(st["step"]) > best_step:
            best, best_step = d, int(st["step"])
    return best


def load_checkpoint(ckpt: Path, model, opt, device: str) -> dict:
    model.load_state_dict(load_tensors(ckpt / MODEL_FILE, device=device))
    opt.load_state_dict(unflatten_optimizer_state(load_tensors(ckpt / OPTIMIZER_FILE, device=device), read_json(ckpt / OPTIMIZER_JSON)))
    return read_json(ckpt / TRAINER_STATE_FILE)


def write_jsonl(path: Path, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


# the stage ----------------------------------------------------------------------------------------
@dataclass
class _Progress:
    step: int = 0
    elapsed: float = 0.0
    stopped_early: bool = False


def _first_reach(records: list[dict], key: str, threshold: float) -> tuple[int | None, float | None]:
    for r in records:
        if r.get(key, float("nan")) >= threshold:
            return r["step"], r["elapsed_s"] / 60.0
    return None, None


def _should_stop(tc: TrainConfig, metrics: dict) -> bool:
    if tc.stop_on != "valid_id":  # a fine-tuning run: stop once the facts it teaches are learned
        return metrics[f"{STOP_SPLITS[tc.stop_on]}_acc"] >= tc.stop_at_atomic
    if tc.stop_at_valid_id <= 0:
        return False
    return metrics[f"{STOP_SPLIT}_acc"] >= tc.stop_at_valid_id and metrics["atomic_test_acc"] >= tc.stop_at_atomic


def run_train(run, force: bool = False, stop_after_steps: int | None = None) -> dict | None:
    """Stage `train`: the model, its checkpoints, metrics and accuracy figure into RUN/model/.

    Resumes from the furthest checkpoint written under the same fingerprint unless `force`. `stop_after_steps`
    stops after that many optimizer steps in total as if the process were killed (no extra checkpoint; rerunning
    resumes from the last one) — for tests of resuming; it returns None then.
    """
    fp = run.current_fingerprint or "unrecorded"
    with torch_threads(run.cfg.train.threads):
        return _train(run, fp, force, stop_after_steps)


def _train(run, fp: str, force: bool, stop_after_steps: int | None) -> dict | None:
    model_dir: Path = run.model_dir
    tc: TrainConfig = run.cfg.train
    device = run.device
    ckpt_root = model_dir / "checkpoints"
    metrics_path = model_dir / METRICS_FILE

    ds, vocab = load_task(run.data_dir)
    # every split of the data: a fine-tuning run's own (new_new, pretrain_atomic, ...) are followed through training too
    tensors = {s: split_tensors(ds[s], vocab) for s in list(SPLITS) + [s for s in ds if s not in SPLITS]}
    train_st = tensors["train"]
    if len(train_st) == 0:
        raise UserError(f"the train split in {run.data_dir} is empty; check the task section of the config and rerun `sae-ooc data --force`")
    dev_train = train_st.to(device)

    model = initial_model(run, vocab, device=device)
    model.train()
    opt = make_optimizer(model, tc)

    resume = None if force else find_resume_checkpoint(ckpt_root, fp)
    prog = _Progress()
    if resume is None:
        if model_dir.exists():
            shutil.rmtree(model_dir)  # outputs of another config or a forced rerun: start clean
        model_dir.mkdir(parents=True)
        records = []
    else:
        st = load_checkpoint(resume, model, opt, device)
        prog = _Progress(int(st["step"]), float(st["elapsed_s"]), bool(st.get("stopped_early", False)))
        records = [r for r in read_jsonl(metrics_path) if r["step"] <= prog.step]
        write_jsonl(metrics_path, records)
        tqdm.write(f"train: resuming from {resume} (step {prog.step})")

    sampler = BatchSampler(len(train_st), tc.batch_size, tc.seed)
    ckpt_at = set(checkpoint_steps(tc.steps, tc.n_checkpoints))
    t0 = time.perf_counter() - prog.elapsed

    def trainer_state() -> dict:
        return {"step": prog.step, "elapsed_s": prog.elapsed, "stopped_early": prog.stopped_early, "fingerprint": fp, "total_steps": tc.steps}

    def do_eval(loss: float | None) -> dict:
        m = evaluate_splits(model, tensors, max_examples=tc.eval_max_examples, device=device)
        prog.elapsed = time.perf_counter() - t0
        rec = {"step": prog.step, "elapsed_s": round(prog.elapsed, 3), "lr": lr_at(tc, max(prog.step - 1, 0)),
               "loss": loss, **m}
        append_jsonl(metrics_path, rec)
        records.append(rec)
        return rec

    if resume is None:
        do_eval(None)
        save_checkpoint(ckpt_root / LATEST, model, opt, trainer_state())
        if tc.n_checkpoints > 0:  # the untrained model: eval-sae's step-0 control (what the initialisation alone gives a probe)
            save_checkpoint(ckpt_root / "step_0", model, opt, trainer_state())

    bar = tqdm(total=tc.steps, initial=prog.step, desc="train", unit="step", dynamic_ncols=True, mininterval=0.5)
    stop_acc = records[-1].get(f"{STOP_SPLIT}_acc", float("nan")) if records else float("nan")
    try:
        while prog.step < tc.steps and not prog.stopped_early:
            if stop_after_steps is not None and prog.step >= stop_after_steps:
                return None
            idx = sampler.indices(prog.step)
            batch = dev_train if idx is None else dev_train.subset(idx.to(device))
            loss_t = train_step(model, opt, batch.tokens, batch.answer_pos, batch.targets, lr_at(tc, prog.step), tc.grad_clip)
            loss = float(loss_t)
            if not math.isfinite(loss):
                last_good = find_resume_checkpoint(ckpt_root, fp)
                raise UserError(
                    f"train: non-finite loss ({loss}) at step {prog.step + 1} (train.lr={tc.lr:g}, train.grad_clip={tc.grad_clip:g}); "
                    f"the last good checkpoint is kept in {last_good}; lower train.lr (e.g. --set train.lr={tc.lr / 10:g}) "
                    f"or set train.grad_clip (e.g. --set train.grad_clip=1.0) and rerun"
                )
            prog.step += 1
            bar.update(1)
            last = prog.step == tc.steps
            if prog.step % tc.eval_every == 0 or last:
                rec = do_eval(loss)
                stop_acc = rec[f"{STOP_SPLIT}_acc"]
                prog.stopped_early = _should_stop(tc, rec) and not last
                save_checkpoint(ckpt_root / LATEST, model, opt, trainer_state())
            if prog.step in ckpt_at or prog.stopped_early:
                prog.elapsed = time.perf_counter() - t0
                save_checkpoint(ckpt_root / f"step_{prog.step}", model, opt, trainer_state())
            if prog.step % 10 == 0 or last:
                bar.set_postfix(loss=f"{loss:.3f}", **{STOP_SPLIT: f"{stop_acc:.3f}"}, refresh=False)
    finally:
        bar.close()

    if not _complete(ckpt_root / f"step_{prog.step}"):  # the final step always has a checkpoint
        save_checkpoint(ckpt_root / f"step_{prog.step}", model, opt, trainer_state())
    save_model(model, model_dir)
    final = _final_metrics(model, tensors, ds, records, prog, tc, device)
    final.save(model_dir)
    plot_training(records, model_dir / "accuracy")
    if "new_new" in tensors:  # a fine-tuning run (tasks/finetune.py): its own curves
        plot_finetune(records, model_dir / "finetune", natural=vocab.layout.render == "natural")
    return {"steps": prog.step, "minutes": final.minutes, "stopped_early": prog.stopped_early, "stop_split": final.stop_split,
            **{f"{s}_acc": final.accuracy[s] for s in SPLITS}, "majority_rate": final.majority_rate, **source_info(run)}


def _final_metrics(model, tensors, ds, records, prog: _Progress, tc: TrainConfig, device: str) -> TrainMetrics:
    full = evaluate_splits(model, tensors, max_examples=None, device=device)
    out = {
        "steps": prog.step,
        "stopped_early": prog.stopped_early,
        "stop_split": STOP_SPLITS[tc.stop_on],
        "minutes": round(prog.elapsed / 60.0, 3),
        "accuracy": {s: full[f"{s}_acc"] for s in tensors},
        "loss": {s: full[f"{s}_loss"] for s in tensors},
        "majority_rate": {s: majority_rate(ds[s]) for s in tensors},
        "n_examples": {s: len(tensors[s]) for s in tensors},
    }
    for split in (STOP_SPLIT, "test_id"):
        for th in THRESHOLDS:
            step, minutes = _first_reach(records, f"{split}_acc", th)
            out[f"{split}_{th}_step"] = step
            out[f"{split}_{th}_minutes"] = None if minutes is None else round(minutes, 3)
    return TrainMetrics.from_json(out)
