"""SAEBench's k-sparse probing (`sae_bench.evals.sparse_probing`), run on a planted variable instead of a text dataset.

SAEBench (Karvonen et al. 2025; `sparse_probing/probe_training.py`) asks, per class of a labelled dataset: one-vs-rest,
on a *balanced* set (the class's examples and as many drawn from the other classes, spread evenly over them), pick the
k SAE latents whose mean activation differs most between the two sides (|mean(pos) − mean(neg)|, on the training set),
fit an L2 logistic regression (sklearn, C = 1, max_iter = 1000) on those k latents and report its test accuracy; the
metric is the mean over classes, for k = 1, 2, 5, beside the same probe on the k most different raw model dimensions
(`llm_top_k`) and on all of them (`llm`). The functions below follow that code step by step. What differs is the data
alone: SAEBench's classes are text datasets (bias_in_bios professions, ...) tokenized and mean-pooled over a sequence,
which needs a tokenizer and an LLM; here a class is a value of a planted variable at one position, an example is one
distinct prefix's activation there (`sae_ooc.saes.prefixes`), training examples are selection prefixes and test
examples held-out prefixes. A class is scored when it has `min_positives` training examples and one test example.
SAEBench draws with torch's global RNG; here every draw comes from a seeded generator. The logistic regressions are
solved in one batch (`batched_logreg`: the same objective's optimum, thousands of problems at once) rather than by one
sklearn fit each; SAEBench's `llm` probe on all dimensions is a GPU torch probe, here the same C = 1 regression.
`scripts/check_saebench.py` runs SAEBench's own functions on a run's activations beside these (identical accuracies on
the default run).
"""

from __future__ import annotations

import math

import numpy as np
import torch

K_VALUES = (1, 2, 5)  # SAEBench's SparseProbingEvalConfig.k_values


def balanced_probe_data(x: torch.Tensor, y: torch.Tensor, cls: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """SAEBench's `prepare_probe_data` on rows `x` of classes `y`: class `cls`'s rows (label 1) and as many rows of the
    other classes (label 0), ceil(n / n_other) drawn from each other class, then n drawn from those; shuffled. (Each
    class's draw is a uniform subset, as SAEBench's randperm()[:k], taken at once for every class: the rows ranked
    within their class by a random key.)"""
    pos = x[y == cls]
    n = len(pos)
    classes = torch.unique(y)
    per = math.ceil(n / (len(classes) - 1))
    order = torch.argsort(torch.rand(len(y), generator=gen))
    order = order[torch.argsort(y[order], stable=True)]  # grouped by class, random within each class
    ys = y[order]
    start = torch.searchsorted(ys, ys)  # first index of each row's class in the sorted order
    rank = torch.arange(len(ys)) - start
    neg_rows = order[(ys != cls) & (rank < per)]
    neg = x[neg_rows[torch.randperm(len(neg_rows), generator=gen)[:n]]]
    xx = torch.cat([pos, neg])
    yy = torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(len(neg), dtype=torch.long)])
    perm = torch.randperm(len(xx), generator=gen)
    return xx[perm], yy[perm]


