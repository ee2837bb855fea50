"""Stage `train-sae`: one SAELens SAE per hook, trained on the on-disk activation cache.

Training is SAELens's own `SAETrainer` + `SAETrainerConfig` with its training SAE classes (standard,
topk, batchtopk, jumprelu, gated, matryoshka_batchtopk); what we add is the data provider
(`CacheBatches`: seeded shuffled batches streamed from the cache shards), JSONL metrics, resumable
checkpoints and the final save in SAELens's inference format, so `sae_lens.SAE.load_from_disk`
loads RUN/saes/<hook_name>/ directly.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from sae_ooc.activations.cache import ActivationCache, heldout_mask, open_cache
from sae_ooc.config import SaeConfig
from sae_ooc.errors import UserError
from sae_ooc.io import (
    append_jsonl,
    read_json,
    read_jsonl,
    save_tensors,
    sha256_json,
    write_json,
)
from sae_ooc.saes.store import METRICS_FILE, SAE_CFG_FILE, SAE_WEIGHTS_FILE, sae_dir

STAGE = "train-sae"
LOG_FILE = "train_log.jsonl"
CKPT_DIR = "checkpoints"
DATA_STATE = "data_state.json"  # written last into a checkpoint: its presence marks the checkpoint complete
SWEEP_PARAMS = {"sweep_k": "k", "sweep_l1_coefficient": "l1_coefficient", "sweep_d_sae": "d_sae"}


# data ------------------------------------------------------------------------------------------
class CacheBatches:
    """Infinite iterator of [batch_size, d_in] float32 batches from one hook of the cache.

    The stream is a pure function of (seed, rows): each epoch visits the shards in a seeded random order,
    `buffer_shards` at a time; the rows of those shards are pooled and permuted, and batches are
    consecutive slices of the concatenated pools. Memory is at most two pools. Starting at sample
    `start` (from a checkpoint) gives exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, cache: ActivationCache, hook_name: str, rows_mask: torch.Tensor, batch_size: int, seed: int,
                 buffer_shards: int = 4, start: int = 0):
        cache.check_hook(hook_name)
        self.cache, self.hook, self.batch_size, self.seed = cache, hook_name, batch_size, seed
        self.buffer_shards = max(1, buffer_shards)
        self.local_rows = []
        for i in range(cache.n_shards):
            a, b = cache.shard_bounds(i)
            self.local_rows.append(rows_mask[a:b].nonzero().squeeze(1))
        self.n_rows = sum(len(r) for r in self.local_rows)
        if self.n_rows == 0:
            raise UserError(f"no training tokens for {hook_name} in {cache.root} (all held out?); lower sae.eval_fraction")
        self.consumed = start
        self._kept: dict[int, torch.Tensor] = {}
        self._groups = self._group_iter()
        self._pool, self._ptr = torch.empty(0, cache.d_model), 0
        skip = start
        while True:  # skip whole pools by their sizes without loading them
            group = next(self._groups)
            size = sum(len(self.local_rows[i]) for i in group[1])
            if skip < size:
                self._pool, self._ptr = self._load(group), skip
                break
            skip -= size

    def _group_iter(self):
        epoch = 0
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.cache.n_shards, generator=g).tolist()
            for j in range(0, len(order), self.buffer_shards):
                shards = [i for i in order[j : j + self.buffer_shards] if len(self.local_rows[i])]
                if shards:
                    yield (epoch, j), shards
            epoch += 1

    def _shard(self, i: int) -> torch.Tensor:
        if i in self._kept:
            return self._kept[i]
        x = self.cache.load_shard(self.hook, i)[self.local_rows[i]].float()
        if self.cache.n_shards <= self.buffer_shards:
            self._kept[i] = x  # the whole hook fits in one pool: keep it instead of rereading every epoch
        return x

    def _load(self, group) -> torch.Tensor:
        (epoch, j), shards = group
        pool = torch.cat([self._shard(i) for i in shards])
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 7919 + j)
        return pool[torch.randperm(len(pool), generator=g)]

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        parts, need = [], self.batch_size
        while need:
            if self._ptr >= len(self._pool):
                self._pool, self._ptr = self._load(next(self._groups)), 0
            take = min(need, len(self._pool) - self._ptr)
            parts.append(self._pool[self._ptr : self._ptr + take])
            self._ptr += take
            need -= take
        self.consumed += self.batch_size
        return parts[0] if len(parts) == 1 else torch.cat(parts)


