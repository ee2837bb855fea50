"""SAEBench's feature absorption (`sae_bench.evals.absorption`, Chanin et al. 2024), on a planted variable.

SAEBench measures absorption on first letters: a token's first letter is read by a linear probe on the stream, the
SAE's "main" latents for that letter are found by k-sparse probing, and on tokens where the probe fires a latent that
is not a main one but points along the probe and carries the probe's projection counts as having absorbed it. That
needs a tokenizer (the vocabulary's alphabetic tokens, ICL spelling prompts) and an LLM; here a letter is a value of a
planted variable at one position and a token is a distinct prefix (`sae_ooc.saes.prefixes`): probes and sparse probes
are trained on selection prefixes, absorption is measured on held-out ones, as SAEBench trains on its train tokens and
measures on its test tokens. Each step follows SAEBench's code:

- ground-truth probe (`probing.train_multi_probe`): one-vs-rest logistic probes on the raw stream, BCE with
  pos_weight = n_neg / n_pos, Adam (lr 0.01 decayed exponentially to 1e-5, weight decay 1e-6), 100 epochs of 4096-row
  batches;
- k-sparse probes (`k_sparse_probing.train_k_sparse_probes`): the same multi-probe on the SAE's latents with an L1
  penalty 0.01 (50 epochs); for each value the k latents with the largest (signed) weight, then sklearn
  LogisticRegression(max_iter=500, class_weight="balanced") on those k; scored by F1 of `score > 0` on held-out rows;
- main latents (`add_feature_splits_to_metrics_df`): grow k from 1 while F1 rises by more than 0.03 (k ≤ 10);
- per held-out row of the value on which the probe fires (`FeatureAbsorptionCalculator.calculate_absorption`): the
  absorption fraction and full absorption, with SAEBench's thresholds; per value, their sums over the probe's true
  positives; the metric is the mean over values. SAEBench evaluates only when at least 20 letters have probe F1 > 0.6;
  here at least min(20, number of values) must.
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-8
FULL_ABSORPTION_PROBE_COS_THRESHOLD = 0.025
ABSORPTION_FRACTION_PROBE_COS_THRESHOLD = 0.1
ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD = 0.4
ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS = 3
TOPK_FEATS = 10
F1_JUMP_THRESHOLD = 0.03
MAX_K_VALUE = 10
MIN_GT_PROBE_F1 = 0.6
MIN_FEATS_FOR_EVAL = 20


def train_multi_probe(x: torch.Tensor, y_onehot: torch.Tensor, num_epochs: int = 100, lr: float = 0.01, end_lr: float = 1e-5,
                      weight_decay: float = 1e-6, l1_decay: float = 0.0, batch_size: int = 4096, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """SAEBench's `train_multi_probe` (and, with `l1_decay`, `train_sparse_multi_probe`): one-vs-rest logistic probes
    trained jointly; returns (weights [n_probes, d], bias [n_probes])."""
    gen = torch.Generator().manual_seed(seed)
    x = x.float()
    y = y_onehot.float()
    probe = torch.nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():  # nn.Linear's init, from the seeded generator instead of the global RNG
        bound = 1 / x.shape[1] ** 0.5
        probe.weight.uniform_(-bound, bound, generator=gen)
        probe.bias.uniform_(-bound, bound, generator=gen)
    npos = y.sum(0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=(len(y) - npos) / npos.clamp(min=1))
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    gamma = (end_lr / lr) ** (1 / num_epochs)  # SAEBench's _get_exponential_decay_scheduler, stepped per epoch
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    with torch.enable_grad():
        for _ in range(num_epochs):
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                opt.zero_grad()
                loss = loss_fn(probe(x[idx]), y[idx])
                if l1_decay:
                    loss = loss + l1_decay * probe.weight.abs().sum(dim=-1).mean()
                loss.backward()
                opt.step()
            sched.step()
    return probe.weight.detach(), probe.bias.detach()


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    """sklearn.metrics.f1_score for binary labels (0 when there is no true or predicted positive)."""
    tp = float((y & pred).sum())
    denom = float(y.sum() + pred.sum())
    return 2 * tp / denom if denom else 0.0


def main_latents(f_sel: torch.Tensor, is_sel: np.ndarray, f_ev: torch.Tensor, is_ev: np.ndarray, l1_weights: torch.Tensor,
                 max_k: int = MAX_K_VALUE, jump: float = F1_JUMP_THRESHOLD) -> tuple[list[int], list[float]]:
    """The value's main ("split") latents: k-sparse probes for k = 1, 2, ... on the latents with the largest L1-probe
    weights, kept while held-out F1 rises by more than `jump` (SAEBench stops at the first k that does not)."""
    from sklearn.linear_model import LogisticRegression  # only eval-sae needs sklearn

    feats: list[int] = []
    f1s: list[float] = []
    prev = -100.0
    for k in range(1, min(max_k, f_sel.shape[1]) + 1):
        ids = l1_weights.topk(k).indices
        xk = f_sel[:, ids].float().numpy()
        clf = LogisticRegression(max_iter=500, class_weight="balanced").fit(xk, is_sel.astype(np.int64))
        score = f_ev[:, ids].float().numpy() @ clf.coef_[0] + clf.intercept_[0]
        s = f1(is_ev, score > 0.0)
        f1s.append(s)
        if s > prev + jump:
            prev, feats = s, ids.tolist()
        else:
            break
    return feats, f1s


def absorption_row(sae_acts: torch.Tensor, act_probe_proj: float, cos_sims: torch.Tensor, main_ids: list[int]) -> tuple[float, bool]:
    """SAEBench's per-token absorption fraction and full absorption (FeatureAbsorptionCalculator.calculate_absorption)."""
    proj = sae_acts * cos_sims
    main_proj = float(proj[main_ids].sum())
    mask = torch.ones(len(proj), dtype=torch.bool)
    mask[main_ids] = False
    mask &= cos_sims >= ABSORPTION_FRACTION_PROBE_COS_THRESHOLD
    mask &= proj > 0
    absorbers = proj[mask]
    top_total = float(absorbers.topk(min(ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS, absorbers.numel())).values.sum())
    share = top_total / act_probe_proj if act_probe_proj else 0.0  # SAEBench divides by zero here; never on real data
    if main_proj >= act_probe_proj or share < ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD:
        frac = 0.0
    elif main_proj <= 0.0:
        frac = 1.0
    else:
        absorbed = min(top_total, act_probe_proj - main_proj)
        frac = float(np.clip(absorbed / (absorbed + main_proj), 0.0, 1.0))
    # full absorption: no main latent fires, the top-projecting latent is aligned with the probe, the probe fires
    # (projection >= 0) and that latent carries at least 40% of the projection
    top = proj.topk(min(TOPK_FEATS, len(proj))).indices[0]
    full = (all(float(sae_acts[i]) < EPS for i in main_ids) and float(cos_sims[top]) >= FULL_ABSORPTION_PROBE_COS_THRESHOLD
            and act_probe_proj > 0 and float(proj[top]) / act_probe_proj >= ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD)
    return frac, bool(full)