def top_k_mean_diff(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """SAEBench's `get_top_k_mean_diff_mask`, as the kept indices: the k columns with the largest |mean(pos) − mean(neg)|."""
    diff = (x[y == 1].mean(0) - x[y == 0].mean(0)).abs()
    return torch.argsort(diff, descending=True)[:k]


def batched_logreg(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """The optimum of sklearn's LogisticRegression(C=1) objective, sum_i w_i logloss_i + |coef|^2 / 2 (intercept not
    penalised), for B problems at once: x [B, n, k], y [B, n] in {0, 1}, row weights w [B, n] (0 = padding). Damped
    Newton in float64; the objective is strictly convex in coef, so this reaches the optimum lbfgs approaches (one
    sklearn fit costs ~15 ms of Python, and k-sparse probing needs thousands of them). Returns (coef [B, k], intercept [B])."""
    x, y, w = x.double(), y.double(), w.double()
    b, n, k = x.shape
    xb = torch.cat([x, torch.ones(b, n, 1, dtype=x.dtype)], dim=2)
    reg = torch.ones(k + 1, dtype=x.dtype)
    reg[-1] = 0.0
    beta = torch.zeros(b, k + 1, dtype=x.dtype)

    def loss(beta):
        z = (xb @ beta[:, :, None]).squeeze(2)
        return (w * torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")).sum(1) + 0.5 * (beta * beta * reg).sum(1)

    cur = loss(beta)
    for _ in range(iters):
        p = torch.sigmoid((xb @ beta[:, :, None]).squeeze(2))
        g = (xb * (w * (p - y))[:, :, None]).sum(1) + beta * reg
        h = (xb * (w * p * (1 - p))[:, :, None]).transpose(1, 2) @ xb + torch.diag_embed(reg.expand(b, -1) + 1e-9)
        step = torch.linalg.solve(h, g[:, :, None]).squeeze(2)
        t = torch.ones(b, 1, dtype=x.dtype)
        for _ in range(20):  # backtracking: halve the step of the problems whose objective did not fall
            new = loss(beta - t * step)
            bad = new > cur + 1e-12
            if not bad.any():
                break
            t = torch.where(bad[:, None], t / 2, t)
        beta = torch.where((new <= cur + 1e-12)[:, None], beta - t * step, beta)
        cur = torch.minimum(new, cur)
        if float(g.abs().max()) < 1e-8:
            break
    return beta[:, :k], beta[:, k]


def _pad(sets: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = max(len(yy) for _, yy in sets)
    k = sets[0][0].shape[1]
    x = torch.zeros(len(sets), n, k)
    y = torch.zeros(len(sets), n)
    w = torch.zeros(len(sets), n)
    for i, (xx, yy) in enumerate(sets):
        x[i, : len(yy)], y[i, : len(yy)], w[i, : len(yy)] = xx, yy.float(), 1.0
    return x, y, w


def probe_accuracies(train: list[tuple[torch.Tensor, torch.Tensor]], test: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """Per problem, the test accuracy of the C = 1 logistic regression fitted on its training set (`batched_logreg`);
    a prediction is 1 where the logit is > 0, as sklearn's `predict`."""
    coef, icpt = batched_logreg(*_pad(train))
    out = []
    for (xe, ye), c, b in zip(test, coef, icpt):
        pred = (xe.double() @ c + b > 0).long()
        out.append(float((pred == ye).double().mean()))
    return out


def sparse_probing(f_sel: torch.Tensor, y_sel: torch.Tensor, f_ev: torch.Tensor, y_ev: torch.Tensor, ks=K_VALUES,
                   min_positives: int = 3, seed: int = 0, x_sel: torch.Tensor | None = None, x_ev: torch.Tensor | None = None) -> dict:
    """Mean one-vs-rest test accuracy over the scored classes of k-sparse probes on SAE latents `f_*` (and on the raw
    activations `x_*` when given: `llm_top_k` and `llm`, all dimensions). Labels < 0 are unlabelled rows.

    Returns {"n_classes", "n_test_rows", "sae_top_k": {str(k): acc}, "llm_top_k": {str(k): acc}, "llm": acc, "per_class": {...}}.
    """
    ms, me = y_sel >= 0, y_ev >= 0
    vals, cnt_sel = torch.unique(y_sel[ms], return_counts=True)
    cnt_ev = (y_ev[me][:, None] == vals[None, :]).sum(0)
    classes = vals[(cnt_sel >= min_positives) & (cnt_ev >= 1)]
    out = {"n_classes": len(classes), "n_test_rows": int(torch.isin(y_ev, classes).sum()), "ks": list(ks),
           "sae_top_k": {}, "llm_top_k": {}, "llm": None, "per_class": {}}
    if len(classes) < 2:  # one-vs-rest needs another class to draw negatives from
        return out
    inputs = {"sae": (f_sel, f_ev)}
    if x_sel is not None and x_ev is not None:
        inputs["llm"] = (x_sel, x_ev)
    per: dict[str, list[float]] = {}
    in_sel, in_ev = torch.isin(y_sel, classes), torch.isin(y_ev, classes)
    for kind, (a_sel, a_ev) in inputs.items():
        # SAEBench calls prepare_probe_data once per class per k (its RNG moves on); one draw per class, seeded by the
        # class, keeps every k's probe on the same examples, so the curve over k compares like with like
        draws = []
        for c in classes.tolist():
            gen = torch.Generator().manual_seed(seed * 1_000_003 + c)
            draws.append((balanced_probe_data(a_sel[in_sel], y_sel[in_sel], c, gen), balanced_probe_data(a_ev[in_ev], y_ev[in_ev], c, gen)))
        for k in ks:
            keeps = [top_k_mean_diff(xt, yt, k) for (xt, yt), _ in draws]
            per[f"{kind}_top_{k}"] = probe_accuracies([(xt[:, i], yt) for ((xt, yt), _), i in zip(draws, keeps)],
                                                      [(xe[:, i], ye) for (_, (xe, ye)), i in zip(draws, keeps)])
        if kind == "llm":
            per["llm"] = probe_accuracies([d[0] for d in draws], [d[1] for d in draws])
    for key, accs in per.items():
        mean = float(np.mean(accs))
        if key == "llm":
            out["llm"] = mean
        else:
            kind, k = key.rsplit("_top_", 1)
            out[f"{kind}_top_k"][k] = mean  # k as a string key: what JSON gives back, so a loaded result reads the same
    out["per_class"] = {key: [round(a, 4) for a in accs] for key, accs in per.items()}
    out["classes"] = [int(c) for c in classes]
    return out
