"""Feature-to-variable matching as `sae_lens.synthetic` scores an SAE against known ground-truth features.

sae_lens's synthetic benchmark (`sae_lens.synthetic.evals`) knows each ground-truth feature's direction and when it
fires; it reports the mean correlation coefficient (MCC: Hungarian matching of SAE decoder rows to ground-truth
directions by |cosine|, the mean over matched pairs) and, per latent, precision / recall / F1 of the latent firing as a
detector of its best-matching ground-truth feature (by decoder cosine), averaged over latents. Its calculators take
plain tensors, so they run on our activations unchanged once a planted variable supplies the ground truth:

- a value's ground-truth *direction* is its class-mean difference on the selection prefixes (mean activation of the
  prefixes carrying it minus the mean over all labelled ones: the supervised dictionary of Makelov et al.);
- a value *fires* on a held-out prefix that carries it (a one-hot indicator).

Beside sae_lens's decoder MCC this also reports the activation MCC, the same `mean_correlation_coefficient` applied to
centred activation columns (|cosine| of centred columns is |Pearson correlation|): with latent i firing exactly on
value i it is 1, whatever the decoder. Directions are fitted on selection prefixes, firing measured on held-out ones.
"""

from __future__ import annotations

import torch
from sae_lens.synthetic.evals import ClassificationMetricsCalculator, mean_correlation_coefficient


def class_mean_directions(x: torch.Tensor, y: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[n_values, d]: mean of the rows labelled v minus the mean of all labelled rows (labels < 0 are unlabelled)."""
    m = y >= 0
    mu = x[m].float().mean(0)
    return torch.stack([x[y == v].float().mean(0) - mu for v in values.tolist()])


def synthetic_match(x_sel: torch.Tensor, y_sel: torch.Tensor, f_ev: torch.Tensor, y_ev: torch.Tensor, w_dec: torch.Tensor,
                    min_positives: int = 3) -> tuple[dict, dict[str, torch.Tensor]]:
    """sae_lens.synthetic's MCC and classification metrics of an SAE (`w_dec` [d_sae, d_in], held-out latents `f_ev`)
    against the values of one variable. Returns (summary, per-latent tensors: matched value, precision, recall)."""
    ms, me = y_sel >= 0, y_ev >= 0
    vals, cnt = torch.unique(y_sel[ms], return_counts=True)
    values = vals[(cnt >= min_positives) & (y_ev[me][:, None] == vals[None, :]).any(0)]
    out = {"n_values": len(values), "n_heldout": int(me.sum()), "mcc_decoder": None, "mcc_activation": None,
           "precision": None, "recall": None, "f1": None, "n_live": None, "precision_live": None, "recall_live": None}
    if len(values) < 2:
        return out, {}
    gt = class_mean_directions(x_sel, y_sel, values)
    w = w_dec.detach().float().cpu()
    f = f_ev[me].float().cpu()
    fires = (y_ev[me][:, None] == values[None, :]).float()
    out["mcc_decoder"] = mean_correlation_coefficient(gt, w)
    out["mcc_activation"] = mean_correlation_coefficient((fires - fires.mean(0)).T, (f - f.mean(0)).T)
    calc = ClassificationMetricsCalculator(w, gt)
    calc.add_batch(f, fires)
    m = calc.compute()
    out.update({"precision": m.precision, "recall": m.recall, "f1": m.f1_score})
    tp, fp, fn = calc.tp, calc.fp, calc.fn
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), torch.zeros_like(tp))
    # sae_lens averages over every latent, dead and silent ones included (precision 0): the live-only means say what the
    # latents that fire on these prefixes do
    live = (f != 0).any(0)
    out["n_live"] = int(live.sum())
    if live.any():
        out["precision_live"], out["recall_live"] = float(precision[live].mean()), float(recall[live].mean())
    per_latent = {"matched_value": values[calc.best_matches], "precision": precision, "recall": recall}
    return out, per_latent
