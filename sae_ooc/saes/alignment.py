"""Ground-truth alignment: which single SAE feature (and how well a linear probe on the raw activations) detects
each value of each planted task variable (head, r1, r2, bridge, answer) at each position, on held-out prefixes.

Everything is chosen on the distinct selection prefixes and reported on the distinct held-out prefixes of
`sae_ooc.saes.prefixes` (the SAE's own split: no held-out prefix was seen by the SAE, the probe or the feature
search). Beside every number are its controls: for the probe, untrained models and shuffled labels
(`sae_ooc.saes.probes`); for the single-feature search, the same search on the same features with the selection
labels shuffled, which is what a chosen feature's held-out AUROC reaches by selection alone.
"""

from __future__ import annotations

import torch

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.saes.controls import Acts
from sae_ooc.saes.prefixes import VARIABLES, PositionSlice
from sae_ooc.saes.probes import probe_table, shuffled
from sae_ooc.saes.reconstruction import feature_acts
from sae_ooc.stats import tie_ranks


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


def _scorable(y_sel: torch.Tensor, y_ev: torch.Tensor) -> bool:
    """A probe can be tested: two classes to fit, and a held-out prefix whose value the selection side has."""
    vals = torch.unique(y_sel[y_sel >= 0])
    return len(vals) >= 2 and bool(torch.isin(y_ev[y_ev >= 0], vals).any())


