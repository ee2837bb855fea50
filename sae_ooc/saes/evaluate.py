"""Stage `eval-sae`: how well each SAE reconstructs, how much task skill survives it, what its features mean.

For every SAE in RUN/saes/<hook_name>/ this measures, on the sequences held out of SAE training
(RUN/saes/heldout_rows.safetensors): explained variance / FVU / MSE / L0 / dead and dense features
(`sae_ooc.saes.reconstruction`); with the SAE spliced into the model (sae_lens.HookedSAETransformer): answer
cross-entropy and accuracy on every split and the fraction of answer loss recovered relative to zero-ablating
the hook (`sae_ooc.saes.task_metrics`); and ground-truth alignment: for every planted variable (head, r1, r2,
bridge, answer) and position, which single feature best detects each value (AUROC, one-vs-rest) next to a
linear probe on the raw activations, and the label of every feature that detects one (`sae_ooc.saes.alignment`).

It writes only under RUN/sae_eval/: <hook_name>/metrics.json per SAE, summary.md over layers and the heatmaps
alignment_<variable>.png/.svg (`sae_ooc.viz.sae_summary`). train-sae's RUN/saes/ is read, never rewritten.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.errors import UserError
from sae_ooc.io import load_tensors, read_json, write_json
from sae_ooc.models.hooked import model_hash
from sae_ooc.saes.alignment import alignment
from sae_ooc.saes.reconstruction import check_d_in, finite, reconstruction_metrics
from sae_ooc.saes.store import METRICS_FILE, eval_metrics_path, eval_rows, load_saes, sae_dir
from sae_ooc.saes.task_metrics import TaskEvaluator
from sae_ooc.tasks.data import load_task
from sae_ooc.threads import torch_threads
from sae_ooc.viz.sae_summary import eval_line, write_summary


def evaluate_sae(sae, cache: ActivationCache, hook_name: str, heldout: torch.Tensor, ecfg, task: TaskEvaluator | None,
                 names: list[str] | None = None) -> dict:
    """Every number eval-sae reports for one SAE: reconstruction, task (if `task`), alignment."""
    check_d_in(sae, cache, hook_name, f"the SAE for {hook_name}")
    out = {"reconstruction": {k: finite(v) for k, v in reconstruction_metrics(
        sae, cache, hook_name, heldout.nonzero().squeeze(1), dense_threshold=ecfg.dense_threshold).items()}}
    if task is not None:
        out["task"] = task.evaluate(sae)
    al = alignment(sae, cache, hook_name, heldout, ecfg, names)
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
    heldout = heldout_from_disk(run.saes_dir, cache)
    _, vocab = load_task(run.data_dir)
    task = TaskEvaluator.from_run(run, device=run.device)
    ecfg = run.cfg.sae_eval
    per_hook = {}
    for h, sae in saes.items():
        cache.check_hook(h)
        with torch_threads(run.cfg.sae.threads):
            res = evaluate_sae(sae, cache, h, heldout, ecfg, task, vocab.names)
        trained = _train_metrics(run.saes_dir, h)
        metrics = {"hook_name": h, "architecture": trained.get("architecture", sae.cfg.architecture()),
                   "inference_architecture": sae.cfg.architecture(), "d_in": int(sae.cfg.d_in), "d_sae": int(sae.cfg.d_sae), **res}
        write_json(eval_metrics_path(out_root, h), metrics)
        per_hook[h] = metrics
        print(eval_line(h, res))
    summary = write_summary(per_hook, out_root, ecfg.auroc_threshold)
    return {"hooks": list(per_hook), "summary": str(summary),
            "loss_recovered": {h: m["task"]["loss_recovered"] for h, m in per_hook.items()}}


def _train_metrics(saes_root: Path, hook_name: str) -> dict:
    """train-sae's metrics.json of the SAE on `hook_name` ({} if unreadable)."""
    path = sae_dir(saes_root, hook_name) / METRICS_FILE
    try:
        m = read_json(path) if path.is_file() else {}
    except ValueError:
        m = {}
    return m if isinstance(m, dict) else {}


def heldout_from_disk(saes_root: Path, cache: ActivationCache) -> torch.Tensor:
    """The held-out rows train-sae recorded, as a boolean mask over the cache's rows."""
    path = eval_rows(saes_root)
    if not path.exists():
        raise UserError(f"{path} is missing; rerun `sae-ooc train-sae --force --run {Path(saes_root).parent}`")
    mask = torch.zeros(cache.n_tokens, dtype=torch.bool)
    mask[load_tensors(path)["rows"]] = True
    return mask