# SAELens configs -------------------------------------------------------------------------------
def resolved_d_sae(p: SaeConfig, d_in: int, hook_name: str | None = None) -> int:
    if hook_name is not None and hook_name in p.d_sae_by_hook:
        return p.d_sae_by_hook[hook_name]
    return p.d_sae if p.d_sae > 0 else p.expansion_factor * d_in


def resolved_k(p: SaeConfig, hook_name: str | None = None) -> int:
    return p.k_by_hook.get(hook_name, p.k)


def training_sae_config(p: SaeConfig, d_in: int, hook_name: str, model_hash: str | None, device: str = "cpu"):
    """The SAELens training config for the chosen architecture."""
    import sae_lens

    d_sae = resolved_d_sae(p, d_in, hook_name)
    k = min(resolved_k(p, hook_name), d_sae)
    common = dict(d_in=d_in, d_sae=d_sae, dtype="float32", device=device, normalize_activations=p.normalize_activations)
    arch = p.architecture
    topk_extra = dict(aux_loss_coefficient=p.aux_loss_coefficient, rescale_acts_by_decoder_norm=p.rescale_acts_by_decoder_norm)
    if arch == "standard":
        cfg = sae_lens.StandardTrainingSAEConfig(**common, l1_coefficient=p.l1_coefficient)
    elif arch == "gated":
        cfg = sae_lens.GatedTrainingSAEConfig(**common, l1_coefficient=p.l1_coefficient)
    elif arch == "jumprelu":
        cfg = sae_lens.JumpReLUTrainingSAEConfig(**common, l0_coefficient=p.l0_coefficient)
    elif arch == "topk":
        cfg = sae_lens.TopKTrainingSAEConfig(**common, k=k, **topk_extra)
    elif arch == "batchtopk":
        cfg = sae_lens.BatchTopKTrainingSAEConfig(**common, k=k, **topk_extra)
    elif arch == "matryoshka_batchtopk":
        widths = sorted(set(w for w in p.matryoshka_widths if w < d_sae)) or sorted(set(w for w in (d_sae // 8, d_sae // 4, d_sae // 2) if w > 0))
        cfg = sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(**common, k=k, **topk_extra, matryoshka_widths=widths + [d_sae])
    else:
        raise UserError(f"unknown sae.architecture '{arch}'; valid: standard, topk, batchtopk, jumprelu, gated, matryoshka_batchtopk")
    cfg.metadata.hook_name = hook_name
    cfg.metadata.model_name = f"sae_ooc:{model_hash[:12]}" if model_hash else "sae_ooc"
    cfg.metadata.context_size = 3
    cfg.metadata.prepend_bos = False
    return cfg


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
    from sae_lens.training.sae_trainer import SAETrainer

    class _LoggingTrainer(SAETrainer):
        """SAETrainer that also appends a JSONL line of its own train-step metrics every `log_every` steps."""

        log_path: Path
        log_every: int
        total_steps: int
        stop_at: int | None = None

        def step(self, batch):
            if self.stop_at is not None and self.n_training_steps >= self.stop_at:
                raise _Stopped()
            out = super().step(batch)
            done = self.n_training_steps + 1  # SAETrainer counts the step after this call returns
            if done % self.log_every == 0 or done == self.total_steps:
                d = self.build_train_step_log_dict(out, n_training_samples=self.n_training_samples)
                rec = {"step": done, "tokens": self.n_training_samples, "dead_fraction": float(self.dead_neurons.float().mean())}
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


def settings_hash(p: SaeConfig, hook_name: str, cache: ActivationCache, extra: dict | None = None) -> str:
    return sha256_json({"sae": dataclasses.asdict(p), "hook": hook_name, "model_hash": cache.model_hash, "n_tokens": cache.n_tokens,
                        "d_model": cache.d_model, "extra": extra or {}})


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
) -> dict | None:
    """Train one SAE on `hook_name` of `cache` into `out_dir`; returns the metrics written to metrics.json.

    `rows_mask` selects the training rows (default: all but the held-out sequences, sae.eval_fraction);
    `eval_rows` the rows the reconstruction metrics are measured on (default: the held-out ones).
    `stop_after_steps` stops as if killed after that many steps (returns None); rerunning resumes from the
    last checkpoint.
    """
    from sae_lens import SAE
    from sae_lens.registry import get_sae_training_class

    from sae_ooc.saes.evaluate import check_d_in, finite, reconstruction_metrics
    from sae_ooc.threads import torch_threads
    from sae_ooc.viz.sae_plots import plot_training_curves

    cache.check_hook(hook_name)
    out_dir = Path(out_dir)
    if rows_mask is None or eval_rows is None:
        held = heldout_mask(cache.tokens(), p.eval_fraction, p.seed)
        rows_mask = ~held if rows_mask is None else rows_mask
        eval_rows = held.nonzero().squeeze(1) if eval_rows is None else eval_rows
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
    sae_cfg = training_sae_config(p, cache.d_model, hook_name, cache.model_hash, device)
    sae_cls = get_sae_training_class(p.architecture)[0]
    sae = sae_cls(sae_cfg)
    tcfg = trainer_config(p, ckpt_root, device, wandb=wandb, run_name=f"{hook_name}-{p.architecture}")
    steps = tcfg.total_training_steps

    start = 0
    if resume_from is not None:
        sae.load_weights_from_checkpoint(resume_from)
        start = int(read_json(resume_from / DATA_STATE)["consumed"])
    provider = CacheBatches(cache, hook_name, rows_mask, p.batch_size, p.seed, start=start)

    trainer = _logging_trainer_class()(cfg=tcfg, sae=sae, data_provider=provider, save_checkpoint_fn=None)
    trainer.log_path, trainer.log_every, trainer.total_steps = log_path, p.log_every, steps
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
                  "n_train_tokens": int(rows_mask.sum()), "n_eval_tokens": len(eval_rows)},
        "training": {
            "steps": steps, "tokens": steps * p.batch_size, "seconds": seconds, "tokens_per_s": steps * p.batch_size / max(seconds, 1e-9),
            "final_log": log[-1] if log else {},
            "sae_lens_window_l0": finite(getattr(trainer.sae.cfg.metadata, "l0", None)),
            "sae_lens_num_dead_features": getattr(trainer.sae.cfg.metadata, "num_dead_features", None),
        },
        "reconstruction": {k: finite(v) for k, v in recon.items()},
    }
    write_json(out_dir / METRICS_FILE, metrics)
    if log:
        plot_training_curves(log, out_dir / "curves", title=f"{hook_name} ({p.architecture}, d_sae {metrics['d_sae']})")
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
        (tmp / name).replace(out_dir / name)
    shutil.rmtree(tmp)


