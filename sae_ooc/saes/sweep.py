"""Sweeps: one SAE per value of the configured sweep list (sae.sweep_k, sweep_l1_coefficient or sweep_d_sae), and
the Pareto fronts of sparsity (L0) against reconstruction (FVU) and task loss recovered."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.config import SaeConfig
from sae_ooc.io import write_json
from sae_ooc.saes.architectures import ARCHITECTURES
from sae_ooc.saes.metrics_result import TaskMetrics
from sae_ooc.saes.trainer import Reuse, settings_hash, train_sae
from sae_ooc.viz.sae_plots import plot_pareto

SWEEP_PARAMS = {"sweep_k": "k", "sweep_l1_coefficient": "l1_coefficient", "sweep_d_sae": "d_sae"}


def sweep_spec(p: SaeConfig) -> tuple[str, list] | None:
    """(SaeConfig field swept, values), or None when no sweep is configured."""
    for key, param in SWEEP_PARAMS.items():
        values = getattr(p, key)
        if values:
            if param == "l1_coefficient":
                param = ARCHITECTURES.get(p.architecture).sparsity
            return param, list(values)
    return None


def sweep_point_dir(root: Path, hook_name: str, param: str, value) -> Path:
    return Path(root) / hook_name / f"{param}_{value}"


def pareto_stem(root: Path, hook_name: str) -> Path:
    """Figure stem for a hook's Pareto plot (dots replaced: save_figure adds the extension with with_suffix)."""
    return Path(root) / f"pareto_{hook_name.replace('.', '_')}"


def sweep_point_config(p: SaeConfig, param: str, value) -> SaeConfig:
    """`p` with `param` set to `value` (and no sweep lists); a swept width or k wins over a per-hook one."""
    q = dataclasses.replace(p, sweep_k=[], sweep_l1_coefficient=[], sweep_d_sae=[], **{param: value})
    if param == "d_sae":
        q = dataclasses.replace(q, d_sae_by_hook={})
    if param == "k":
        q = dataclasses.replace(q, k_by_hook={})
    return q


def train_sweep(cache: ActivationCache, hook_name: str, root: str | Path, p: SaeConfig, device: str = "cpu",
                task_eval: Callable | None = None, dense_threshold: float = 0.1, reuse=None) -> list[dict]:
    """One SAE per value of the configured sweep list; returns a point (L0, FVU, task recovered) per SAE.

    `task_eval(sae) -> dict` (optional) adds the spliced-in task metrics (sae_ooc.saes.task_metrics).
    `reuse` (a `sae_ooc.saes.trainer.Reuse`) says which SAEs already trained may stay; default: any in its
    directory with the same settings.
    """
    from sae_lens import SAE

    spec = sweep_spec(p)
    if spec is None:
        return []
    reuse = reuse or Reuse()
    param, values = spec
    points = []
    for v in values:
        q = sweep_point_config(p, param, v)
        out = sweep_point_dir(root, hook_name, param, v)
        settings = settings_hash(q, hook_name, cache)
        m = reuse.get(out, settings)
        if m is None:
            m = train_sae(cache, hook_name, out, q, device=device, resume=reuse.resume, dense_threshold=dense_threshold)
            reuse.add(out, settings)
        r = m.reconstruction
        point = {"param": param, "value": v, "l0": r.l0, "fvu": r.fvu, "explained_variance": r.explained_variance,
                 "dead_fraction": r.dead_fraction}
        if task_eval is not None:
            if not m.task:
                m.task = TaskMetrics.from_json(task_eval(SAE.load_from_disk(out, device=device)))
                m.save(out)
            point["loss_recovered"] = m.task.loss_recovered  # test_id: reported only
            point["loss_recovered_valid_id"] = m.task.loss_recovered_valid_id  # what a choice of SAE reads
            test_id = m.task.splits.get("test_id")
            point["test_id_acc"] = test_id.acc_sae if test_id else None
        points.append(point)
        print(f"{hook_name} {param}={v}: L0 {point['l0']:.1f}  FVU {point['fvu']:.4f}  loss recovered (valid_id) {point.get('loss_recovered_valid_id')}")
    write_json(Path(root) / hook_name / "sweep.json", points)
    plot_pareto(points, pareto_stem(root, hook_name), title=f"{hook_name}: sweep over {param}")
    return points
