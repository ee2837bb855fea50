"""Faithfulness of circuits of variable nodes (`sae_ooc.circuits.variables`), per ablation kind, on the selection
and the held-out pairs apart, with the controls beside them: random groups of the same sizes at the same places,
the same number of individual features chosen by effect, and the circuit's variable groups alone.

Faithfulness is (m(C) - m(∅)) / (m(M) - m(∅)) over a set of pairs (means over its pairs), with ablation as
variables.py defines it for groups (members in the ablation's scope set to its values, the others held at 0), so ∅
ablates every node in scope and m(M) is the model. Intervals resample head entities (`stats.cluster_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae_ooc.circuits.ablation import Ablation, ablated_metric
from sae_ooc.circuits.faithfulness import faithfulness_of
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import NodeMask, Spliced
from sae_ooc.circuits.variables import Group, circuit_keep, group_masks, random_groups
from sae_ooc.stats import cluster_ratio_ci

SETS = ("heldout", "selection")  # where a number was measured: the held-out pairs, or those the circuit was chosen on


@dataclass
class Scorer:
    """Per-pair metrics of group circuits under one ablation, and their faithfulness on pair subsets."""

    sp: Spliced
    pairs: Pairs
    masks: NodeMask  # group_masks of the groups the circuits are made of
    abl: Ablation  # with its scope on `pairs`
    metric: str
    m_full: torch.Tensor
    idx: dict[str, torch.Tensor]  # {"selection": pair indices, "heldout": pair indices}

    def __post_init__(self):
        self.m_empty = self.metric_of([])

    def metric_of(self, chosen: list[int], masks: NodeMask | None = None) -> torch.Tensor:
        """Per-pair metric of the circuit made of groups `chosen` (of `masks`, default the scorer's)."""
        return self.metric_keep(circuit_keep(self.masks if masks is None else masks, chosen))

    def metric_keep(self, keep: tuple[dict, dict]) -> torch.Tensor:
        return ablated_metric(self.sp, self.pairs, keep, self.abl, self.metric)

    def faith(self, m: torch.Tensor, on: str) -> float:
        i = self.idx[on]
        return faithfulness_of(m[i], self.m_full[i], self.m_empty[i])

    def both(self, m: torch.Tensor) -> dict[str, float]:
        return {s: self.faith(m, s) for s in SETS}

    def summary(self, m: torch.Tensor, on: str) -> dict:
        i = self.idx[on]
        return {"faithfulness": self.faith(m, on), "m_full": float(self.m_full[i].mean()), "m_empty": float(self.m_empty[i].mean()),
                "m_circuit": float(m[i].mean()), "n_pairs": len(i)}


def bootstrap_ci(sc: Scorer, m: torch.Tensor, on: str, n_boot: int, seed: int) -> list[float]:
    """95% percentile interval of the faithfulness over head entities resampled with replacement (a head's pairs kept
    together: they share its head and r1 activations, and the pairs were split by head)."""
    i = sc.idx[on]
    ci = cluster_ratio_ci(*(t[i].double().cpu().numpy() for t in (m, sc.m_full, sc.m_empty)), sc.pairs.head[i].cpu().numpy(), n_boot, seed)
    return ci if ci is not None else [float("nan")] * 2


def spread(values: list[float], reference: float) -> dict:
    """Mean, std, range of control values and where `reference` (the circuit) falls among them."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):  # no draw possible: the fields, empty
        return {"mean": None, "std": None, "min": None, "max": None, "n_at_least_circuit": 0, "p_value": None, "values": []}
    at_least = int((v >= reference).sum())
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
            "n_at_least_circuit": at_least, "p_value": (1 + at_least) / (1 + len(v)), "values": [float(x) for x in v]}


def random_controls(scorers: dict[str, Scorer], groups: list[Group], chosen: list[int], reference: dict[str, dict[str, float]],
                    n_draws: int, seed: int) -> dict[str, dict]:
    """Per ablation kind: the faithfulness of `n_draws` circuits made of as many random features outside the circuit
    as its feature groups hold, at the same (hook, position) where enough are outside (variables.random_groups), with
    its error nodes, against the circuit's own (`reference`). Empty draws (n_draws 0, a `note`) when the model has too
    few features outside the circuit (spreads of no values)."""
    any_sc = next(iter(scorers.values()))
    rng = np.random.default_rng(seed)
    vals: dict[str, dict[str, list[float]]] = {k: {s: [] for s in SETS} for k in scorers}
    at_place, sizes, note = [], None, None
    for _ in range(n_draws):
        try:
            rand, share = random_groups(groups, chosen, any_sc.sp.d_sae, rng)
        except ValueError as e:
            note = str(e)
            break
        at_place.append(share)
        sizes = [g.size for g in rand]
        keep = circuit_keep(group_masks(any_sc.sp, rand), list(range(len(rand))))
        for kind, sc in scorers.items():
            m = sc.metric_keep(keep)
            for s in SETS:
                vals[kind][s].append(sc.faith(m, s))
    n = len(at_place)
    return {kind: {"n_draws": n, "group_sizes": sizes, "drawn_from": "features outside the circuit", "mean_overlap_with_circuit": 0.0,
                   "share_at_same_places": float(np.mean(at_place)) if at_place else None, **({"note": note} if note else {}),
                   **{s: spread(vals[kind][s], reference[kind][s]) for s in SETS}} for kind in scorers}


def top_features_keep(sp: Spliced, per_prompt: dict[str, torch.Tensor], sel: torch.Tensor, n_features: int,
                      error_groups: list[Group]) -> tuple[tuple[dict, dict], list[tuple[str, int, int]]]:
    """Keep masks of the `n_features` individual features with the largest |mean effect| on the selection pairs (node
    effects of the attribute stage) and the error nodes of `error_groups`, with the same ablation rule as groups."""
    flat = []
    for h in sp.hooks:
        mean = per_prompt[h][sel, :, :-1].mean(0)
        p, i = mean.nonzero(as_tuple=True)
        flat += list(zip(mean[p, i].tolist(), [h] * len(p), p.tolist(), i.tolist()))
    top = sorted(flat, key=lambda r: (-abs(r[0]), sp.hooks.index(r[1]), r[2], r[3]))[:n_features]
    feats = [Group("variable", "top", h, p, (i,)) for _, h, p, i in top]
    chosen = feats + list(error_groups)
    masks = group_masks(sp, chosen)
    return circuit_keep(masks, list(range(len(chosen)))), [(h, p, i) for _, h, p, i in top]
