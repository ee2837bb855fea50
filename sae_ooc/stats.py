"""Rank statistics shared by attribution validation, edge checks and feature alignment; the cluster bootstrap of circuit scores."""

from __future__ import annotations

import numpy as np
import torch


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties sharing their average rank."""
    x = np.asarray(x)
    sorter = np.argsort(x, kind="mergesort")
    inv = np.empty(len(x), dtype=np.intp)
    inv[sorter] = np.arange(len(x))
    xs = x[sorter]
    obs = np.r_[True, xs[1:] != xs[:-1]]
    dense = obs.cumsum()[inv]
    count = np.r_[np.nonzero(obs)[0], len(obs)]
    return 0.5 * (count[dense] + count[dense - 1] + 1)


def pearson(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a, b) -> float:
    return pearson(rankdata(np.asarray(a)), rankdata(np.asarray(b))) if len(a) >= 2 else float("nan")


def tie_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of every column of x [n, m], ties sharing their average rank (float64)."""
    n, m = x.shape
    vals, order = x.sort(dim=0)
    new = torch.ones(n, m, dtype=torch.bool)
    new[1:] = vals[1:] != vals[:-1]
    gid = (new.cumsum(0) - 1) + torch.arange(m)[None, :] * n
    flat = gid.flatten()
    pos = torch.arange(1, n + 1, dtype=torch.float64)[:, None].expand(n, m).flatten()
    sums = torch.zeros(n * m, dtype=torch.float64).scatter_add_(0, flat, pos)
    counts = torch.zeros(n * m, dtype=torch.float64).scatter_add_(0, flat, torch.ones_like(pos))
    avg = (sums / counts.clamp(min=1))[flat].view(n, m)
    return torch.empty(n, m, dtype=torch.float64).scatter_(0, order, avg)


def cluster_weights(groups, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] bootstrap weights over clusters: each draw picks as many clusters as there are, with replacement,
    and every item gets its cluster's multiplicity, so items of one cluster (the pairs of one head entity, which share
    their head and r1 activations) are always kept or dropped together. A weighted mean under row b is that draw's
    mean over the resampled items."""
    g = np.asarray(groups)
    ids, inv = np.unique(g, return_inverse=True)
    draws = np.random.default_rng(seed).integers(len(ids), size=(n_boot, len(ids)))
    counts = np.zeros((n_boot, len(ids)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, inv]


def cluster_ratio_ci(num, den_hi, den_lo, groups, n_boot: int, seed: int) -> list[float] | None:
    """95% percentile interval of (mean num - mean den_lo) / (mean den_hi - mean den_lo) (faithfulness: m(C), m(M),
    m(∅) per pair) over a cluster bootstrap (`cluster_weights`); None with fewer than two clusters or no finite draw."""
    if len(np.unique(np.asarray(groups))) < 2:
        return None
    w = cluster_weights(groups, n_boot, seed)
    w = w / w.sum(1, keepdims=True)
    m, hi, lo = (w @ np.asarray(x, dtype=np.float64) for x in (num, den_hi, den_lo))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (m - lo) / (hi - lo)
    f = f[np.isfinite(f)]
    return [float(np.quantile(f, 0.025)), float(np.quantile(f, 0.975))] if len(f) else None


def spread(vals) -> dict | None:
    """{mean, sd (ddof=1; 0 for one value), min, max, n} of the values that are not None; None when there are none."""
    got = [float(v) for v in vals if v is not None]
    if not got:
        return None
    return {"mean": float(np.mean(got)), "sd": float(np.std(got, ddof=1)) if len(got) > 1 else 0.0, "min": min(got), "max": max(got),
            "n": len(got)}


def spread_text(sp, fmt: str = ".3f") -> str:
    """`mean [min, max]` of a `spread` (its dict, or a record with those attributes: sweep.result.SeedSpread; the mean
    alone for one value, — for none)."""
    if sp is None:
        return "—"
    n, mean, lo, hi = (sp[k] for k in ("n", "mean", "min", "max")) if isinstance(sp, dict) else (sp.n, sp.mean, sp.min, sp.max)
    if n == 1:
        return format(mean, fmt)
    return f"{format(mean, fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]"
