"""Rank statistics shared by attribution validation, edge checks and feature alignment."""

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
