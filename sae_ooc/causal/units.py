"""Candidate units of a variable at one hook, each written as the change it makes to the residual at (hook, r1).

With the SAE's error term kept, exchanging features S from the donor's code moves the residual by
decode(f with S from f_d) - decode(f) (sae_ooc.interventions.steering's identity); exchanging every feature is the
whole SAE code swapped (decode(f_d) - decode(f)). The supervised dictionary is the class-conditional means mu_e of the
activation over the fit prefixes whose bridge is e (Makelov, Lange & Nanda 2024): its edit is mu_b' - mu_b, and its
rank-r version projects that on the top-r principal directions of the (centered) class means. Random references: an
orthonormal random subspace of the same rank interchanged from the donor, and as many random SAE features (active on
either prompt) exchanged, each rescaled per prompt to the norm of the unit it is the reference of.
"""

from __future__ import annotations

import numpy as np
import torch

from sae_ooc.interventions.steering import decode_delta, matched_norm


def class_means(x: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([n_classes, d] mean of the rows of each class (0 where none), [n_classes] bool: the class has rows)."""
    sums = torch.zeros(n_classes, x.shape[1], dtype=x.dtype).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=n_classes)
    return sums / counts.clamp(min=1)[:, None].to(x.dtype), counts > 0


def principal_directions(means: torch.Tensor, has: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([k, d] the principal directions of the class means (rows, by decreasing variance), [k] their variance shares)."""
    m = means[has]
    _, s, vh = torch.linalg.svd(m - m.mean(0), full_matrices=False)
    var = s.double() ** 2
    return vh, (var / var.sum().clamp(min=1e-30)).float()


def projected(delta: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """delta projected on the span of the orthonormal rows of U."""
    return (delta @ U.T) @ U


def exchanged(sae, f: torch.Tensor, fd: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """decode(f with the features in `mask` [n, d_sae] taken from fd) - decode(f)."""
    return decode_delta(sae, f, torch.where(mask, fd, f))


def top_feature_mask(mu_f: torch.Tensor, b: torch.Tensor, b2: torch.Tensor, n: int) -> torch.Tensor:
    """[len(b), d_sae]: the n features whose fit class means differ most between b and b' (|mu_f[b'] - mu_f[b]|)."""
    diff = (mu_f[b2] - mu_f[b]).abs()
    n = min(n, diff.shape[1])
    idx = diff.topk(n, dim=1).indices
    return torch.zeros_like(diff, dtype=torch.bool).scatter_(1, idx, True)


def random_feature_mask(f: torch.Tensor, fd: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Per row, n random features among those active on the base or the donor (exchanging a silent one changes nothing)."""
    cand = (f > 0) | (fd > 0)
    score = torch.rand(cand.shape, generator=gen).masked_fill(~cand.cpu(), -1.0).to(f.device)
    idx = score.topk(min(n, cand.shape[1]), dim=1).indices
    return torch.zeros_like(cand).scatter_(1, idx, True) & cand


def greedy_feature_order(sae, f: torch.Tensor, fd: torch.Tensor, target: torch.Tensor, n_max: int) -> torch.Tensor:
    """Makelov et al.'s `sae_opt` edit, interpretation-free: per row, up to n_max features (among those active on the base
    or the donor) chosen greedily so that exchanging them from the donor's code best matches `target` [n, d] (the
    counterfactual difference x_donor - x): each step adds the feature whose exchange (fd_i - f_i) W_dec[i] most lowers the
    squared distance to what is left of the target, and a row stops when no feature lowers it. Returns [n, n_max] feature
    ids in the order chosen, -1 after a row stopped."""
    n = len(f)
    out = torch.full((n, n_max), -1, dtype=torch.long)
    if n == 0 or n_max == 0:
        return out
    W = sae.W_dec.detach().float()
    diff = (fd - f).float()
    active = (f > 0) | (fd > 0)
    k = max(int(active.sum(1).max()), 1)
    cand = torch.where(active, diff.abs() + 1, torch.zeros_like(diff)).topk(min(k, diff.shape[1]), dim=1).indices  # [n, k]
    ok = torch.gather(active, 1, cand)
    C = torch.gather(diff, 1, cand)[..., None] * W[cand]  # [n, k, d] each candidate's exchange
    sq = (C ** 2).sum(-1)
    left = target.float().to(W.device).clone()
    for step in range(min(n_max, k)):
        gain = 2 * torch.einsum("nkd,nd->nk", C, left) - sq  # drop of |left|^2 if the candidate is exchanged
        gain = gain.masked_fill(~ok, float("-inf"))
        best, j = gain.max(1)
        go = best > 1e-9
        if not bool(go.any()):
            break
        rows = go.nonzero().squeeze(1)
        out[rows.cpu(), step] = cand[rows, j[rows]].cpu()
        left[rows] -= C[rows, j[rows]]
        ok[rows, j[rows]] = False
        ok[~go] = False  # a row that stopped adds nothing more
    return out


def first_n_mask(order: torch.Tensor, n: int, d_sae: int) -> torch.Tensor:
    """[rows, d_sae] bool: the first n features of each row of `order` (-1 entries ignored)."""
    idx = order[:, :n]
    m = torch.zeros(len(order), d_sae + 1, dtype=torch.bool)
    m.scatter_(1, torch.where(idx < 0, d_sae, idx), True)
    return m[:, :d_sae]


def random_basis(d: int, rank: int, gen: torch.Generator) -> torch.Tensor:
    """[rank, d] an orthonormal basis of a uniformly random subspace."""
    return torch.linalg.qr(torch.randn(d, rank, generator=gen))[0].T.contiguous()


def random_subspace_delta(x: torch.Tensor, xd: torch.Tensor, rank: int, ref: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random rank-`rank` subspace interchanged from the donor, rescaled per row to the norm of `ref`."""
    return matched_norm(projected(xd - x, random_basis(x.shape[1], rank, gen)), ref)


def bootstrap_share(values: torch.Tensor, groups: torch.Tensor, n_boot: int, seed: int) -> list[float] | None:
    """95% percentile interval of the mean of `values` [n] resampling the groups (head entities) with replacement."""
    if len(values) == 0:
        return None
    uniq, inv = torch.unique(groups, return_inverse=True)
    s = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, values.double()).numpy()
    c = np.bincount(inv.numpy(), minlength=len(uniq)).astype(float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(len(uniq), size=(n_boot, len(uniq)))
    means = s[pick].sum(1) / np.maximum(c[pick].sum(1), 1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
