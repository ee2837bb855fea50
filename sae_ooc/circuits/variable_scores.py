"""Faithfulness of circuits of variable nodes (`sae_ooc.circuits.variables`), per ablation kind, on the selection
and the held-out pairs apart, with the controls beside them: random groups of the same sizes at the same places,
the same number of individual features chosen by effect, and the circuit's variable groups alone.

Faithfulness is (m(C) - m(∅)) / (m(M) - m(∅)) over a set of pairs (means over its pairs), with ablation as
variables.py defines it for groups (members active on the clean prompt ablated, silent ones left silent), so ∅
ablates every active node and m(M) is the model.
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

SETS = ("heldout", "selection")  # where a number was measured: the held-out pairs, or those the circuit was chosen on


@dataclass
class Scorer:
    """Per-pair metrics of group circuits under one ablation, and their faithfulness on pair subsets."""

    sp: Spliced
    pairs: Pairs
    masks: NodeMask  # group_masks of the groups the circuits are made of
    active: tuple[dict, dict]  # selection.active_node_masks of the pairs
    abl: Ablation
    metric: str
    m_full: torch.Tensor
    idx: dict[str, torch.Tensor]  # {"selection": pair indices, "heldout": pair indices}

    def __post_init__(self):
        self.m_empty = self.metric_of([])

    def metric_of(self, chosen: list[int], masks: NodeMask | None = None) -> torch.Tensor:
        """Per-pair metric of the circuit made of groups `chosen` (of `masks`, default the scorer's)."""
        return self.metric_keep(circuit_keep(self.masks if masks is None else masks, chosen, self.active))

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
    """95% percentile interval of the faithfulness over pairs resampled with replacement (spread over pairs)."""
    i = sc.idx[on].numpy()
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        j = torch.as_tensor(rng.choice(i, size=len(i), replace=True))
        vals.append(faithfulness_of(m[j], sc.m_full[j], sc.m_empty[j]))
    vals = np.asarray(vals)
    vals = vals[np.isfinite(vals)]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if len(vals) else [float("nan")] * 2


def spread(values: list[float], reference: float) -> dict:
    """Mean, std, range of control values and where `reference` (the circuit) falls among them."""
    v = np.asarray(values, dtype=np.float64)
    at_least = int((v >= reference).sum())
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
            "n_at_least_circuit": at_least, "p_value": (1 + at_least) / (1 + len(v)), "values": [float(x) for x in v]}


def random_controls(scorers: dict[str, Scorer], groups: list[Group], chosen: list[int], reference: dict[str, dict[str, float]],
                    n_draws: int, seed: int) -> dict[str, dict]:
    """Per ablation kind: the faithfulness of `n_draws` circuits whose feature groups are random features of the
    same sizes at the same (hook, position) (variables.random_groups), against the circuit's own (`reference`)."""
    any_sc = next(iter(scorers.values()))
    rng = np.random.default_rng(seed)
    vals: dict[str, dict[str, list[float]]] = {k: {s: [] for s in SETS} for k in scorers}
    overlaps, sizes = [], None
    for _ in range(n_draws):
        rand, overlap = random_groups(groups, chosen, any_sc.sp.d_sae, rng)
        overlaps.append(overlap)
        sizes = [g.size for g in rand]
        masks = group_masks(any_sc.sp, rand)
        keep = circuit_keep(masks, list(range(len(rand))), any_sc.active)
        for kind, sc in scorers.items():
            m = sc.metric_keep(keep)
            for s in SETS:
                vals[kind][s].append(sc.faith(m, s))
    return {kind: {"n_draws": n_draws, "group_sizes": sizes, "mean_overlap_with_circuit": float(np.mean(overlaps)) if overlaps else 0.0,
                   **{s: spread(vals[kind][s], reference[kind][s]) for s in SETS}} for kind in scorers}


def top_features_keep(sp: Spliced, per_prompt: dict[str, torch.Tensor], sel: torch.Tensor, n_features: int, error_groups: list[Group],
                      active: tuple[dict, dict]) -> tuple[tuple[dict, dict], list[tuple[str, int, int]]]:
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
    return circuit_keep(masks, list(range(len(chosen))), active), [(h, p, i) for _, h, p, i in top]
