"""Ground-truth alignment: which single SAE feature (and how well a linear probe on the raw activations) detects
each value of each planted task variable (head, r1, r2, bridge, answer) at each position, by AUROC.
"""

from __future__ import annotations

import torch

from sae_ooc.activations.cache import ROLES, ActivationCache
from sae_ooc.saes.reconstruction import feature_acts
from sae_ooc.stats import tie_ranks
from sae_ooc.threads import torch_threads

VARIABLES = ("head", "r1", "r2", "bridge", "answer")


def auroc_matrix(scores: torch.Tensor, labels: torch.Tensor, values: torch.Tensor, chunk: int = 512,
                 ranks: torch.Tensor | None = None) -> torch.Tensor:
    """AUROC of every score column for every value, one-vs-rest: [n_columns, n_values].

    Mann-Whitney U from tie-averaged ranks: AUROC = (sum of positive ranks - P(P+1)/2) / (P * N).
    `ranks` (from `column_ranks(scores)`) saves recomputing them when the same scores serve several labelings.
    """
    n = len(labels)
    onehot = (labels[:, None] == values[None, :]).double()
    npos = onehot.sum(0)
    nneg = n - npos
    n_cols = scores.shape[1] if ranks is None else ranks.shape[1]
    out = torch.empty(n_cols, len(values), dtype=torch.float64)
    for s in range(0, n_cols, chunk):
        r = tie_ranks(scores[:, s : s + chunk].float()) if ranks is None else ranks[:, s : s + chunk].double()
        out[s : s + chunk] = (r.T @ onehot - npos * (npos + 1) / 2) / (npos * nneg).clamp(min=1)
    return out


