"""Stage `eval-sae`: how well each SAE reconstructs, how much task skill survives it, what its features mean.

Everything is measured on held-out *prefixes*: train-sae held out, at each position, a share of the distinct token
prefixes that determine the activation there (RUN/saes/heldout_rows.safetensors: every row carrying one), and
each distinct prefix counts once (`sae_ooc.saes.prefixes`). For every SAE in RUN/saes/<hook_name>/ this writes:
explained variance / FVU / MSE / L0 pooled and per position, dead and dense features
(`sae_ooc.saes.reconstruction`); with the SAE spliced into the model (sae_lens.HookedSAETransformer) answer
cross-entropy and accuracy on every split - and on the prompts the SAE never saw whole - and the fraction of
answer loss recovered relative to zero-ablating the hook (`sae_ooc.saes.task_metrics`); ground-truth alignment
with its controls (`sae_ooc.saes.alignment`, `sae_ooc.saes.probes`, `sae_ooc.saes.controls`) and the label of every
feature that detects a value; the field's standard metrics on the planted variables (`sae_ooc.saes.standard_metrics`:
SAEBench's k-sparse probing and absorption, sae_lens.synthetic's MCC and per-latent precision / recall).

It writes only under RUN/sae_eval/: <hook_name>/metrics.json and standard_metrics.json/.safetensors per SAE, summary.md over layers
and the heatmaps alignment_<variable>.png/.svg (`sae_ooc.saes.summary`). train-sae's RUN/saes/ is read, never rewritten.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from sae_ooc.activations.cache import ActivationCache, distinct_rows, prefix_ids, prefix_tuples
from sae_ooc.errors import UserError, unreadable
from sae_ooc.io import load_tensors, read_json
from sae_ooc.models.hooked import model_hash
from sae_ooc.saes.alignment import alignment
from sae_ooc.saes.controls import control_activations
from sae_ooc.saes.metrics_result import SaeEvalMetrics
from sae_ooc.saes.prefixes import PositionSlice, position_slices
from sae_ooc.saes.reconstruction import check_d_in, reconstruction_metrics
from sae_ooc.saes.standard_metrics import standard_metrics, write_standard_metrics
from sae_ooc.saes.store import METRICS_FILE, eval_metrics_path, eval_rows, load_saes, sae_dir
from sae_ooc.saes.task_metrics import TaskEvaluator
from sae_ooc.tasks.data import load_task
from sae_ooc.threads import cpu_workers, torch_threads, worker_pool
from sae_ooc.saes.summary import eval_line, write_summary


def evaluate_sae(sae, cache: ActivationCache, hook_name: str, heldout: torch.Tensor, slices: list[PositionSlice], ecfg,
                 task: TaskEvaluator | None, names: list[str] | None = None, controls: dict | None = None, bar=None) -> dict:
    """Every number eval-sae reports for one SAE: reconstruction, task (if `task`), alignment with its controls."""
    check_d_in(sae, cache, hook_name, f"the SAE for {hook_name}")
    step = (lambda: bar.update(1)) if bar is not None else (lambda: None)
    out = {"reconstruction": reconstruction_metrics(sae, cache, hook_name, distinct_rows(cache.tokens(), heldout),
                                                    dense_threshold=ecfg.dense_threshold)}
    step()
    if task is not None:
        out["task"] = task.evaluate(sae)
    step()
    al = alignment(sae, cache, hook_name, slices, ecfg, names, controls=controls, progress=step)
    out["alignment"] = al["by_variable_position"]
    out["feature_labels"] = al["feature_labels"]
    return out


def run_eval_sae(run, force: bool = False) -> dict:
    """Stage `eval-sae`: evaluate every SAE in RUN/saes into RUN/sae_eval (metrics.json per hook, summary.md, heatmaps)."""
    out_root = run.sae_eval_dir
    if out_root.exists():
        shutil.rmtree(out_root)  # the stage owns RUN/sae_eval: nothing from an earlier evaluation stays
    cache = ActivationCache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    saes = load_saes(run.saes_dir, device=run.device, hook_names=list(run.cfg.sae.hooks or cache.hooks))
    for h in saes:
        cache.check_hook(h)
    heldout = heldout_from_disk(run.saes_dir, cache)
    _, vocab = load_task(run.data_dir)
    ecfg = run.cfg.sae_eval
    tok = cache.tokens()
    task = TaskEvaluator.from_run(run, device=run.device, train_prefixes=prefix_tuples(tok, (~heldout).nonzero().squeeze(1)))
    slices = position_slices(cache, heldout, ecfg.max_select_tokens, ecfg.seed, vocab.layout.positions(ecfg.positions))
    bar = tqdm(total=1 + len(saes) * (2 + len(slices) + int(ecfg.standard_metrics)), desc="eval-sae: control models", unit="step", dynamic_ncols=True)
    per_hook = {}
    try:
        with torch_threads(run.cfg.sae.threads):
            controls = control_activations(run, slices, list(saes), ecfg.n_controls)
        bar.update(1)
        steps = 2 + len(slices) + int(ecfg.standard_metrics)
        workers = cpu_workers(run.cfg.sae.workers, len(saes), run.device)
        if workers > 1:
            # one hook per job in spawned processes: each job computes what the loop below does for its hook (every
            # random draw in it is seeded per hook), and the results are taken in hook order, so the files are the same
            bar.set_description(f"eval-sae: {len(saes)} hooks in {workers} processes")
            with worker_pool(workers) as pool:
                jobs = {h: pool.submit(_evaluate_in_worker, run, h, heldout, slices, _controls_at(controls, h)) for h in saes}
                for h, job in jobs.items():
                    per_hook[h], res = job.result()
                    bar.update(steps)
                    tqdm.write(eval_line(h, res))
        else:
            for h, sae in saes.items():
                bar.set_description(f"eval-sae: {h}")
                per_hook[h], res = _evaluate_hook(run, h, sae, cache, heldout, slices, task, vocab, controls, bar)
                tqdm.write(eval_line(h, res))
    finally:
        bar.close()
    summary = write_summary(per_hook, out_root, ecfg.auroc_threshold)
    return {"hooks": list(per_hook), "summary": str(summary),
            "loss_recovered": {h: m["task"]["loss_recovered"] for h, m in per_hook.items()}}


def _evaluate_hook(run, h: str, sae, cache: ActivationCache, heldout, slices, task, vocab, controls, bar) -> tuple[dict, dict]:
    """Evaluate the SAE on `h` and write RUN/sae_eval/<h>/: (its metrics.json record, evaluate_sae's result)."""
    ecfg = run.cfg.sae_eval
    out = eval_metrics_path(run.sae_eval_dir, h).parent
    with torch_threads(run.cfg.sae.threads):
        res = evaluate_sae(sae, cache, h, heldout, slices, ecfg, task, vocab.planted_names, controls, bar)
    trained = _train_metrics(run.saes_dir, h)
    metrics = {"hook_name": h, "architecture": trained.get("architecture", sae.cfg.architecture()),
               "inference_architecture": sae.cfg.architecture(), "d_in": int(sae.cfg.d_in), "d_sae": int(sae.cfg.d_sae), **res}
    SaeEvalMetrics.from_json(metrics).save(out)
    if ecfg.standard_metrics:  # SAEBench's sparse probing and absorption, sae_lens.synthetic's matching
        with torch_threads(run.cfg.sae.threads):
            std, per_latent = standard_metrics(sae, cache, h, slices, ecfg)
        write_standard_metrics(out, std, per_latent)
        if bar is not None:
            bar.update(1)
    return metrics, res


def _controls_at(controls: dict, h: str) -> dict:
    """The control models' activations at hook `h` only: what a worker evaluating `h` needs."""
    return {kind: [{h: acts[h]} for acts in runs] for kind, runs in controls.items()}


def _evaluate_in_worker(run, h: str, heldout: torch.Tensor, slices, controls: dict) -> tuple[dict, dict]:
    """`_evaluate_hook` in a worker process, from the same files as the stage's process."""
    cache = ActivationCache(run.activations_dir)
    sae = load_saes(run.saes_dir, device=run.device, hook_names=[h])[h]
    _, vocab = load_task(run.data_dir)
    task = TaskEvaluator.from_run(run, device=run.device, train_prefixes=prefix_tuples(cache.tokens(), (~heldout).nonzero().squeeze(1)))
    return _evaluate_hook(run, h, sae, cache, heldout, slices, task, vocab, controls, None)


def _train_metrics(saes_root: Path, hook_name: str) -> dict:
    """train-sae's metrics.json of the SAE on `hook_name` ({} if unreadable)."""
    path = sae_dir(saes_root, hook_name) / METRICS_FILE
    try:
        m = read_json(path) if path.is_file() else {}
    except ValueError:
        m = {}
    return m if isinstance(m, dict) else {}


def heldout_from_disk(saes_root: Path, cache: ActivationCache) -> torch.Tensor:
    """The rows train-sae held out, as a boolean mask over the cache's rows; refuses a split in which a held-out
    prefix also occurs among the training rows (a sequence split of an older train-sae)."""
    path = eval_rows(saes_root)
    rebuild = f"sae-ooc train-sae --force --run {Path(saes_root).parent}"
    if not path.exists():
        raise UserError(f"{path} is missing; rerun `{rebuild}`")
    try:
        rows = load_tensors(path)["rows"]
    except SafetensorError as e:  # a truncated or overwritten file
        raise unreadable(path, e, rebuild) from None
    mask = torch.zeros(cache.n_tokens, dtype=torch.bool)
    mask[rows] = True
    pid = prefix_ids(cache.tokens())
    if torch.isin(pid[mask], pid[~mask]).any():
        raise UserError(f"{path} holds out rows whose prefix also occurs in the SAE's training rows (an older train-sae split "
                        f"sequences, not prefixes); rerun `{rebuild}`")
    return mask
