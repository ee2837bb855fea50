"""The field's standard SAE metrics on the planted variables, computed by eval-sae for every SAE:

- SAEBench's k-sparse probing (`sae_ooc.saes.sparse_probing`) and feature absorption (`sae_ooc.saes.absorption`),
  re-implemented step by step because SAEBench's own entry points build their data with a tokenizer and an LLM
  (text datasets, spelling prompts) and pin numpy<2 / datasets<4;
- feature-to-variable matching with `sae_lens.synthetic`'s own calculators (`sae_ooc.saes.synthetic_match`).

Per position and planted variable that the prefixes determine (the same (variable, position) pairs as alignment),
fitted on the selection prefixes and measured on the held-out prefixes the SAE never saw. Saved per hook as
RUN/sae_eval/<hook_name>/standard_metrics.json (a `StandardMetrics`) and standard_metrics.safetensors (per latent:
matched value, precision, recall, keyed `<variable>@<position>/<name>`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.io import save_tensors
from sae_ooc.saes.absorption import absorption
from sae_ooc.saes.prefixes import VARIABLES, PositionSlice
from sae_ooc.saes.reconstruction import feature_acts
from sae_ooc.saes.sparse_probing import sparse_probing
from sae_ooc.saes.standard_result import PER_LATENT_FILE, STANDARD_FILE, StandardMetrics, StandardRow
from sae_ooc.saes.synthetic_match import synthetic_match

__all__ = ["PER_LATENT_FILE", "STANDARD_FILE", "StandardMetrics", "StandardRow", "standard_metrics", "write_standard_metrics"]


@torch.no_grad()
def standard_metrics(sae, cache: ActivationCache, hook_name: str, slices: list[PositionSlice], ecfg,
                     progress=None) -> tuple[StandardMetrics, dict[str, torch.Tensor]]:
    """Every (variable, position) with two scorable values: sparse probing, absorption and matching of `sae`."""
    ks = tuple(ecfg.sparse_probing_k)
    rows, per_latent = [], {}
    w_dec = sae.W_dec.detach().float().cpu()
    for sl in slices:
        x_sel, x_ev = cache.read(hook_name, sl.sel).float(), cache.read(hook_name, sl.ev).float()
        f_sel, f_ev = feature_acts(sae, x_sel).float().cpu(), feature_acts(sae, x_ev).float().cpu()
        for var in VARIABLES:
            y_sel, y_ev = sl.labels[var]
            if int((y_sel >= 0).sum()) == 0 or int((y_ev >= 0).sum()) == 0:
                continue
            row = {"variable": var, "position": sl.name, "n_select": int((y_sel >= 0).sum()), "n_heldout": int((y_ev >= 0).sum())}
            row["sparse_probing"] = sparse_probing(f_sel, y_sel, f_ev, y_ev, ks, ecfg.min_positives, ecfg.seed, x_sel, x_ev)
            if row["sparse_probing"]["n_classes"] < 2:
                continue
            matching, lat = synthetic_match(x_sel, y_sel, f_ev, y_ev, w_dec, ecfg.min_positives)
            row["absorption"] = (absorption(x_sel, f_sel, y_sel, x_ev, f_ev, y_ev, w_dec, ecfg.min_positives, ecfg.seed)
                                 if ecfg.absorption else {})
            rows.append(row | {"matching": matching})
            per_latent.update({f"{var}@{sl.name}/{k}": v.contiguous() for k, v in lat.items()})
        if progress is not None:
            progress()
    settings = {"sparse_probing_k": list(ks), "absorption": bool(ecfg.absorption), "min_positives": ecfg.min_positives,
                "seed": ecfg.seed, "fitted_on": "selection prefixes", "measured_on": "held-out prefixes (never seen by the SAE)"}
    # the measuring functions return plain dicts; typed once, here, in their key order
    return StandardMetrics.from_json({"hook_name": hook_name, "rows": rows, "settings": settings,
                                      "format": StandardMetrics.format_string()}), per_latent


def write_standard_metrics(out_dir: Path, result: StandardMetrics, per_latent: dict[str, torch.Tensor]) -> None:
    result.save(out_dir)
    save_tensors(out_dir / PER_LATENT_FILE, per_latent or {"empty": torch.zeros(0)})
