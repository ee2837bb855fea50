"""Small, quick SAEs per checkpoint and their ground-truth alignment with the bridge and the answer.

Each checkpoint's activations at the SAE hooks are harvested (`sae_ooc.activations.harvest`, the run's own
splits, so the token table is the final model's), an SAE is trained with the run's `sae` settings and
`dynamics.sae_training_tokens` (`sae_ooc.saes.trainer.train_sae`), and scored as eval-sae scores the final ones
(`sae_ooc.saes.alignment`): the best feature per value chosen on the selection prefixes, its AUROC on the held-out
prefixes, beside the same search on shuffled labels. Only the numbers are kept; the work directory is removed.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from sae_lens import SAE

from sae_ooc.activations.cache import ActivationCache, distinct_rows
from sae_ooc.activations.harvest import harvest_activations
from sae_ooc.models.hooked import model_hash
from sae_ooc.saes.alignment import alignment
from sae_ooc.saes.prefixes import PositionSlice
from sae_ooc.saes.trainer import train_sae
from sae_ooc.tasks.data import split_tensors


def kept(positions: dict[int, str]) -> tuple[str, ...]:
    """The (variable@position) alignments kept: the bridge at both positions (`measures.read_positions`), the answer at
    the answer position (the toy's bridge@r1, bridge@r2, answer@r2)."""
    (_, r1), (_, ans) = positions.items()
    return f"bridge@{r1}", f"bridge@{ans}", f"answer@{ans}"


def only_kept(sl: PositionSlice, keep_keys: tuple[str, ...]) -> PositionSlice:
    """The slice with every variable but those of `keep_keys` unlabelled, so alignment scores only what is kept."""
    keep = {k.split("@")[0] for k in keep_keys if k.endswith(f"@{sl.name}")}
    labels = {v: ys if v in keep else (torch.full_like(ys[0], -1), torch.full_like(ys[1], -1)) for v, ys in sl.labels.items()}
    return dataclasses.replace(sl, labels=labels)


def default_sae_hooks(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(1, n_layers)] or ["blocks.0.hook_resid_post"]


def checkpoint_saes(run, model, ckpt_dir: Path, work: Path, hooks: list[str], held: torch.Tensor, slices: list[PositionSlice],
                    n_tokens_expected: int, ds, vocab, ecfg, positions: dict[int, str]) -> dict[str, dict]:
    """{hook: {explained_variance, l0, "bridge@r1": {mean_auroc_features, shuffled_mean_auroc, frac_detected_features,
    probe_accuracy}, ...}} for SAEs trained on this checkpoint's activations, at `positions` (`kept`)."""
    keep = kept(positions)
    p = dataclasses.replace(run.cfg.sae, training_tokens=run.cfg.dynamics.sae_training_tokens, hooks=list(hooks),
                            sweep_k=[], sweep_l1_coefficient=[], sweep_d_sae=[], n_checkpoints=0, log_every=10**9)
    hc = run.cfg.harvest
    splits = {s: split_tensors(ds[s], vocab) for s in hc.splits}
    if work.exists():
        shutil.rmtree(work)
    try:
        harvest_activations(model, splits, work / "activations", model_hash(ckpt_dir), hooks=hooks, shard_tokens=hc.shard_tokens,
                            batch_size=hc.batch_size, dtype=hc.dtype, force=True, device=run.device)
        cache = ActivationCache(work / "activations")
        if cache.n_tokens != n_tokens_expected:
            raise RuntimeError(f"checkpoint cache has {cache.n_tokens} tokens, the run's {n_tokens_expected}")  # same splits: cannot happen
        eval_rows = distinct_rows(cache.tokens(), held)
        slices = [only_kept(sl, keep) for sl in slices]
        out = {}
        for h in hooks:
            m = train_sae(cache, h, work / "saes" / h, p, device=run.device, rows_mask=~held, eval_rows=eval_rows, resume=False, plot=False)
            sae = SAE.load_from_disk(work / "saes" / h, device=run.device)
            al = alignment(sae, cache, h, slices, ecfg)["by_variable_position"]
            rec = {"explained_variance": m.reconstruction.explained_variance, "l0": m.reconstruction.l0}
            for key in keep:
                a = al.get(key)
                if a is not None:
                    rec[key] = {"mean_auroc_features": a["mean_auroc_features"], "frac_detected_features": a["frac_detected_features"],
                                "shuffled_mean_auroc": (a["features"] or {}).get("shuffled_mean_auroc"),
                                "probe_accuracy": a["probe_accuracy"], "n_values": a["n_values"]}
            out[h] = rec
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
