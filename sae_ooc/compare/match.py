"""SAE feature matching across runs, per hook both runs trained an SAE on.

- Decoder cosine: the cosine of every feature's decoder direction in run A with every one in run B, and the one-to-one
  matching that maximises their sum (`scipy.optimize.linear_sum_assignment`, the Hungarian method). Beside it the
  same matching against a random Gaussian decoder of B's shape: the level two unrelated dictionaries reach. Decoder
  directions live in each model's own residual basis, so across separately trained models (other seeds) the cosine
  says little; it is the measure for SAEs of one model (or of models that share their embedding).
- Activation correlation on the same prompts: each run's SAE encodes its own model's harvested activations of the
  same token rows; the Pearson correlation of every A feature with every B feature, the one-to-one matching that
  maximises it (features active on those rows only), and the correlation of the decoder-matched pairs. It needs the
  runs to share their task and harvest (the same token table, checked by its sha256 in activations/manifest.json);
  otherwise it is left out and the result says why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from sae_ooc.activations.manifest import CacheManifest
from sae_ooc.errors import UserError

MAX_ROWS = 4096  # token rows encoded per hook: correlations of a few thousand rows are stable to ~0.02


def _unit_rows(w: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(w, axis=1, keepdims=True)
    return np.divide(w, n, out=np.zeros_like(w, dtype=float), where=n > 0)


def match_decoders(w_a: np.ndarray, w_b: np.ndarray) -> dict:
    """One-to-one matching of the rows (features, [d_sae, d_in]) of two decoders by cosine: {"perm": B's feature for
    each A feature (-1: none, when A has more), "cos": the matched cosines, "mean_cos", "median_cos", "frac_above_0.9"}."""
    cos = _unit_rows(np.asarray(w_a, dtype=float)) @ _unit_rows(np.asarray(w_b, dtype=float)).T
    rows, cols = linear_sum_assignment(cos, maximize=True)
    perm = np.full(cos.shape[0], -1, dtype=int)
    perm[rows] = cols
    matched = cos[rows, cols]
    return {"perm": perm.tolist(), "cos": matched.tolist(), "mean_cos": float(matched.mean()),
            "median_cos": float(np.median(matched)), "frac_above_0.9": float((matched > 0.9).mean())}


def random_decoder_baseline(w_a: np.ndarray, shape: tuple[int, int], seed: int = 0) -> float:
    """Mean matched cosine of A's decoder against a Gaussian decoder of `shape` (isotropic directions)."""
    rand = np.random.default_rng(seed).standard_normal(shape)
    return match_decoders(w_a, rand)["mean_cos"]