def absorption(x_sel: torch.Tensor, f_sel: torch.Tensor, y_sel: torch.Tensor, x_ev: torch.Tensor, f_ev: torch.Tensor,
               y_ev: torch.Tensor, w_dec: torch.Tensor, min_positives: int = 3, seed: int = 0) -> dict:
    """SAEBench's absorption metrics for one variable at one position (labels < 0: unlabelled rows, left out)."""
    ms, me = y_sel >= 0, y_ev >= 0
    x_sel, f_sel, y_sel, x_ev, f_ev, y_ev = x_sel[ms], f_sel[ms].float(), y_sel[ms], x_ev[me], f_ev[me].float(), y_ev[me]
    vals, cnt = torch.unique(y_sel, return_counts=True)
    values = vals[(cnt >= min_positives) & (cnt < len(y_sel)) & (y_ev[:, None] == vals[None, :]).any(0)]
    out = {"n_values": len(values), "n_heldout": len(y_ev), "evaluable": False, "n_values_probe_f1_ok": 0,
           "mean_absorption_fraction": None, "mean_full_absorption": None, "mean_num_split_features": None, "values": []}
    if len(values) < 2:
        return out
    onehot = (y_sel[:, None] == values[None, :]).float()
    w_probe, b_probe = train_multi_probe(x_sel, onehot, seed=seed)
    probe_scores = x_ev.float() @ w_probe.T + b_probe
    unit = w_probe / w_probe.norm(dim=1, keepdim=True)
    proj_ev = x_ev.float() @ unit.T  # SAEBench projects the raw activation on the unit probe direction, without bias
    dec = w_dec / w_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    probe_f1s = [f1((y_ev == v).numpy(), (probe_scores[:, j] > 0).numpy()) for j, v in enumerate(values.tolist())]
    out["n_values_probe_f1_ok"] = sum(s > MIN_GT_PROBE_F1 for s in probe_f1s)
    out["probe_f1"] = [round(s, 4) for s in probe_f1s]
    out["evaluable"] = out["n_values_probe_f1_ok"] >= min(MIN_FEATS_FOR_EVAL, len(values))
    if not out["evaluable"]:  # SAEBench stops here too ("insufficient first-letter features"), before its absorption experiment
        return out
    w_l1, _ = train_multi_probe(f_sel, onehot, num_epochs=50, l1_decay=0.01, seed=seed)
    recs = []
    for j, v in enumerate(values.tolist()):
        is_sel, is_ev = (y_sel == v).numpy(), (y_ev == v).numpy()
        probe_f1 = probe_f1s[j]
        feats, f1s = main_latents(f_sel, is_sel, f_ev, is_ev, w_l1[j])
        tp_rows = ((y_ev == v) & (probe_scores[:, j] > 0)).nonzero().squeeze(1)
        cos = dec @ unit[j]
        scores = [absorption_row(f_ev[r], float(proj_ev[r, j]), cos, feats) for r in tp_rows.tolist()]
        n = len(scores)
        recs.append({"value": v, "probe_f1": round(probe_f1, 4), "split_feats": feats, "sparse_f1": [round(s, 4) for s in f1s],
                     "num_probe_true_positives": n,
                     "mean_absorption_fraction": sum(s[0] for s in scores) / n if n else None,
                     "full_absorption_rate": sum(s[1] for s in scores) / n if n else None})
    out["values"] = recs
    scored = [r for r in recs if r["num_probe_true_positives"]]  # SAEBench's groupby has a row only for letters with one
    if scored:
        out["mean_absorption_fraction"] = float(np.mean([r["mean_absorption_fraction"] for r in scored]))
        out["mean_full_absorption"] = float(np.mean([r["full_absorption_rate"] for r in scored]))
        out["mean_num_split_features"] = float(np.mean([len(r["split_feats"]) - 1 for r in scored]))
    return out
