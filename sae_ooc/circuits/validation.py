"""Validation of the estimated attribution methods against exact patching (RUN/attribution/validation.json).

On the first `attribution.validate_pairs` pairs, every method but exact is compared with exact patching on the
mean effects of every node that changes between clean and corrupted in some pair: rank agreement overall and
on the top nodes, top-k overlap, and whether it is trusted (top-50 Spearman >= attribution.trust_spearman).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sae_ooc.circuits.methods import ATTRIBUTION_METHODS, node_effects
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import Spliced
from sae_ooc.stats import pearson, spearman
from sae_ooc.tasks.data import SEQ_LEN

VALIDATION_FILE = "validation.json"


def compare_effects(exact: np.ndarray, approx: np.ndarray, top: int = 50) -> dict:
    """How well `approx` ranks nodes like `exact` (1-d arrays over the same active nodes)."""
    order_e = np.argsort(-np.abs(exact), kind="stable")
    order_a = np.argsort(-np.abs(approx), kind="stable")
    top_idx = order_e[:top]
    res = {
        "spearman_all": spearman(exact, approx), "pearson_all": pearson(exact, approx),
        f"spearman_top{top}": spearman(exact[top_idx], approx[top_idx]),
        "max_abs_error": float(np.abs(exact - approx).max()) if len(exact) else 0.0,
    }
    for k in (10, top):
        k2 = min(k, len(exact))
        res[f"top{k}_overlap"] = len(set(order_e[:k2]) & set(order_a[:k2])) / max(k2, 1)
    return res


# every registered method but exact itself, in the config's order
APPROXIMATIONS = tuple(m for m in ATTRIBUTION_METHODS.expected if m != "exact")


def validate_methods(sp: Spliced, pairs: Pairs, metric: str, ig_steps: int, exact_batch_size: int, batch_size: int,
                     trust: float, top: int = 50, verify_top: int = 96) -> tuple[dict, dict[str, np.ndarray]]:
    """Compare atp, ig and atp_verified with exact patching on `pairs`: mean effects over the pairs, over
    every node that changes between clean and corrupted in any pair."""
    timing, eff = {}, {}
    for method in ("exact",) + APPROXIMATIONS:
        t0 = time.perf_counter()
        eff[method] = node_effects(sp, pairs, method, metric, batch_size, ig_steps, exact_batch_size, progress=False, verify_top=verify_top)
        timing[method] = time.perf_counter() - t0
    active = _active_mask(sp, pairs, batch_size)
    flat = {m: torch.cat([e[h].mean(0)[active[h]] for h in sp.hooks]).numpy() for m, e in eff.items()}
    flat_pp = {m: torch.cat([e[h][:, active[h]].flatten() for h in sp.hooks]).numpy() for m, e in eff.items()}
    report = {"n_pairs": len(pairs), "n_active_nodes": len(flat["exact"]), "top": top, "trust_spearman": trust,
              "timing_s": timing, "verify_top": verify_top, "methods": {}}
    for m in APPROXIMATIONS:
        r = compare_effects(flat["exact"], flat[m], top)
        r["spearman_per_prompt"] = spearman(flat_pp["exact"], flat_pp[m])
        r["trusted"] = bool(r[f"spearman_top{top}"] >= trust)
        report["methods"][m] = r
    return report, flat


@torch.no_grad()
def _active_mask(sp: Spliced, pairs: Pairs, batch_size: int) -> dict[str, torch.Tensor]:
    """{hook: [P, d_sae + 1] bool}: nodes whose clean and corrupted values differ in some pair."""
    act = {h: torch.zeros(SEQ_LEN, sp.d_sae[h] + 1, dtype=torch.bool) for h in sp.hooks}
    for b in pairs.batches(batch_size):
        _, clean = sp.cache(b.clean)
        _, corr = sp.cache(b.corrupt)
        moved = corr.differs(clean)
        for h in sp.hooks:
            act[h][:, :-1] |= moved.acts[h].any(0).cpu()
            act[h][:, -1] |= moved.errs[h].any(0).cpu()
    return act