# sweeps ----------------------------------------------------------------------------------------
def sweep_spec(p: SaeConfig) -> tuple[str, list] | None:
    for key, param in SWEEP_PARAMS.items():
        values = getattr(p, key)
        if values:
            if param == "l1_coefficient" and p.architecture == "jumprelu":
                param = "l0_coefficient"
            return param, list(values)
    return None


def sweep_point_dir(root: Path, hook_name: str, param: str, value) -> Path:
    return Path(root) / hook_name / f"{param}_{value}"


def pareto_stem(root: Path, hook_name: str) -> Path:
    """Figure stem for a hook's Pareto plot (dots replaced: save_figure adds the extension with with_suffix)."""
    return Path(root) / f"pareto_{hook_name.replace('.', '_')}"


def train_sweep(cache: ActivationCache, hook_name: str, root: str | Path, p: SaeConfig, device: str = "cpu",
                task_eval=None, dense_threshold: float = 0.1) -> list[dict]:
    """One SAE per value of the configured sweep list; returns a point (L0, FVU, task recovered) per SAE.

    `task_eval(sae) -> dict` (optional) adds the spliced-in task metrics of sae_ooc.saes.evaluate.
    """
    from sae_lens import SAE

    from sae_ooc.viz.sae_plots import plot_pareto

    spec = sweep_spec(p)
    if spec is None:
        return []
    param, values = spec
    points = []
    for v in values:
        q = dataclasses.replace(p, sweep_k=[], sweep_l1_coefficient=[], sweep_d_sae=[], **{param: v})
        if param == "d_sae":
            q = dataclasses.replace(q, d_sae_by_hook={})  # the swept width wins over a per-hook one
        if param == "k":
            q = dataclasses.replace(q, k_by_hook={})
        out = sweep_point_dir(root, hook_name, param, v)
        m_path = out / METRICS_FILE
        m = read_json(m_path) if m_path.exists() else None
        if m is None or m.get("settings") != settings_hash(q, hook_name, cache):
            m = train_sae(cache, hook_name, out, q, device=device, dense_threshold=dense_threshold)
        point = {"param": param, "value": v, "l0": m["reconstruction"]["l0"], "fvu": m["reconstruction"]["fvu"],
                 "explained_variance": m["reconstruction"]["explained_variance"], "dead_fraction": m["reconstruction"]["dead_fraction"]}
        if task_eval is not None:
            if "task" not in m:
                m["task"] = task_eval(SAE.load_from_disk(out, device=device))
                write_json(m_path, m)
            point["loss_recovered"] = m["task"].get("loss_recovered")
            point["test_id_acc"] = m["task"].get("splits", {}).get("test_id", {}).get("acc_sae")
        points.append(point)
    write_json(Path(root) / hook_name / "sweep.json", points)
    plot_pareto(points, pareto_stem(root, hook_name), title=f"{hook_name}: sweep over {param}")
    return points


