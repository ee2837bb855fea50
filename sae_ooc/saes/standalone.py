"""Train SAELens SAEs on hooks of any sae_ooc activation cache, standalone (the library half of `python train_sae.py`;
its command line is sae_ooc.train_sae_cli, a reader of this module, not the other way round)."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.config import Config, SaeConfig
from sae_ooc.rundir import RunDir


def train_standalone(activations: str | Path, hooks: str | list[str], out: str | Path, p: SaeConfig, device: str = "cpu",
                     wandb: bool = False) -> dict:
    """Train one SAE per hook of the cache in `activations` into `out` (itself for one hook, else out/<hook>/), or
    with a sweep configured one SAE per value in out/<hook>/<param>_<value>/; {hook: metrics or sweep points}."""
    from sae_ooc.activations.cache import open_cache
    from sae_ooc.saes.store import sae_dir
    from sae_ooc.saes.sweep import pareto_stem, sweep_spec, train_sweep
    from sae_ooc.saes.train_sae import train_hooks

    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    out = Path(out)
    cache = open_cache(activations)
    for h in hooks:
        cache.check_hook(h)
    if sweep_spec(p) is not None:
        task_eval = _run_task_eval(Path(activations), cache, device)
        points = {h: train_sweep(cache, h, out, p, device=device, task_eval=task_eval) for h in hooks}
        print("Pareto plot: " + ", ".join(str(pareto_stem(out, h).with_suffix(".png")) for h in hooks))
        return points
    dirs = {hooks[0]: out} if len(hooks) == 1 else {h: sae_dir(out, h) for h in hooks}
    return train_hooks(cache, dirs, p, device=device, wandb=wandb)


def _run_task_eval(activations: Path, cache, device: str):
    """Spliced-in task metrics for a sweep when the cache is a run's RUN/activations, next to the model it came from."""
    from sae_ooc.models.hooked import MODEL_FILE, model_hash
    from sae_ooc.saes.task_metrics import task_evaluator

    run = RunDir(activations.resolve().parent, Config())
    if run.activations_dir != activations.resolve() or not (run.model_dir / MODEL_FILE).is_file() or not run.data_dir.is_dir():
        return None
    if model_hash(run.model_dir) != cache.model_hash:
        return None
    return task_evaluator(run.model_dir, run.data_dir, device=device)
