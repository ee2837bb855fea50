"""Training one SAELens SAE on one hook of the activation cache: resumable, logged, saved in SAELens's format.

Training is SAELens's own `SAETrainer` + `SAETrainerConfig` with the training SAE classes of
`sae_ooc.saes.architectures`; what we add is the data provider (`sae_ooc.saes.batches.CacheBatches`), JSONL
metrics, resumable checkpoints and the final save in SAELens's inference format, so
`sae_lens.SAE.load_from_disk(out_dir)` loads the result directly.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from sae_ooc.activations.cache import ActivationCache, distinct_rows, heldout_mask
from sae_ooc.config import SaeConfig
from sae_ooc.errors import UserError
from sae_ooc.io import append_jsonl, follow_umask, read_json, read_jsonl, sha256_json, write_json
from sae_ooc.saes.architectures import training_sae
from sae_ooc.saes.batches import CacheBatches
from sae_ooc.saes.metrics_result import SaeTrainMetrics
from sae_ooc.saes.reconstruction import check_d_in, finite, reconstruction_metrics
from sae_ooc.saes.store import METRICS_FILE, SAE_CFG_FILE, SAE_WEIGHTS_FILE
from sae_ooc.threads import torch_threads
from sae_ooc.viz.sae_plots import plot_training_curves

LOG_FILE = "train_log.jsonl"
CKPT_DIR = "checkpoints"
DATA_STATE = "data_state.json"  # written last into a checkpoint: its presence marks the checkpoint complete


def trainer_config(p: SaeConfig, ckpt_path: Path, device: str, wandb: bool = False, run_name: str | None = None):
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    steps = p.training_tokens // p.batch_size
    return SAETrainerConfig(
        total_training_samples=steps * p.batch_size,
        train_batch_size_samples=p.batch_size,
        lr=p.lr,
        lr_end=p.lr,  # the constant schedule decays linearly from lr to 0 over lr_decay_steps
        lr_scheduler_name="constant",
        lr_warm_up_steps=p.lr_warm_up_steps,
        lr_decay_steps=int(p.lr_decay_fraction * steps),
        adam_beta1=0.9,
        adam_beta2=0.999,
        device=device,
        dead_feature_window=p.dead_feature_window,
        feature_sampling_window=max(p.log_every, 200),
        n_checkpoints=p.n_checkpoints,
        checkpoint_path=str(ckpt_path),
        save_final_checkpoint=False,
        # W&B is off unless asked for: SAETrainer logs only through wandb, our JSONL comes from _LoggingTrainer
        logger=LoggingConfig(log_to_wandb=wandb, wandb_project="sae_ooc", run_name=run_name, wandb_log_frequency=p.log_every,
                             log_weights_to_wandb=False),
        n_batches_for_norm_estimate=min(50, max(1, steps)),
    )


class _Stopped(Exception):
    """Raised inside training by `stop_after_steps`, to simulate a killed process in tests."""


def _logging_trainer_class():
    from sae_lens.training import sae_trainer
    from sae_lens.training.sae_trainer import SAETrainer

    class _LoggingTrainer(SAETrainer):
        """SAETrainer that also appends a JSONL line of its own train-step metrics every `log_every` steps."""

        log_path: Path
        hook_name: str
        log_every: int
        total_steps: int
        stop_at: int | None = None

        def fit(self):
            # SAELens makes its bar inside fit() as "Training SAE": name the hook from the start
            orig = sae_trainer.tqdm
            sae_trainer.tqdm = lambda *a, **kw: orig(*a, **{**kw, "desc": f"train-sae {self.hook_name}"})
            try:
                return super().fit()
            finally:
                sae_trainer.tqdm = orig

        def _update_pbar(self, step_output, pbar, update_interval: int = 100):
            # SAELens's bar moves every 100 steps, so it stops short of 100% unless the step count divides by 100:
            # land exactly on the samples trained
            if self.n_training_steps % update_interval and self.n_training_samples < self.cfg.total_training_samples:
                return
            pbar.set_postfix({k: f"{float(torch.as_tensor(v() if callable(v) else v).detach()):.4g}" for k, v in step_output.losses.items()}, refresh=False)
            pbar.update(self.n_training_samples - pbar.n)

        def step(self, batch):
            if self.stop_at is not None and self.n_training_steps >= self.stop_at:
                raise _Stopped()
            out = super().step(batch)
            done = self.n_training_steps + 1  # SAETrainer counts the step after this call returns
            if done % self.log_every == 0 or done == self.total_steps:
                d = self.build_train_step_log_dict(out, n_training_samples=self.n_training_samples)
                # SAELens's own count (not fired in the last sae.dead_feature_window steps, what its AuxK loss revives): a
                # training diagnostic under its own name; "dead" alone is reconstruction.DEAD_ON, measured after training
                rec = {"step": done, "tokens": self.n_training_samples,
                       "dead_fraction_training_window": float(self.dead_neurons.float().mean())}
                for k, v in d.items():
                    if isinstance(v, (int, float)):
                        rec[k.split("/", 1)[-1]] = float(v)
                append_jsonl(self.log_path, rec)
            return out

    return _LoggingTrainer


# checkpoints -----------------------------------------------------------------------------------
def _latest_checkpoint(ckpt_root: Path, settings_hash: str) -> Path | None:
    if not ckpt_root.is_dir():
        return None
    done = []
    for p in ckpt_root.iterdir():
        st = p / DATA_STATE
        if st.exists():
            try:
                s = read_json(st)
            except ValueError:
                continue
            if s.get("settings") == settings_hash:
                done.append((int(s["n_training_samples"]), p))
    return max(done)[1] if done else None


SPLIT = "prefix-per-position/1"  # how the training rows are chosen (heldout_mask): an SAE trained on another split is not reused


def settings_hash(p: SaeConfig, hook_name: str, cache: ActivationCache, extra: dict | None = None) -> str:
    return sha256_json({"sae": dataclasses.asdict(p), "hook": hook_name, "model_hash": cache.model_hash, "n_tokens": cache.n_tokens,
                        "d_model": cache.d_model, "split": SPLIT, "extra": extra or {}})


# training --------------------------------------------------------------------------------------
def train_sae(
    cache: ActivationCache,
    hook_name: str,
    out_dir: str | Path,
    p: SaeConfig,
    device: str = "cpu",
    rows_mask: torch.Tensor | None = None,
    eval_rows: torch.Tensor | None = None,
    wandb: bool = False,
    resume: bool = True,
    stop_after_steps: int | None = None,
    dense_threshold: float = 0.1,
    plot: bool = True,
) -> SaeTrainMetrics | None:
    """Train one SAE on `hook_name` of `cache` into `out_dir`; returns the metrics written to metrics.json.

    `rows_mask` selects the training rows (default: all but the held-out prefixes, sae.eval_fraction of the distinct
    prefixes at each position); `eval_rows` the rows the reconstruction metrics are measured on (default: one row per
    held-out prefix).
    `stop_after_steps` stops as if killed after that many steps (returns None); rerunning resumes from the
    last checkpoint. `plot=False` skips the curves figure (seconds per SAE; `sae-ooc dynamics` trains dozens).
    """
    from sae_lens import SAE

    cache.check_hook(hook_name)
    out_dir = Path(out_dir)
    if rows_mask is None or eval_rows is None:
        held = heldout_mask(cache.tokens(), p.eval_fraction, p.seed)
        rows_mask = ~held if rows_mask is None else rows_mask
        eval_rows = distinct_rows(cache.tokens(), held) if eval_rows is None else eval_rows
    shash = settings_hash(p, hook_name, cache)
    ckpt_root = out_dir / CKPT_DIR
    log_path = out_dir / LOG_FILE

    resume_from = _latest_checkpoint(ckpt_root, shash) if resume else None
    if resume_from is not None:
        ck_cfg = read_json(resume_from / SAE_CFG_FILE)
        if int(ck_cfg["d_in"]) != cache.d_model:
            raise UserError(f"checkpoint {resume_from} has d_in {ck_cfg['d_in']} but {hook_name} in {cache.root} has d_model {cache.d_model}; "
                            f"delete {ckpt_root} or pass the cache it was trained on")
    else:
        if out_dir.exists():
            for name in (CKPT_DIR, LOG_FILE, METRICS_FILE, SAE_CFG_FILE, SAE_WEIGHTS_FILE):
                q = out_dir / name
                shutil.rmtree(q) if q.is_dir() else q.unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(p.seed)  # SAELens initialises weights from the global generator
    sae = training_sae(p, cache.d_model, hook_name, cache.model_hash, device)
    tcfg = trainer_config(p, ckpt_root, device, wandb=wandb, run_name=f"{hook_name}-{p.architecture}")
    steps = tcfg.total_training_steps

    start = 0
    if resume_from is not None:
        sae.load_weights_from_checkpoint(resume_from)
        start = int(read_json(resume_from / DATA_STATE)["consumed"])
    provider = CacheBatches(cache, hook_name, rows_mask, p.batch_size, p.seed, start=start)

    trainer = _logging_trainer_class()(cfg=tcfg, sae=sae, data_provider=provider, save_checkpoint_fn=None)
    trainer.log_path, trainer.log_every, trainer.total_steps, trainer.hook_name = log_path, p.log_every, steps, hook_name
    trainer.stop_at = stop_after_steps
    elapsed0 = 0.0
    if resume_from is not None:
        # SAELens's own checkpoint (trainer_state.pt); its torch.load runs with torch's default weights_only=True
        trainer.load_trainer_state(resume_from)
        # SAETrainer saves its step counter before incrementing it; the sample count is exact
        trainer.n_training_steps = trainer.n_training_samples // p.batch_size
        trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples]
        elapsed0 = float(read_json(resume_from / DATA_STATE).get("elapsed_s", 0.0))
        records = [r for r in read_jsonl(log_path) if r["step"] <= trainer.n_training_steps]
        log_path.write_text("".join(json.dumps(r) + "\n" for r in records))
        print(f"train-sae: {hook_name}: resuming from {resume_from} (step {trainer.n_training_steps}/{steps})")

    t0 = time.perf_counter()

    def save_state(checkpoint_path: Path | None) -> None:
        if checkpoint_path is None:
            return
        write_json(Path(checkpoint_path) / DATA_STATE, {
            "settings": shash, "consumed": provider.consumed, "n_training_samples": trainer.n_training_samples,
            "elapsed_s": elapsed0 + time.perf_counter() - t0,
        })
        for old in ckpt_root.iterdir():  # keep only the newest complete checkpoint
            if old != Path(checkpoint_path) and old.is_dir():
                shutil.rmtree(old)

    trainer.save_checkpoint_fn = save_state
    if wandb:
        import wandb as wb

        wb.init(project="sae_ooc", name=f"{hook_name}-{p.architecture}", config=dataclasses.asdict(p))
    try:
        with torch_threads(p.threads):
            trainer.fit()
    except _Stopped:
        return None
    finally:
        if wandb:
            import wandb as wb

            wb.finish()
    seconds = elapsed0 + time.perf_counter() - t0

    _save_inference(trainer.sae, out_dir)
    final = SAE.load_from_disk(out_dir, device=device)
    check_d_in(final, cache, hook_name, str(out_dir))
    recon = reconstruction_metrics(final, cache, hook_name, eval_rows, dense_threshold=dense_threshold)
    log = read_jsonl(log_path)
    metrics = {
        "hook_name": hook_name,
        "architecture": p.architecture,
        "inference_architecture": final.cfg.architecture(),
        "d_in": cache.d_model,
        "d_sae": int(final.cfg.d_sae),
        "params": dataclasses.asdict(p),
        "settings": shash,
        "cache": {"root": str(cache.root), "model_hash": cache.model_hash, "n_tokens": cache.n_tokens,
                  "n_train_tokens": int(rows_mask.sum()), "n_eval_tokens": len(eval_rows), "split": SPLIT},
        "training": {
            "steps": steps, "tokens": steps * p.batch_size, "seconds": seconds, "tokens_per_s": steps * p.batch_size / max(seconds, 1e-9),
            "final_log": log[-1] if log else {},
            "sae_lens_window_l0": finite(getattr(trainer.sae.cfg.metadata, "l0", None)),
            "sae_lens_num_dead_features": getattr(trainer.sae.cfg.metadata, "num_dead_features", None),
        },
        "reconstruction": recon,
    }
    metrics = SaeTrainMetrics.from_json(metrics)
    metrics.save(out_dir)
    if log and plot:
        plot_training_curves(log, out_dir / "curves", title=f"{hook_name} ({p.architecture}, d_sae {metrics.d_sae})")
    if ckpt_root.exists():
        shutil.rmtree(ckpt_root)  # the final SAE is saved; checkpoints only serve resuming
    return metrics


def _save_inference(sae, out_dir: Path) -> None:
    """SAELens inference format (BatchTopK becomes JumpReLU, ...), files swapped in atomically."""
    tmp = out_dir / ".final.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    sae.save_inference_model(str(tmp))
    for name in (SAE_WEIGHTS_FILE, SAE_CFG_FILE):
        follow_umask(tmp / name).replace(out_dir / name)
    shutil.rmtree(tmp)


def finished_metrics(out_dir: str | Path, settings: str) -> SaeTrainMetrics | None:
    """The metrics.json of a complete SAE in `out_dir` trained with `settings` (a `settings_hash`), else None (an
    unreadable or outdated file included: the SAE is trained again)."""
    out_dir = Path(out_dir)
    if not all((out_dir / name).is_file() for name in (METRICS_FILE, SAE_CFG_FILE, SAE_WEIGHTS_FILE)):
        return None
    try:
        m = SaeTrainMetrics.load(out_dir)
    except UserError:
        return None
    return m if m.settings == settings else None


class Reuse:
    """Which SAEs trained before may stay instead of being retrained, and whether checkpoints may be resumed.

    This default (the standalone script): any complete SAE in its directory trained with the same settings, and
    any checkpoint with the same settings. `sae_ooc.saes.train_sae.StageProgress` narrows it to one run of the stage.
    """

    resume = True

    def get(self, out_dir: Path, settings: str) -> SaeTrainMetrics | None:
        return finished_metrics(out_dir, settings)

    def add(self, out_dir: Path, settings: str) -> None:
        pass