# the stage -------------------------------------------------------------------------------------
def configured_hooks(cache: ActivationCache, p: SaeConfig) -> list[str]:
    hooks = list(p.hooks) or cache.hooks
    for h in hooks:
        cache.check_hook(h)
    return hooks


def run_train_sae(run, force: bool = False, stop_after_steps: int | None = None, wandb: bool = False) -> bool:
    """Stage `train-sae`: one SAE per configured hook into RUN/saes/<hook_name>/ (+ the sweep, if configured)."""
    from sae_ooc.models.hooked import model_hash

    fp = run.stage_fingerprint(("sae",), ("harvest",))
    root = run.saes_dir
    p: SaeConfig = run.cfg.sae
    cache = open_cache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    hooks = configured_hooks(cache, p)
    if not force and run.is_done(STAGE, fp) and all((sae_dir(root, h) / METRICS_FILE).exists() for h in hooks):
        return False
    device = getattr(run, "device", "cpu")
    held = heldout_mask(cache.tokens(), p.eval_fraction, p.seed)
    save_tensors(root / "heldout_rows.safetensors", {"rows": held.nonzero().squeeze(1)})
    summary = {}
    for h in hooks:
        out = sae_dir(root, h)
        m_path = out / METRICS_FILE
        if not force and m_path.exists() and read_json(m_path).get("settings") == settings_hash(p, h, cache):
            summary[h] = read_json(m_path)["reconstruction"]
            continue  # this hook finished before an interruption
        m = train_sae(cache, h, out, p, device=device, resume=not force, stop_after_steps=stop_after_steps, wandb=wandb)
        if m is None:
            return True
        summary[h] = m["reconstruction"]
        r = m["reconstruction"]
        print(f"train-sae: {h}: EV {r['explained_variance']:.3f}  L0 {r['l0']:.1f}  dead {r['dead_fraction']:.1%}  "
              f"({m['training']['tokens_per_s']:.0f} tok/s)")
    if sweep_spec(p) is not None:
        from sae_ooc.saes.evaluate import TaskEvaluator

        te = TaskEvaluator.from_run(run, device=device)
        for h in hooks:
            train_sweep(cache, h, root / "sweep", p, device=device, task_eval=lambda sae: te.evaluate(sae, splits=("test_id",)))
    run.mark_done(STAGE, fp, hooks=hooks, explained_variance={h: s["explained_variance"] for h, s in summary.items()},
                  l0={h: s["l0"] for h, s in summary.items()})
    return True