def correlation_matrix(f_a: np.ndarray, f_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson correlation [d_sae_a, d_sae_b] of feature activations [rows, d_sae] on the same rows, and the masks of
    features with any variance there (a feature silent on every row has no correlation: 0 in the matrix)."""
    a = f_a - f_a.mean(0)
    b = f_b - f_b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    live_a, live_b = na > 1e-12, nb > 1e-12
    a = np.divide(a, na, out=np.zeros_like(a), where=live_a)
    b = np.divide(b, nb, out=np.zeros_like(b), where=live_b)
    return a.T @ b, live_a, live_b


def match_activations(f_a: np.ndarray, f_b: np.ndarray, perm: list[int] | None = None) -> dict:
    """One-to-one matching by activation correlation over the features live in each run, and (given the decoder
    matching `perm`) the correlation of the decoder-matched pairs whose features are both live."""
    corr, live_a, live_b = correlation_matrix(np.asarray(f_a, dtype=float), np.asarray(f_b, dtype=float))
    ia, ib = np.flatnonzero(live_a), np.flatnonzero(live_b)
    out = {"n_live_a": int(len(ia)), "n_live_b": int(len(ib)), "n_rows": int(len(f_a))}
    if len(ia) and len(ib):
        sub = corr[np.ix_(ia, ib)]
        r, c = linear_sum_assignment(sub, maximize=True)
        m = sub[r, c]
        # null: the same matching with B's rows shuffled (no shared prompt left), what the maximum finds by chance
        shuf, _, _ = correlation_matrix(np.asarray(f_a, dtype=float), np.asarray(f_b, dtype=float)[np.random.default_rng(0).permutation(len(f_b))])
        s = shuf[np.ix_(ia, ib)]
        rs, cs = linear_sum_assignment(s, maximize=True)
        out.update(mean_corr=float(m.mean()), median_corr=float(np.median(m)), frac_above_0_5=float((m > 0.5).mean()),
                   shuffled_rows_mean_corr=float(s[rs, cs].mean()), perm={int(ia[i]): int(ib[j]) for i, j in zip(r, c)})
    if perm is not None:
        pairs = [(i, j) for i, j in enumerate(perm) if j >= 0 and live_a[i] and live_b[j]]
        if pairs:
            out["decoder_matched_mean_corr"] = float(np.mean([corr[i, j] for i, j in pairs]))
    return out


# reading runs ---------------------------------------------------------------------------------------------------
def _decoder(run: Path, hook: str) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(Path(run) / "saes" / hook / "sae_weights.safetensors"))["W_dec"]


def shared_hooks(run_a: Path, run_b: Path) -> list[str]:
    from sae_ooc.saes.store import saved_hooks

    b = set(saved_hooks(Path(run_b) / "saes"))
    return [h for h in saved_hooks(Path(run_a) / "saes") if h in b]


def same_prompts(run_a: Path, run_b: Path) -> str | None:
    """None when both runs harvested the same token table (the same prompts in the same rows), else why not."""
    def manifest(run):
        try:
            return CacheManifest.load_if(Path(run) / "activations")
        except UserError:  # unreadable: no cache to share prompts with
            return None

    ma, mb = manifest(run_a), manifest(run_b)
    if ma is None or mb is None:
        return f"{run_a if ma is None else run_b} has no activation cache (activations/manifest.json)"
    if ma.tokens_sha256 != mb.tokens_sha256:
        return "the runs' tasks differ (their harvested token tables differ): no shared prompts to correlate on"
    return None


def _features(run: Path, hook: str, rows: np.ndarray) -> np.ndarray:
    import torch

    from sae_ooc.activations.cache import open_cache
    from sae_ooc.saes.store import load_sae, sae_dir

    sae = load_sae(sae_dir(Path(run) / "saes", hook))
    x = open_cache(Path(run) / "activations").read(hook, torch.as_tensor(rows))
    with torch.no_grad():
        return sae.encode(x.to(sae.W_dec.dtype)).float().numpy()


def compare_saes(run_a: Path, run_b: Path, max_rows: int = MAX_ROWS) -> dict:
    """Per shared hook: decoder matching (with its random baseline) and, when the prompts are shared, activation
    correlation on up to `max_rows` evenly spaced token rows."""
    why_not = same_prompts(run_a, run_b)
    rows = None
    if why_not is None:
        n = CacheManifest.load(Path(run_a) / "activations").n_tokens
        rows = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(int))
    out = {"hooks": {}, "activation_correlation": why_not or f"on {len(rows)} token rows shared by both runs"}
    for hook in shared_hooks(run_a, run_b):
        w_a, w_b = _decoder(run_a, hook), _decoder(run_b, hook)
        res: dict = {"d_sae": [int(w_a.shape[0]), int(w_b.shape[0])], "d_in": [int(w_a.shape[1]), int(w_b.shape[1])]}
        perm = None
        if w_a.shape[1] == w_b.shape[1]:
            dec = match_decoders(w_a, w_b)
            perm = dec["perm"]
            res.update(decoder={k: v for k, v in dec.items() if k != "cos"}, decoder_random_baseline=random_decoder_baseline(w_a, w_b.shape))
        else:  # models of other widths: no shared space for decoder directions; activations still correlate
            res["decoder"] = f"not compared: d_in {w_a.shape[1]} vs {w_b.shape[1]}"
        if rows is not None:
            res["activations"] = match_activations(_features(run_a, hook, rows), _features(run_b, hook, rows), perm)
        out["hooks"][hook] = res
    return out
