"""How well an SAE reconstructs cached activations: explained variance, FVU, MSE, L0, dead and dense features."""

from __future__ import annotations

import math

import torch

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.errors import UserError


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
    """Explained variance, FVU, MSE, mean L0, dead and dense features of `sae` on cache rows `rows`.

    Explained variance is 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the rows (SAELens's
    `metrics/explained_variance`); a feature is dead if it never fires on these rows.
    """
    sae.eval()
    n = len(rows)
    if n == 0:
        raise UserError(f"no held-out tokens to evaluate the SAE of {hook_name} on; raise sae.eval_fraction")
    d = cache.d_model
    sq_err = 0.0
    sum_x = torch.zeros(d, dtype=torch.float64)
    sum_x2 = 0.0
    l0_sum = 0.0
    fire_count = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    for s in range(0, n, batch_size):
        x = cache.read(hook_name, rows[s : s + batch_size]).to(sae.device)
        acts = sae.encode(x)
        x_hat = sae.decode(acts)
        x64, xh64 = x.double(), x_hat.double()
        sq_err += float(((x64 - xh64) ** 2).sum())
        sum_x += x64.sum(0).cpu()
        sum_x2 += float((x64**2).sum())
        active = (acts != 0).double()
        l0_sum += float(active.sum())
        fire_count += active.sum(0).cpu()
    total_var = sum_x2 - float((sum_x**2).sum()) / n
    ev = 1.0 - sq_err / total_var if total_var > 0 else float("nan")
    freq = fire_count / n
    return {
        "explained_variance": ev,
        "fvu": 1.0 - ev,
        "mse": sq_err / (n * d),
        "mse_per_token": sq_err / n,
        "l0": l0_sum / n,
        "dead_fraction": float((fire_count == 0).double().mean()),
        "n_dead": int((fire_count == 0).sum()),
        "dense_fraction": float((freq > dense_threshold).double().mean()),
        "n_dense": int((freq > dense_threshold).sum()),
        "n_tokens": n,
    }


def finite(x: float) -> float | None:
    """JSON has no NaN: None stands in for it."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x