def column_ranks(scores: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Tie-averaged ranks of every column, stored as float32 (exact: ranks are multiples of 0.5 below 2^23)."""
    return torch.cat([tie_ranks(scores[:, s : s + chunk].float()).float() for s in range(0, scores.shape[1], chunk)], dim=1)


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
    w = (torch.randn(x.shape[1], sum(sizes), generator=g) * 0.01).requires_grad_()
    b = torch.zeros(sum(sizes), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    with torch.enable_grad(), torch_threads(1):
        for _ in range(steps):
            opt.zero_grad()
            logits = xs @ w + b
            loss = sum(torch.nn.functional.cross_entropy(logits[targets[v][0], o : o + n], targets[v][1])
                       for v, o, n in zip(names, offsets, sizes))
            loss.backward()
            opt.step()
    w, b = w.detach(), b.detach()
    return {v: (lambda z, o=o, n=n: ((z - mu) / sd) @ w[:, o : o + n] + b[o : o + n]) for v, o, n in zip(names, offsets, sizes)}


def _subsample(rows: torch.Tensor, cap: int, seed: int) -> torch.Tensor:
    if len(rows) <= cap:
        return rows
    g = torch.Generator().manual_seed(seed)
    return rows[torch.randperm(len(rows), generator=g)[:cap].sort().values]


@torch.no_grad()
def alignment(sae, cache: ActivationCache, hook_name: str, heldout: torch.Tensor, ecfg, names: list[str] | None = None) -> dict:
    """Which single SAE feature (and how well a linear probe) detects each value of each planted variable.

    For every position and variable, values with at least `min_positives` tokens in both slices are
    scored: the best feature per value is chosen on the selection slice (non-held-out sequences, at most
    `max_select_tokens` per position) and its AUROC reported on the held-out slice; the probe is trained on
    the selection slice and scored on the held-out one. Returns per (variable, position) summaries, the
    per-value table, and the best label per feature.
    """
    tok = cache.tokens()
    results: dict[str, dict] = {}
    label_best: dict[int, dict] = {}
    name = (lambda v: names[v]) if names else (lambda v: str(v))
    for p_idx, pos_name in enumerate(ROLES):
        at = tok["pos"] == p_idx
        sel_all = (at & ~heldout).nonzero().squeeze(1)
        ev_all = (at & heldout).nonzero().squeeze(1)
        if len(sel_all) == 0 or len(ev_all) == 0:
            continue
        sel_all = _subsample(sel_all, ecfg.max_select_tokens, ecfg.seed)
        x_sel, x_ev = cache.read(hook_name, sel_all), cache.read(hook_name, ev_all)
        f_sel, f_ev = feature_acts(sae, x_sel).cpu(), feature_acts(sae, x_ev).cpu()
        per_var = {}
        for var in VARIABLES:
            y_sel_all, y_ev_all = tok[var][sel_all].long(), tok[var][ev_all].long()
            ms, me = y_sel_all >= 0, y_ev_all >= 0
            y_sel, y_ev = y_sel_all[ms], y_ev_all[me]
            if len(y_sel) == 0 or len(y_ev) == 0:
                continue
            vals = torch.unique(y_sel)  # the probe's classes: every value seen in the selection slice
            cnt_sel = (y_sel[:, None] == vals[None, :]).sum(0)
            cnt_ev = (y_ev[:, None] == vals[None, :]).sum(0)
            ok = (cnt_sel >= ecfg.min_positives) & (cnt_ev >= ecfg.min_positives) & (cnt_ev < len(y_ev)) & (cnt_sel < len(y_sel))
            if ok.any():
                per_var[var] = (ms, me, y_sel, y_ev, vals, vals[ok])
        if not per_var:
            continue
        probes = train_probes(x_sel, {v: (ms, torch.searchsorted(vals, y_sel), len(vals)) for v, (ms, _, y_sel, _, vals, _) in per_var.items()},
                              ecfg.probe_steps, ecfg.probe_lr, ecfg.probe_weight_decay, ecfg.seed)
        thr = ecfg.auroc_threshold
        rank_cache: dict[tuple, torch.Tensor] = {}

        def ranks_of(f: torch.Tensor, mask: torch.Tensor, tag: str) -> torch.Tensor:
            key = (tag, int(mask.sum()), hash(mask.numpy().tobytes()))  # head, r1, answer share one mask; r2, bridge another
            if key not in rank_cache:
                rank_cache[key] = column_ranks(f[mask])
            return rank_cache[key]

        for var, (ms, me, y_sel, y_ev, vals, scored) in per_var.items():
            au_sel = auroc_matrix(f_sel[ms], y_sel, scored, ranks=ranks_of(f_sel, ms, "sel"))  # [d_sae, n_values]
            au_ev = auroc_matrix(f_ev[me], y_ev, scored, ranks=ranks_of(f_ev, me, "ev"))
            best = au_sel.argmax(0)
            best_ev = au_ev[best, torch.arange(len(scored))]
            all_logits = probes[var](x_ev[me])
            logits = all_logits[:, torch.searchsorted(vals, scored)]
            au_probe = auroc_matrix(logits, y_ev, scored).diagonal()
            # AUROC >= 0.9 is a loose bar when a value is partly predictable from context (the bridge is one of
            # the head's ~k tails); the probe's exact-value accuracy tells decoding from guessing
            probe_acc = float((vals[all_logits.argmax(1)] == y_ev).double().mean())
            results[f"{var}@{pos_name}"] = {
                "variable": var, "position": pos_name, "n_values": len(scored), "n_select": int(ms.sum()), "n_heldout": int(me.sum()),
                "frac_detected_features": float((best_ev >= thr).double().mean()),
                "frac_detected_probe": float((au_probe >= thr).double().mean()),
                "mean_auroc_features": float(best_ev.mean()),
                "mean_auroc_probe": float(au_probe.mean()),
                "probe_accuracy": probe_acc,
                "values": [
                    {"value": name(int(v)), "id": int(v), "feature": int(f), "auroc_feature": round(float(a), 4), "auroc_probe": round(float(q), 4)}
                    for v, f, a, q in zip(scored, best, best_ev, au_probe)
                ],
            }
            # best label per feature: chosen on the selection slice, confirmed on the held-out slice. AUROC alone
            # also passes a feature that fires on many values as long as this one ranks high, so a label also
            # needs precision: most held-out tokens the feature fires on must carry the value
            top_sel, top_idx = au_sel.max(1)
            acts_ev = f_ev[me]
            for f in (top_sel >= thr).nonzero().squeeze(1).tolist():
                j = int(top_idx[f])
                a_ev = float(au_ev[f, j])
                fires = acts_ev[:, f] > 0
                precision = float((y_ev[fires] == scored[j]).double().mean()) if fires.any() else 0.0
                if a_ev >= thr and precision >= ecfg.label_min_precision and (f not in label_best or a_ev > label_best[f]["auroc"]):
                    label_best[f] = {"feature": f, "variable": var, "position": pos_name, "value": name(int(scored[j])),
                                     "auroc": round(a_ev, 4), "precision": round(precision, 4)}
    labels = [label_best[f] for f in sorted(label_best)]
    return {"by_variable_position": results, "feature_labels": labels}
