"""Every per-feature number of the feature browser from one batched pass over the activation cache, in bounded memory
(computed here, beside the SAEs, so the browse stage only reads and writes pages).

For one SAE the cache is read in row batches (`batch_elems` activations at a time, whatever d_sae is) and each
batch updates running per-feature tensors: how many tokens it fires on, their sum, its maximum (pooled and per
position), its top activations and a seeded uniform sample of its activations over distinct *prefixes* (rows
with the same token prefix are twins under causal attention, so a prefix shows once), and its activation
histogram over the held-out prefixes (a second, small pass once each feature's held-out maximum is known). No
[tokens, d_sae] matrix is ever held whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.saes.reconstruction import feature_acts

N_BINS = 24


@dataclass
class HookStats:
    n_tokens: int
    count: torch.Tensor  # [F] tokens on which the feature is > 0 (all cache rows)
    total: torch.Tensor  # [F] float64, sum of its activations
    max: torch.Tensor  # [F]
    pos_n: torch.Tensor  # [P] tokens per position
    pos_count: torch.Tensor  # [P, F]
    pos_total: torch.Tensor  # [P, F] float64
    top_val: torch.Tensor  # [K, F] largest activations over distinct prefixes, largest first (-inf: none)
    top_row: torch.Tensor  # [K, F] their cache rows
    rand_key: torch.Tensor  # [S, F] sample keys (-1: none)
    rand_row: torch.Tensor  # [S, F]
    rand_val: torch.Tensor  # [S, F]
    held_n: int  # held-out distinct prefixes
    held_count: torch.Tensor  # [F] of them the feature fires on
    held_max: torch.Tensor  # [F]
    hist: torch.Tensor  # [F, N_BINS] counts of its nonzero held-out activations in N_BINS equal bins of (0, held_max]

    def slice(self, lo: int, hi: int) -> "HookStats":
        """The same numbers for features lo..hi-1 only (what a page writer holds at a time)."""
        f = {}
        for k, v in self.__dict__.items():
            if not isinstance(v, torch.Tensor) or k == "pos_n":
                f[k] = v
            elif k in ("count", "total", "max", "held_count", "held_max", "hist"):
                f[k] = v[lo:hi]
            else:
                f[k] = v[:, lo:hi]
        return HookStats(**f)


def _batches(cache: ActivationCache, hook: str, batch: int):
    """(rows, activations) in cache order, each shard read once, `batch` rows at a time."""
    for i in range(cache.n_shards):
        start, end = cache.shard_bounds(i)
        x = cache.load_shard(hook, i)
        for s in range(0, end - start, batch):
            yield torch.arange(start + s, min(start + s + batch, end)), x[s : s + batch].float()


def _merge_top(val, row, new_val, new_row, k: int):
    v, j = torch.cat([val, new_val]).topk(k, dim=0)
    return v, torch.cat([row, new_row]).gather(0, j)


@torch.no_grad()
def collect(sae, cache: ActivationCache, hook: str, first: torch.Tensor, held: torch.Tensor, key: torch.Tensor,
            k_top: int = 10, k_rand: int = 10, batch_elems: int = 1 << 23, progress=None) -> HookStats:
    """`first`: [n_tokens] bool, the first row of each distinct prefix (examples are drawn from these); `held`:
    sorted cache rows, one per held-out prefix (the histogram's rows); `key`: [n_tokens] random sample keys in [0, 1)."""
    F = int(sae.cfg.d_sae)
    n = cache.n_tokens
    pos = cache.tokens()["pos"].long()
    P = max(len(cache.roles), int(pos.max()) + 1 if n else 0)  # every position a cached token has
    batch = max(1, min(n, batch_elems // F))
    count = torch.zeros(F, dtype=torch.long)
    total = torch.zeros(F, dtype=torch.float64)
    mx = torch.zeros(F)
    pos_count = torch.zeros(P, F, dtype=torch.long)
    pos_total = torch.zeros(P, F, dtype=torch.float64)
    top_val, top_row = torch.full((k_top, F), float("-inf")), torch.full((k_top, F), -1, dtype=torch.long)
    r_key, r_row, r_val = torch.full((k_rand, F), -1.0), torch.full((k_rand, F), -1, dtype=torch.long), torch.zeros(k_rand, F)
    for rows, x in _batches(cache, hook, batch):
        a = feature_acts(sae, x).float().cpu()  # [B, F]
        on = a > 0
        count += on.sum(0)
        total += a.sum(0, dtype=torch.float64)
        mx = torch.maximum(mx, a.max(0).values)
        p = pos[rows]
        for q in range(P):
            at = p == q
            if at.any():
                pos_count[q] += on[at].sum(0)
                pos_total[q] += a[at].sum(0, dtype=torch.float64)
        fr = first[rows]
        if fr.any():
            a1, r1 = a[fr], rows[fr]
            kk = min(k_top, len(r1))
            v, i = a1.topk(kk, dim=0)
            top_val, top_row = _merge_top(top_val, top_row, v, r1[i], k_top)
            kr = torch.where(a1 > 0, key[r1][:, None], torch.tensor(-1.0))  # active prefixes only
            v, i = kr.topk(min(k_rand, len(r1)), dim=0)
            cat_key, j = torch.cat([r_key, v]).topk(k_rand, dim=0)
            r_row = torch.cat([r_row, r1[i]]).gather(0, j)
            r_val = torch.cat([r_val, a1.gather(0, i)]).gather(0, j)
            r_key = cat_key
        if progress is not None:
            progress(len(rows))
    held_count, held_max, hist = _held_histogram(sae, cache, hook, held, F, batch)
    pos_n = torch.bincount(pos, minlength=P)[:P]
    return HookStats(n, count, total, mx, pos_n, pos_count, pos_total, top_val, top_row, r_key, r_row, r_val,
                     len(held), held_count, held_max, hist)


@torch.no_grad()
def _held_histogram(sae, cache, hook, held: torch.Tensor, F: int, batch: int):
    """Two passes over the (few) held-out prefixes: each feature's maximum there, then its histogram below it."""
    held_max = torch.zeros(F)
    held_count = torch.zeros(F, dtype=torch.long)
    for s in range(0, len(held), batch):
        a = feature_acts(sae, cache.read(hook, held[s : s + batch])).float().cpu()
        held_max = torch.maximum(held_max, a.max(0).values)
        held_count += (a > 0).sum(0)
    hist = torch.zeros(F, N_BINS, dtype=torch.long)
    width = (held_max / N_BINS).clamp(min=1e-12)
    for s in range(0, len(held), batch):
        a = feature_acts(sae, cache.read(hook, held[s : s + batch])).float().cpu()
        b = (a / width).ceil().long().clamp(1, N_BINS) - 1  # bin j holds (j w, (j+1) w]
        b = torch.where(a > 0, b, N_BINS)  # zeros go to a discarded extra bin
        hist += torch.zeros(F, N_BINS + 1, dtype=torch.long).scatter_add_(1, b.T, torch.ones_like(b.T))[:, :N_BINS]
    return held_count, held_max, hist


@torch.no_grad()
def acts_at(sae, cache: ActivationCache, hook: str, rows: torch.Tensor, feats: torch.Tensor, batch_elems: int = 1 << 23) -> torch.Tensor:
    """The activation of feature feats[i] at cache row rows[i], for every i: each needed row encoded once, in batches."""
    out = torch.zeros(len(rows))
    if len(rows) == 0:
        return out
    uniq, inv = torch.unique(rows, return_inverse=True)
    batch = max(1, batch_elems // int(sae.cfg.d_sae))
    for s in range(0, len(uniq), batch):
        a = feature_acts(sae, cache.read(hook, uniq[s : s + batch])).float().cpu()
        sel = (inv >= s) & (inv < s + batch)
        out[sel] = a[inv[sel] - s, feats[sel]]
    return out
