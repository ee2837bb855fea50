"""Linear probes on raw activations: fit on the selection prefixes, scored on the held-out prefixes, beside controls.

For each position, one multinomial logistic-regression probe per variable is fit on the distinct selection
prefixes and scored (exact-value accuracy) on the distinct held-out prefixes of: the trained model (the activation
cache), untrained models of the same architecture and the step-0 checkpoint (`sae_ooc.saes.controls`), and the
trained model with the selection labels shuffled. Accuracy on the selection prefixes is in-sample (a probe can
memorise a random model's prefixes) and labelled so. A claim that the stream carries a variable needs the trained
model clearly above every control: `above_controls` is true when the lower end of its 95% Wilson interval clears
the upper end of the best control's.
"""

from __future__ import annotations

import math

import torch

from sae_ooc.threads import torch_threads

Z95 = 1.959964


def train_probes(x: torch.Tensor, targets: dict[str, tuple[torch.Tensor, torch.Tensor, int]], steps: int, lr: float,
                 weight_decay: float, seed: int) -> dict:
    """One multinomial logistic-regression probe per variable on standardised activations, trained jointly.

    `targets[var] = (row_mask, class_ids of those rows, n_classes)`. The heads share no parameters, so the
    summed loss trains each exactly as alone, in one full-batch loop. Returns {var: scoring function}.
    """
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = (x - mu) / sd
    g = torch.Generator().manual_seed(seed)
    names = list(targets)
    sizes = [targets[v][2] for v in names]
    w0 = torch.randn(x.shape[1], sum(sizes), generator=g) * 0.01
    # one weight block per variable, each multiplied only by the rows it labels: the same loss as slicing one big
    # logit matrix, without the full-size gradient scatter that slicing costs every step (~2x faster)
    ws = [blk.clone().requires_grad_() for blk in w0.split(sizes, dim=1)]
    bs = [torch.zeros(n, requires_grad=True) for n in sizes]
    xv = [xs[targets[v][0]] for v in names]
    ys = [targets[v][1] for v in names]
    opt = torch.optim.Adam([*ws, *bs], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad(), torch_threads(1):
        for _ in range(steps):
            opt.zero_grad()
            loss = sum(torch.nn.functional.cross_entropy(xi @ w + b, y) for xi, w, b, y in zip(xv, ws, bs, ys))
            loss.backward()
            opt.step()
    return {v: (lambda z, w=w.detach(), b=b.detach(): ((z - mu) / sd) @ w + b) for v, w, b in zip(names, ws, bs)}


def lda_probes(x: torch.Tensor, targets: dict[str, tuple[torch.Tensor, torch.Tensor, int]], shrinkage: float) -> dict:
    """Closed-form linear probes: linear discriminant analysis per variable on standardised activations (class means,
    the pooled within-class covariance S shrunk to (1 - shrinkage) S + shrinkage I, class priors from the counts;
    scikit-learn's `LinearDiscriminantAnalysis(solver="lsqr")` with that covariance). Shrinking towards the identity
    of the standardised activations, not towards S's own scale, keeps the solve defined where S is zero: at the
    embeddings every prefix of a class has the same activation.

    Same arguments and return as `train_probes`. About 160x cheaper in CPU than 300 full-batch Adam steps (results/benchmarks.md): eval-sae fits
    eight probes (the trained model and its controls) per variable, position and hook, which took most of the stage.
    """
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = ((x - mu) / sd).double()
    d = x.shape[1]
    out = {}
    for v, (rows, y, k) in targets.items():
        z = xs[rows]
        counts = torch.bincount(y, minlength=k).double()
        means = torch.zeros(k, d, dtype=torch.float64).index_add_(0, y, z) / counts.clamp(min=1)[:, None]
        r = z - means[y]
        cov = r.T @ r / max(len(z), 1)  # the prior-weighted mean of the classes' (biased) covariances
        cov = (1 - shrinkage) * cov + shrinkage * torch.eye(d, dtype=torch.float64)
        w = torch.linalg.lstsq(cov, means.T).solution  # [d, k]
        b = -0.5 * (means * w.T).sum(1) + torch.log(counts / counts.sum())
        out[v] = (lambda q, w=w.float(), b=b.float(): ((q - mu) / sd) @ w + b)
    return out


def fit_predict(x_sel: torch.Tensor, xs: list[torch.Tensor], labels_sel: dict[str, torch.Tensor], ecfg) -> dict[str, tuple[torch.Tensor, list]]:
    """Fit a probe per variable on the selection rows it labels (classes: the values seen there); return per
    variable (classes, [logits on each tensor of `xs`]). `ecfg.probe`: "lda" (closed form, `lda_probes`) or
    "logistic" (`train_probes`; the default where `ecfg` has no `probe`)."""
    classes = {v: torch.unique(y[y >= 0]) for v, y in labels_sel.items()}
    targets = {v: (y >= 0, torch.searchsorted(classes[v], y[y >= 0]), len(classes[v])) for v, y in labels_sel.items()}
    if getattr(ecfg, "probe", "logistic") == "lda":
        probes = lda_probes(x_sel.float(), targets, ecfg.probe_shrinkage)
    else:
        probes = train_probes(x_sel.float(), targets, ecfg.probe_steps, ecfg.probe_lr, ecfg.probe_weight_decay, ecfg.seed)
    return {v: (classes[v], [probes[v](x.float()) for x in xs]) for v in labels_sel}


def shuffled(y: torch.Tensor, seed: int) -> torch.Tensor:
    """`y` with its labelled entries (>= 0) permuted among themselves (seeded)."""
    out = y.clone()
    idx = (y >= 0).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(seed)
    out[idx] = y[idx[torch.randperm(len(idx), generator=g)]]
    return out


def accuracy(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> float | None:
    """Exact-value accuracy over the rows in `mask` (None when there are none)."""
    if mask is None or not mask.any():
        return None
    return float((pred[mask] == y[mask]).double().mean())


def wilson(acc: float | None, n: int, z: float = Z95) -> list[float] | None:
    """95% Wilson score interval of a proportion `acc` observed on `n` trials."""
    if acc is None or n == 0:
        return None
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, min(acc, centre - half)), min(1.0, max(acc, centre + half))]  # contains acc, float rounding aside


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def probe_table(x_sel, x_ev, labels: dict[str, tuple[torch.Tensor, torch.Tensor]], known_ev: torch.Tensor | None,
                controls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]], ecfg) -> tuple[dict[str, dict], dict]:
    """Probe accuracies per variable for the trained model and every control; also the trained probe's
    (classes, held-out logits) per variable, for its per-value AUROC."""
    labels_sel = {v: ys for v, (ys, _) in labels.items()}
    trained = fit_predict(x_sel, [x_ev, x_sel], labels_sel, ecfg)
    runs: dict[str, list[dict]] = {kind: [fit_predict(xs, [xe], labels_sel, ecfg) for xs, xe in pairs] for kind, pairs in controls.items()}
    runs["shuffled"] = [fit_predict(x_sel, [x_ev], {v: shuffled(y, ecfg.seed + 1 + i) for v, y in labels_sel.items()}, ecfg)
                        for i in range(ecfg.n_controls)]
    out, logits = {}, {}
    for v, (y_sel, y_ev) in labels.items():
        me = y_ev >= 0
        subsets = {"": me, "_known": None if known_ev is None else me & known_ev, "_unknown": None if known_ev is None else me & ~known_ev}
        classes, (lg_ev, lg_sel) = trained[v]
        ms = y_sel >= 0
        counts = (y_sel[ms][:, None] == classes[None, :]).sum(0)
        rec = {"n_select": int(ms.sum()), "n_heldout": int(me.sum()), "n_classes": len(classes),
               "selection_acc_in_sample": accuracy(classes[lg_sel.argmax(1)], y_sel, ms),
               "majority_acc": accuracy(classes[counts.argmax()].expand(len(y_ev)), y_ev, me)}
        for tag, m in subsets.items():
            rec[f"heldout_acc{tag}"] = accuracy(classes[lg_ev.argmax(1)], y_ev, m)
            if tag:
                rec[f"n_heldout{tag}"] = None if m is None else int(m.sum())
        rec["heldout_ci95"] = wilson(rec["heldout_acc"], rec["n_heldout"])
        control_accs = []
        for kind, results in runs.items():
            accs = {tag: [accuracy(r[v][0][r[v][1][0].argmax(1)], y_ev, m) for r in results] for tag, m in subsets.items()}
            rec[f"{kind}_accs"] = accs[""]
            for tag in subsets:
                rec[f"{kind}_acc{tag}"] = _mean(accs[tag])
            control_accs += [a for a in accs[""] if a is not None]
        worst = max(control_accs, default=None)
        rec["control_max_acc"] = worst
        rec["above_controls"] = None if worst is None else bool(rec["heldout_ci95"][0] > wilson(worst, rec["n_heldout"])[1])
        out[v], logits[v] = rec, (classes, lg_ev)
    return out, logits
