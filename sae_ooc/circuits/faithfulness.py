"""Faithfulness (m(C) - m(∅)) / (m(M) - m(∅)) of circuits, and how it grows with circuit size.

C is the model with every node outside the circuit ablated (`sae_ooc.circuits.ablation`), ∅ ablates every
node, M is the model. Completeness ablates only the circuit: (m(M \\ C) - m(∅)) / (m(M) - m(∅)), low is good.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sae_ooc.circuits.ablation import (
    ABLATIONS,
    Ablation,
    ablated_metric,
    ablation_values,
)
from sae_ooc.circuits.effects import NodeEffects
from sae_ooc.circuits.nodes import Node
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.selection import (
    active_node_masks,
    keep_masks,
    prompt_keep_masks,
    ranked_features,
    select_nodes,
)
from sae_ooc.circuits.spliced import Spliced

TARGET_FAITHFULNESS = 0.8
TARGET_MAX_FEATURES = 50


def faithfulness_of(m_c: torch.Tensor, m_full: torch.Tensor, m_empty: torch.Tensor) -> float:
    den = float(m_full.mean() - m_empty.mean())
    return float("nan") if den == 0 else float(m_c.mean() - m_empty.mean()) / den


@dataclass
class Faith:
    m_full: torch.Tensor
    m_empty: torch.Tensor

    def of(self, m: torch.Tensor) -> float:
        return faithfulness_of(m, self.m_full, self.m_empty)

    @classmethod
    def measure(cls, sp: Spliced, pairs: Pairs, abl: Ablation, metric: str) -> Faith:
        """The end points under `abl`: the model, and every node ablated."""
        return cls(ablated_metric(sp, pairs, None, abl, metric), ablated_metric(sp, pairs, keep_masks(sp, []), abl, metric))


def circuit_scores(sp: Spliced, pairs: Pairs, nodes: list[Node], abl: Ablation, metric: str, faith: Faith, batch: int = 1024) -> dict:
    m_c = ablated_metric(sp, pairs, keep_masks(sp, nodes), abl, metric, batch)
    m_rest = ablated_metric(sp, pairs, keep_masks(sp, nodes, invert=True), abl, metric, batch)
    return {"m_circuit": float(m_c.mean()), "m_complement": float(m_rest.mean()),
            "faithfulness": faith.of(m_c), "completeness": faith.of(m_rest)}


def faithfulness_curve(sp: Spliced, ne: NodeEffects, pairs: Pairs, abl: Ablation, metric: str, faith: Faith, sizes: list[int],
                       errors: str, batch: int = 1024) -> list[dict]:
    n_feats = len(ranked_features(ne))
    sizes = sorted({min(s, n_feats) for s in sizes})
    curve = []
    for n in tqdm(sizes, desc="faithfulness curve", unit="size", leave=False):
        nodes = select_nodes(ne, n, 0.0, errors)
        feats = [x for x in nodes if not x.is_error]
        row = {"n_features": len(feats), "n_errors": len(nodes) - len(feats)}
        row.update(circuit_scores(sp, pairs, nodes, abl, metric, faith, batch))
        if errors != "none":
            row["faithfulness_features_only"] = faith.of(ablated_metric(sp, pairs, keep_masks(sp, feats), abl, metric, batch))
        curve.append(row)
    return curve


def ablation_curves(sp: Spliced, ne: NodeEffects, pairs: Pairs, ds, c, metric: str, sizes: list[int]) -> dict[str, dict]:
    """For every ablation kind: m(M), m(∅), and faithfulness against circuit size for the aggregate
    circuit (top-n by |mean effect|) and for per-prompt circuits (each pair its own top-n)."""
    n_feats = len(ranked_features(ne))
    sizes = sorted({min(s, n_feats) for s in sizes})
    active = active_node_masks(sp, pairs)
    out = {}
    for kind in tqdm(ABLATIONS.names(), desc="ablations", unit="kind", leave=False):
        abl = ablation_values(sp, ds, kind, c.mean_examples, c.seed, pairs)
        faith = Faith.measure(sp, pairs, abl, metric)
        complete = faith.of(ablated_metric(sp, pairs, active, abl, metric))
        agg, per = [], []
        for n in sizes:
            agg.append(faith.of(ablated_metric(sp, pairs, keep_masks(sp, select_nodes(ne, n, 0.0, c.errors)), abl, metric)))
            per.append(faith.of(ablated_metric(sp, pairs, prompt_keep_masks(sp, ne, n, c.errors), abl, metric)))
        out[kind] = {"m_full": float(faith.m_full.mean()), "m_empty": float(faith.m_empty.mean()), "sizes": sizes,
                     "faithfulness_active_nodes": complete,
                     "faithfulness": agg, "faithfulness_per_prompt_circuits": per,
                     "min_features_reaching_target": next((n for n, f in zip(sizes, agg) if f >= TARGET_FAITHFULNESS), None),
                     "min_features_reaching_target_per_prompt": next((n for n, f in zip(sizes, per) if f >= TARGET_FAITHFULNESS), None)}
    return out