def _best_on_heldout(au_sel: torch.Tensor, au_ev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per value, the feature with the best selection AUROC and that feature's held-out AUROC."""
    best = au_sel.argmax(0)
    return best, au_ev[best, torch.arange(au_ev.shape[1])]


def _feature_controls(f_sel, y_sel, scored, ranks, au_ev, thr: float, ecfg) -> dict:
    """The feature search on shuffled selection labels, scored on the true held-out labels (n_controls runs)."""
    means, fracs = [], []
    for i in range(ecfg.n_controls):
        _, b_ev = _best_on_heldout(auroc_matrix(f_sel, shuffled(y_sel, ecfg.seed + 1 + i), scored, ranks=ranks), au_ev)
        means.append(float(b_ev.mean()))
        fracs.append(float((b_ev >= thr).double().mean()))
    return {"shuffled_mean_auroc": sum(means) / len(means), "shuffled_mean_auroc_runs": means,
            "shuffled_frac_detected": sum(fracs) / len(fracs), "shuffled_frac_detected_runs": fracs}


@torch.no_grad()
def alignment(sae, cache: ActivationCache, hook_name: str, slices: list[PositionSlice], ecfg, names: list[str] | None = None,
              controls: dict[str, list[Acts]] | None = None, progress=None) -> dict:
    """Which single SAE feature (and how well a linear probe) detects each value of each planted variable.

    Per position and variable: the probe fit on the selection prefixes, scored on the held-out ones, beside its
    controls (`controls`: activations of control models at `hook_name`, from `sae_ooc.saes.controls`); for values
    labelling at least `min_positives` selection prefixes and one held-out prefix, the best feature per value chosen
    on the selection prefixes and its held-out AUROC, beside the same search on shuffled labels. Returns per
    (variable, position) summaries with the per-value table, and the best label per feature. `progress()` is called
    after each position.
    """
    results: dict[str, dict] = {}
    label_best: dict[int, dict] = {}
    name = (lambda v: names[v]) if names else (lambda v: str(v))
    thr = ecfg.auroc_threshold
    for sl in slices:
        labels = {v: sl.labels[v] for v in VARIABLES if _scorable(*sl.labels[v])}
        if labels:
            x_sel, x_ev = cache.read(hook_name, sl.sel), cache.read(hook_name, sl.ev)
            f_sel, f_ev = feature_acts(sae, x_sel).float().cpu(), feature_acts(sae, x_ev).float().cpu()
            ctrl = {kind: [acts[hook_name][sl.pos] for acts in runs] for kind, runs in (controls or {}).items()}
            probes, logits = probe_table(x_sel, x_ev, labels, sl.known_ev, ctrl, ecfg)
            memo: dict[tuple, torch.Tensor] = {}  # variables labelling the same prefixes share their feature ranks

            def ranks(f: torch.Tensor, mask: torch.Tensor, tag: str) -> torch.Tensor:
                key = (tag, mask.numpy().tobytes())
                if key not in memo:
                    memo[key] = column_ranks(f[mask])
                return memo[key]

        for var, (y_sel, y_ev) in labels.items():
            ms, me = y_sel >= 0, y_ev >= 0
            classes, lg_ev = logits[var]
            cnt_sel = (y_sel[ms][:, None] == classes[None, :]).sum(0)
            cnt_ev = (y_ev[me][:, None] == classes[None, :]).sum(0)
            scored = classes[(cnt_sel >= ecfg.min_positives) & (cnt_ev >= 1) & (cnt_ev < int(me.sum())) & (cnt_sel < int(ms.sum()))]
            rec = {"variable": var, "position": sl.name, "n_values": len(scored), "n_select": int(ms.sum()), "n_heldout": int(me.sum()),
                   "probe_accuracy": probes[var]["heldout_acc"], "probe": probes[var], "frac_detected_features": None,
                   "frac_detected_probe": None, "mean_auroc_features": None, "mean_auroc_probe": None, "features": None, "values": []}
            results[f"{var}@{sl.name}"] = rec
            if len(scored) == 0:
                continue
            ranks_sel, ranks_ev = ranks(f_sel, ms, "sel"), ranks(f_ev, me, "ev")
            au_sel = auroc_matrix(f_sel[ms], y_sel[ms], scored, ranks=ranks_sel)  # [d_sae, n_values]
            au_ev = auroc_matrix(f_ev[me], y_ev[me], scored, ranks=ranks_ev)
            best, best_ev = _best_on_heldout(au_sel, au_ev)
            au_probe = auroc_matrix(lg_ev[me][:, torch.searchsorted(classes, scored)], y_ev[me], scored).diagonal()
            sd = float(best_ev.std()) if len(scored) > 1 else 0.0
            feats = {"mean_auroc": float(best_ev.mean()), "sd_auroc_over_values": sd, "frac_detected": float((best_ev >= thr).double().mean()),
                     **_feature_controls(f_sel[ms], y_sel[ms], scored, ranks_sel, au_ev, thr, ecfg)}
            # clearly above: the mean over values beats the best shuffled search by two standard errors of that mean
            feats["above_controls"] = bool(feats["mean_auroc"] - max(feats["shuffled_mean_auroc_runs"]) > 2 * sd / len(scored) ** 0.5)
            rec.update({"frac_detected_features": feats["frac_detected"], "frac_detected_probe": float((au_probe >= thr).double().mean()),
                        "mean_auroc_features": feats["mean_auroc"], "mean_auroc_probe": float(au_probe.mean()), "features": feats,
                        "values": [{"value": name(int(v)), "id": int(v), "feature": int(f), "auroc_feature": round(float(a), 4),
                                    "auroc_probe": round(float(q), 4)} for v, f, a, q in zip(scored, best, best_ev, au_probe)]})
            # best label per feature: chosen on the selection prefixes, confirmed on the held-out ones. AUROC alone
            # also passes a feature that fires on many values as long as this one ranks high, so a label also
            # needs precision: most held-out prefixes the feature fires on must carry the value
            top_sel, top_idx = au_sel.max(1)
            acts_ev = f_ev[me]
            for f in (top_sel >= thr).nonzero().squeeze(1).tolist():
                j = int(top_idx[f])
                a_ev = float(au_ev[f, j])
                fires = acts_ev[:, f] > 0
                precision = float((y_ev[me][fires] == scored[j]).double().mean()) if fires.any() else 0.0
                if a_ev >= thr and precision >= ecfg.label_min_precision and (f not in label_best or a_ev > label_best[f]["auroc"]):
                    label_best[f] = {"feature": f, "variable": var, "position": sl.name, "value": name(int(scored[j])),
                                     "auroc": round(a_ev, 4), "precision": round(precision, 4)}
        if progress is not None:
            progress()
    return {"by_variable_position": results, "feature_labels": [label_best[f] for f in sorted(label_best)]}
