"""How well an SAE reconstructs cached activations: explained variance, FVU, MSE, L0, dead and dense features."""

from __future__ import annotations

import math

import torch

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.errors import UserError
from sae_ooc.saes.dead import DEAD_ON, dead_on_heldout_prefixes


def check_d_in(sae, cache: ActivationCache, hook_name: str, where: str) -> None:
    if int(sae.cfg.d_in) != cache.d_model:
        raise UserError(
            f"SAE in {where} has d_in {sae.cfg.d_in} but the activations of {hook_name} in {cache.root} have d_model "
            f"{cache.d_model}; retrain the SAE on this cache (`sae-ooc train-sae --force`) or pass the cache it was trained on"
        )


@torch.no_grad()
def feature_acts(sae, x: torch.Tensor) -> torch.Tensor:
    return sae.encode(x.to(sae.device, sae.dtype))


@torch.no_grad()
def reconstruction_metrics(sae, cache: ActivationCache, hook_name: str, rows: torch.Tensor, dense_threshold: float = 0.1,
                           batch_size: int = 8192) -> dict:
    """Explained variance, FVU, MSE, mean L0, dead and dense features of `sae` on cache rows `rows`, pooled and per
    position (`by_position`: {role: explained_variance, fvu, mse, l0, n_tokens}).

    Explained variance is 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the rows (SAELens's
    `metrics/explained_variance`); `rows` are held-out rows, so a feature is dead as `dead_on_heldout_prefixes` says
    (`dead_on` names the rule). Pooled over positions,
    mean(x) is one mean for all of them, so the between-position variance (large: the positional embedding)
    inflates the denominator; per position each has its own mean, which is the stricter number.
    """
    sae.eval()
    n = len(rows)
    if n == 0:
        raise UserError(f"no held-out tokens to evaluate the SAE of {hook_name} on; raise sae.eval_fraction")
    pos_all = cache.tokens()["pos"].long()
    d, n_pos = cache.d_model, max(len(cache.roles), int(pos_all.max()) + 1 if len(pos_all) else 0)
    sq_err = torch.zeros(n_pos, dtype=torch.float64)
    sum_x = torch.zeros(n_pos, d, dtype=torch.float64)
    sum_x2 = torch.zeros(n_pos, dtype=torch.float64)
    l0_sum = torch.zeros(n_pos, dtype=torch.float64)
    count = torch.zeros(n_pos, dtype=torch.float64)
    fire_count = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    for s in range(0, n, batch_size):
        r = rows[s : s + batch_size]
        pos = pos_all[r]
        x = cache.read(hook_name, r).to(sae.device)
        acts = sae.encode(x)
        x64 = x.double().cpu()
        active = (acts != 0).double().cpu()
        sq_err.index_add_(0, pos, ((x64 - sae.decode(acts).double().cpu()) ** 2).sum(1))
        sum_x.index_add_(0, pos, x64)
        sum_x2.index_add_(0, pos, (x64**2).sum(1))
        l0_sum.index_add_(0, pos, active.sum(1))
        count.index_add_(0, pos, torch.ones(len(r), dtype=torch.float64))
        fire_count += active.sum(0)
    freq = fire_count / n
    by_position = {cache.position_name(p): _ev(float(sq_err[p]), sum_x[p], float(sum_x2[p]), float(l0_sum[p]), int(count[p]), d)
                   for p in range(n_pos) if count[p] > 0}
    return {
        **_ev(float(sq_err.sum()), sum_x.sum(0), float(sum_x2.sum()), float(l0_sum.sum()), n, d),
        "mse_per_token": float(sq_err.sum()) / n,
        "dead_fraction": float(dead_on_heldout_prefixes(fire_count).double().mean()),
        "n_dead": int(dead_on_heldout_prefixes(fire_count).sum()),
        "dead_on": DEAD_ON,
        "dense_fraction": float((freq > dense_threshold).double().mean()),
        "n_dense": int((freq > dense_threshold).sum()),
        "by_position": by_position,
    }


def _ev(sq_err: float, sum_x: torch.Tensor, sum_x2: float, l0_sum: float, n: int, d: int) -> dict:
    """Explained variance, FVU, MSE and mean L0 of `n` rows from their sums (total variance about their own mean)."""
    total_var = sum_x2 - float((sum_x**2).sum()) / n
    ev = 1.0 - sq_err / total_var if total_var > 0 else float("nan")
    return {"explained_variance": finite(ev), "fvu": finite(1.0 - ev), "mse": sq_err / (n * d), "l0": l0_sum / n, "n_tokens": n}


def finite(x: float) -> float | None:
    """JSON has no NaN: None stands in for it."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x
