"""Scoring the candidate units of one row (variable, position, hook): the scorer every row uses, and the SAE units.

The SAE units of a row, each exchanged from the donor's code with the SAE's error term kept (sae_ooc.causal.units):
eval-sae's labelled features of the variable (value v or v'), the top-n features by fit class-mean difference, Makelov et
al.'s `sae_opt` (n features chosen greedily, interpretation-free, to match the counterfactual difference x_donor - x), the
whole code, and n random active features at each n's norm (the lower reference of both curves).
"""

from __future__ import annotations

import torch

from sae_ooc.causal.control import Scored, score, spread
from sae_ooc.causal.result import VariableRow
from sae_ooc.causal.units import exchanged, first_n_mask, greedy_feature_order, random_feature_mask, top_feature_mask
from sae_ooc.interventions.steering import decode_delta, matched_norm


class Scorer:
    """Scores deltas at (hook, pos) on the pairs S into row.units."""

    def __init__(self, model, S: Scored, hook: str, pos: int, cfg, seed: int, row: VariableRow, g: torch.Generator):
        self.model, self.S, self.hook, self.pos, self.cfg, self.seed, self.row, self.g = model, S, hook, pos, cfg, seed, row, g

    def measure(self, name: str, delta: torch.Tensor, size=None, kind: str = "") -> torch.Tensor:
        c = self.cfg
        self.row.units[name] = score(self.model, self.S, self.hook, self.pos, delta, c.batch_size, c.bootstrap, self.seed, size, kind)
        return delta

    def random_ref(self, name: str, make, size, kind: str) -> None:
        c = self.cfg
        self.row.units[name] = spread([score(self.model, self.S, self.hook, self.pos, make(), c.batch_size, c.bootstrap, self.seed,
                                             size, kind) for _ in range(c.random_draws)], size, kind)


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().cpu()


def sae_units(sc: Scorer, sae, mu_f: torch.Tensor | None, v: torch.Tensor, v2: torch.Tensor, labels: torch.Tensor | None) -> None:
    """Every SAE unit of the row (module docstring) on the pairs sc.S, base value v and donor value v2 ([n] each).
    mu_f [n_values, d_sae]: the fit class means of the code (None: the held-out values have none, no top-n curve);
    labels [n_values, d_sae] bool: eval-sae's labelled features of the variable at this position (None: no labels)."""
    S, row, g = sc.S, sc.row, sc.g
    with torch.no_grad():
        dev = sae.W_dec.device
        f, fd = sae.encode(S.x.to(dev)).float(), sae.encode(S.xd.to(dev)).float()
    d_sae = int(sae.cfg.d_sae)
    if labels is not None:
        lab = (labels[v] | labels[v2]).to(f.device) if len(S) else torch.zeros_like(f, dtype=torch.bool)
        sc.measure("labelled_features", _cpu(exchanged(sae, f, fd, lab)), None, "labelled_features")
        row.units["labelled_features"].update(n_features=float(lab.sum(1).float().mean()) if len(S) else None,
                                              covered=int(lab.any(1).sum()), n_labelled_features=int(labels.any(0).sum()))
    counts = sorted(set(sc.cfg.feature_counts))
    order = greedy_feature_order(sae, f, fd, (S.xd - S.x).to(f.device), max(counts))
    row.curves["sae_opt"], row.curves["random_features"] = [], []
    if mu_f is not None:
        row.curves["top_features"] = []
    for n in counts:
        ref = None
        if mu_f is not None:
            ref = sc.measure(f"top{n}_features", _cpu(exchanged(sae, f, fd, top_feature_mask(mu_f, v, v2, n).to(f.device))), n,
                             "top_features")
            row.curves["top_features"].append(f"top{n}_features")
        opt = first_n_mask(order, n, d_sae).to(f.device)
        d = sc.measure(f"sae_opt{n}", _cpu(exchanged(sae, f, fd, opt)), n, "sae_opt")
        row.units[f"sae_opt{n}"]["n_features"] = float(opt.sum(1).float().mean()) if len(S) else None
        row.curves["sae_opt"].append(f"sae_opt{n}")
        ref = d if ref is None else ref
        sc.random_ref(f"random_features{n}", lambda ref=ref, n=n: matched_norm(_cpu(exchanged(
            sae, f, fd, random_feature_mask(f, fd, n, g))), ref), n, "random_features")
        row.curves["random_features"].append(f"random_features{n}")
    sc.measure("sae_code_swap", _cpu(decode_delta(sae, f, fd)), d_sae, "sae_code_swap")
