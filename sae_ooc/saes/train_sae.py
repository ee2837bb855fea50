"""Stage `train-sae`: one SAELens SAE per configured hook, trained on the on-disk activation cache.

RUN/saes/<hook_name>/ holds each SAE in SAELens's inference format (`sae_lens.SAE.load_from_disk` loads it
directly) with metrics.json (training-time reconstruction metrics on the held-out rows), train_log.jsonl and
curves.png/.svg; RUN/saes/heldout_rows.safetensors the rows held out of training (whole prefixes per position,
`sae_ooc.activations.cache.heldout_mask`); with a sweep configured,
RUN/saes/sweep/<hook_name>/<param>_<value>/ one SAE per value and the Pareto plots. One SAE is trained by
`sae_ooc.saes.trainer.train_sae`; `train_hooks` (shared with the standalone train_sae.py) loops over hooks.

An interrupted run resumes: hooks it finished stay (RUN/saes/.progress.json names them with their settings hash,
under the stage's fingerprint), the hook it was training continues from its last checkpoint. A run that does
not continue an interrupted one (or `force`) starts from an empty RUN/saes/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sae_ooc.activations.cache import ActivationCache, heldout_mask, open_cache
from sae_ooc.config import SaeConfig
from sae_ooc.io import read_json, save_tensors, write_json
from sae_ooc.models.hooked import model_hash
from sae_ooc.saes.dead import DEAD_ON
from sae_ooc.saes.metrics_result import SaeTrainMetrics
from sae_ooc.saes.store import eval_rows, sae_dir
from sae_ooc.saes.sweep import sweep_spec, train_sweep
from sae_ooc.saes.task_metrics import task_evaluator
from sae_ooc.saes.trainer import Reuse, finished_metrics, settings_hash, train_sae

PROGRESS_FILE = ".progress.json"  # hidden: bookkeeping of an unfinished run, not an output of the stage
SWEEP_DIR = "sweep"


def configured_hooks(cache: ActivationCache, p: SaeConfig) -> list[str]:
    hooks = list(p.hooks) or cache.hooks
    for h in hooks:
        cache.check_hook(h)
    return hooks


def summary_line(hook_name: str, m: SaeTrainMetrics, out_dir: Path) -> str:
    r = m.reconstruction
    return (f"{hook_name}: EV {r.explained_variance:.4f}  FVU {r.fvu:.4f}  L0 {r.l0:.2f}  "
            f"dead {r.n_dead}/{m.d_sae} ({r.dead_fraction:.1%}, {DEAD_ON})  "
            f"dense {r.dense_fraction:.1%}  ({m.training.tokens_per_s:.0f} tok/s) -> {out_dir}")


def train_hooks(cache: ActivationCache, dirs: dict[str, Path], p: SaeConfig, device: str = "cpu", reuse: Reuse | None = None,
                stop_after_steps: int | None = None, wandb: bool = False) -> dict[str, SaeTrainMetrics] | None:
    """One SAE per hook into `dirs[hook]`, keeping those `reuse` allows; {hook: metrics}, or None when stopped early."""
    reuse = reuse or Reuse()
    out = {}
    for h, d in dirs.items():
        settings = settings_hash(p, h, cache)
        m = reuse.get(d, settings)
        if m is not None:
            print(f"{h}: kept {d} (trained with the same settings)")
        else:
            m = train_sae(cache, h, d, p, device=device, resume=reuse.resume, stop_after_steps=stop_after_steps, wandb=wandb)
            if m is None:
                return None
            reuse.add(d, settings)
            print(summary_line(h, m, d))
        out[h] = m
    return out


class StageProgress(Reuse):
    """The SAEs an interrupted run of train-sae with the same fingerprint finished (RUN/saes/.progress.json).

    Only they are kept, and checkpoints are resumed only when continuing such a run; any other run starts from
    an empty RUN/saes/ (so a rerun the pipeline asks for recomputes everything, as a stage rerun must).
    """

    def __init__(self, root: Path, fingerprint: str | None, force: bool = False):
        self.root, self.path, self.fingerprint = Path(root), Path(root) / PROGRESS_FILE, fingerprint
        rec = None
        if not force and self.path.is_file():
            try:
                rec = read_json(self.path)
            except ValueError:
                rec = None
        self.resume = isinstance(rec, dict) and rec.get("fingerprint") == fingerprint
        self.done: dict[str, str] = dict(rec.get("done", {})) if self.resume else {}

    def start(self) -> None:
        if not self.resume and self.root.exists():
            shutil.rmtree(self.root)
        self._write()

    def _write(self) -> None:
        write_json(self.path, {"fingerprint": self.fingerprint, "done": self.done})

    def _key(self, out_dir: Path) -> str:
        return Path(out_dir).relative_to(self.root).as_posix()

    def get(self, out_dir: Path, settings: str) -> SaeTrainMetrics | None:
        return finished_metrics(out_dir, settings) if self.done.get(self._key(out_dir)) == settings else None

    def add(self, out_dir: Path, settings: str) -> None:
        self.done[self._key(out_dir)] = settings
        self._write()

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def run_train_sae(run, force: bool = False, stop_after_steps: int | None = None, wandb: bool = False) -> dict | None:
    """Stage `train-sae`: one SAE per configured hook into RUN/saes/<hook_name>/ (+ the sweep, if configured).

    `stop_after_steps` stops the hook in training after that many steps as if the process were killed (returns
    None; rerunning resumes). `wandb` also logs to Weights & Biases.
    """
    p: SaeConfig = run.cfg.sae
    root = run.saes_dir
    cache = open_cache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    hooks = configured_hooks(cache, p)
    # every shard is read (and its checksum checked) before anything is trained or deleted: a truncated shard is a
    # one-line error now, not after the first hook has trained for a while
    cache.verify(hooks)
    progress = StageProgress(root, run.current_fingerprint, force)
    progress.start()
    held = heldout_mask(cache.tokens(), p.eval_fraction, p.seed)
    save_tensors(eval_rows(root), {"rows": held.nonzero().squeeze(1)})
    metrics = train_hooks(cache, {h: sae_dir(root, h) for h in hooks}, p, device=run.device, reuse=progress,
                          stop_after_steps=stop_after_steps, wandb=wandb)
    if metrics is None:
        return None
    if sweep_spec(p) is not None:
        task_eval = task_evaluator(run.model_dir, run.data_dir, device=run.device)
        for h in hooks:
            train_sweep(cache, h, root / SWEEP_DIR, p, device=run.device, task_eval=task_eval, reuse=progress)
    progress.finish()
    rec = {h: m.reconstruction for h, m in metrics.items()}
    return {"hooks": hooks, "explained_variance": {h: r.explained_variance for h, r in rec.items()},
            "l0": {h: r.l0 for h, r in rec.items()}}
