"""Validation of the estimated attribution methods against exact patching (RUN/attribution/validation.json).

On the first `attribution.validate_pairs` pairs every method runs, exact patching (the default method, batched)
first, each timed in this run on these pairs. Each approximation is judged pair by pair, and never on values it
computed exactly itself (atp_verified patches its shortlist exactly; comparing those with exact patching would
compare exact patching with itself):

  recall_top{10,50}          of exact's top-k nodes of the pair (by |effect|), the share in the method's own top k;
  shortlist_recall_top{k}    (atp_verified) the share in its shortlist, the nodes it patches exactly;
  spearman_not_exact         rank correlation with exact patching over the pair's changed nodes the method did
                             not compute exactly (every changed node for atp and ig);
each as the mean over pairs with its spread (std, min, per pair). `trusted`: mean recall_top50 >=
`attribution.trust_recall` and mean spearman_not_exact >= `attribution.trust_spearman` (a method that computed
every changed node exactly is judged on recall alone). Speed is against batched exact patching timed in the
same run; the speed-up over one forward pass per changed node is an extrapolated, secondary figure.
`mean_effects` keeps the agreement of the mean effects over the pairs for reference: for atp_verified it
includes its exactly computed nodes, so it does not test the approximation.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from sae_ooc.circuits.attribute_result import AttributionValidation
from sae_ooc.circuits.methods import (
    ATTRIBUTION_METHODS,
    changed_mask,
    node_effects,
    shortlist_mask,
)
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import Spliced
from sae_ooc.stats import pearson, spearman

VALIDATION_FILE = AttributionValidation.FILE
TOPS = (10, 50)

# every registered method but exact itself, in the config's order
APPROXIMATIONS = tuple(m for m in ATTRIBUTION_METHODS.expected if m != "exact")
# methods that patch a shortlist exactly: the method whose effects pick the shortlist (attribution.verify_top per pair)
SHORTLISTS = {"atp_verified": "atp"}


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


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)  # NaN (nothing to measure) as JSON null


def _top(values: torch.Tensor, k: int) -> set[int]:
    return set(values.abs().argsort(descending=True, stable=True)[:k].tolist())


def pair_agreement(exact: torch.Tensor, approx: torch.Tensor, changed: torch.Tensor, computed: torch.Tensor | None = None,
                   tops: tuple[int, ...] = TOPS) -> dict[str, list]:
    """Per pair (rows of [n_pairs, n_nodes] tensors): recall of exact's top-k among the changed nodes in approx's
    top k (k capped at the pair's number of nonzero exact effects), in `computed` (a shortlist) when given, and
    Spearman over the changed nodes outside `computed`. None where a pair has nothing to measure."""
    out: dict[str, list] = {f"recall_top{k}": [] for k in tops}
    if computed is not None:
        out.update({f"shortlist_recall_top{k}": [] for k in tops})
    out["spearman_not_exact"], out["n_not_exact"] = [], []
    for b in range(exact.shape[0]):
        idx = changed[b].nonzero(as_tuple=True)[0]
        e, a = exact[b, idx], approx[b, idx]
        short = set() if computed is None else set(computed[b, idx].nonzero(as_tuple=True)[0].tolist())
        for k in tops:
            k2 = min(k, int((e != 0).sum()))
            want = _top(e, k2)
            out[f"recall_top{k}"].append(len(want & _top(a, k2)) / k2 if k2 else None)
            if computed is not None:
                out[f"shortlist_recall_top{k}"].append(len(want & short) / k2 if k2 else None)
        rest = torch.tensor([i for i in range(len(idx)) if i not in short], dtype=torch.long)
        out["n_not_exact"].append(len(rest))
        out["spearman_not_exact"].append(_num(spearman(e[rest].numpy(), a[rest].numpy())) if len(rest) >= 3 else None)
    return out


def spread(values: list[float]) -> dict:
    """Mean, std and min over the values that are defined (not None or NaN); None when none is."""
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if not len(v):
        return {"mean": None, "std": None, "min": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "n": len(v)}


@torch.no_grad()
def single_patch_seconds(sp: Spliced, pairs: Pairs, n: int = 50) -> float:
    """Seconds for one patched forward pass of a single prompt (an error node of the middle hook): the cost of
    exact patching run one forward pass per node, the unbatched baseline."""
    h = sp.hooks[len(sp.hooks) // 2]
    one = pairs.subset([0])
    patch = {h: (torch.tensor([0]), torch.tensor([0]), torch.zeros(1, sp.d_in[h]))}
    sp.run_deltas(one.clean, patch)
    t0 = time.perf_counter()
    for _ in range(n):
        sp.run_deltas(one.clean, patch)
    return (time.perf_counter() - t0) / n


def _flat(eff: dict[str, torch.Tensor], hooks: list[str]) -> torch.Tensor:
    return torch.cat([eff[h].flatten(1) for h in hooks], 1)


def validate_methods(sp: Spliced, pairs: Pairs, metric: str, ig_steps: int, exact_batch_size: int, batch_size: int,
                     trust_spearman: float, trust_recall: float = 0.9, verify_top: int = 96) -> tuple[dict, dict]:
    """Every approximation against exact patching on `pairs` (see the module docstring). Returns (the report,
    {"exact", method: flat per-pair effects [n_pairs, n_nodes], "changed", "computed.<method>": masks})."""
    kw = {"batch_size": batch_size, "ig_steps": ig_steps, "exact_batch_size": exact_batch_size, "progress": False, "verify_top": verify_top}
    methods = ("exact",) + APPROXIMATIONS
    for m in methods:  # first-call costs (allocator, lazy init) out of the timings
        node_effects(sp, pairs.subset([0]), m, metric, **kw)
    timing, eff = {}, {}
    for m in methods:
        t0 = time.perf_counter()
        eff[m] = node_effects(sp, pairs, m, metric, **kw)
        timing[m] = time.perf_counter() - t0
    changed = {h: torch.cat(parts) for h, parts in zip(sp.hooks, zip(*[_changed(sp, b) for b in pairs.batches(batch_size)]))}
    flat = {m: _flat(e, sp.hooks) for m, e in eff.items()}
    flat["changed"] = _flat(changed, sp.hooks)
    n_changed = int(flat["changed"].sum())
    t_one = single_patch_seconds(sp, pairs)
    active = flat["changed"].any(0)
    report = {
        "n_pairs": len(pairs), "n_active_nodes": int(active.sum()), "n_changed_nodes": n_changed, "tops": list(TOPS),
        "verify_top": verify_top, "trust": {"recall_top50": trust_recall, "spearman_not_exact": trust_spearman},
        "timing_s": timing,
        "speed": {"baseline": f"exact: batched exact patching ({exact_batch_size} patched rows per pass), timed in this run on these pairs",
                  "exact_one_pass_per_node_estimate_s": t_one * n_changed, "one_pass_s": t_one,
                  "secondary": "speedup_vs_one_pass_per_node_estimate: against one forward pass per changed node, extrapolated "
                               "from the time of one patched pass (not measured end to end)"},
        "methods": {},
    }
    for m in APPROXIMATIONS:
        computed = shortlist_mask(eff[SHORTLISTS[m]], changed, verify_top) if m in SHORTLISTS else None
        if computed is not None:
            flat[f"computed.{m}"] = _flat(computed, sp.hooks)
        per_pair = pair_agreement(flat["exact"], flat[m], flat["changed"], flat.get(f"computed.{m}"))
        r = {}
        for key, values in per_pair.items():
            if key.startswith("n_"):
                continue
            s = spread(values)
            r[key] = s["mean"]
            r.update({f"{key}_{stat}": s[stat] for stat in ("std", "min")})
        r["n_not_exact_mean"] = float(np.mean(per_pair["n_not_exact"])) if len(pairs) else 0.0
        r["per_pair"] = per_pair
        recall_ok = r["recall_top50"] is not None and r["recall_top50"] >= trust_recall
        r["trusted"] = bool(recall_ok and (r["spearman_not_exact"] is None or r["spearman_not_exact"] >= trust_spearman))
        r["seconds"] = timing[m]
        r["speedup_vs_batched_exact"] = timing["exact"] / timing[m]
        r["speedup_vs_one_pass_per_node_estimate"] = t_one * n_changed / timing[m]
        mean_e, mean_m = eff["exact"], eff[m]
        r["mean_effects"] = {k: _num(v) for k, v in compare_effects(torch.cat([mean_e[h].mean(0).flatten() for h in sp.hooks])[active].numpy(),
                                                                     torch.cat([mean_m[h].mean(0).flatten() for h in sp.hooks])[active].numpy()).items()}
        r["mean_effects"]["includes_exactly_computed_nodes"] = computed is not None
        report["methods"][m] = r
    return report, flat


@torch.no_grad()
def _changed(sp: Spliced, b: Pairs) -> list[torch.Tensor]:
    _, clean = sp.cache(b.clean)
    _, corr = sp.cache(b.corrupt)
    mask = changed_mask(sp, clean, corr)
    return [mask[h] for h in sp.hooks]
