"""Faithfulness (m(C) - m(∅)) / (m(M) - m(∅)) of circuits, and how it grows with circuit size.

C is the model with every node outside the circuit ablated (`sae_ooc.circuits.ablation`), ∅ ablates every
node, M is the model. Completeness ablates only the circuit: (m(M \\ C) - m(∅)) / (m(M) - m(∅)), low is good.
Circuits are chosen on one set of pairs (`NodeEffects` of the selection pairs) and scored on pairs they never
saw (`Pairs.split`); curves, the per-ablation comparison and the scope check below take the pairs
they score on as an argument, apart from the effects the circuit is chosen from.

The scope check: every ablation sets only the nodes in its scope (`sae_ooc.circuits.ablation`: features active on the
clean prompt, or for values of another prompt active on either prompt; every error term). The check ablates only the
nodes *outside* the scope, to their ablation values, keeping everything else: an ablation whose values were harmless
there would leave the metric where it is. Mean ablation fails it (a silent TopK feature set to its mean feeds the
prompt the mean's signal), which is why it is restricted; for zero ablation (silent features are already 0) and for
resample and corrupt ablation (a feature silent on both prompts is 0 on both) it passes by construction, and
`can_fail` says so. Confidence intervals resample head entities, the unit the pairs were split by (`stats.cluster_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sae_ooc.circuits.ablation import (
    ABLATIONS,
    VALIDITY,
    Ablation,
    ablated_metric,
    ablation_values,
)
from sae_ooc.circuits.effects import NodeEffects
from sae_ooc.circuits.nodes import Node
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.selection import (
    keep_masks,
    prompt_keep_masks,
    ranked_features,
    select_nodes,
)
from sae_ooc.circuits.spliced import NodeValues, Spliced
from sae_ooc.stats import cluster_ratio_ci

TARGET_FAITHFULNESS = 0.8
TARGET_MAX_FEATURES = 50


def faithfulness_of(m_c: torch.Tensor, m_full: torch.Tensor, m_empty: torch.Tensor) -> float:
    den = float(m_full.mean() - m_empty.mean())
    return float("nan") if den == 0 else float(m_c.mean() - m_empty.mean()) / den


@dataclass
class Faith:
    m_full: torch.Tensor
    m_empty: torch.Tensor
    heads: torch.Tensor | None = None  # each pair's head entity: the bootstrap's unit (None: every pair its own)

    def of(self, m: torch.Tensor) -> float:
        return faithfulness_of(m, self.m_full, self.m_empty)

    @classmethod
    def measure(cls, sp: Spliced, pairs: Pairs, abl: Ablation, metric: str) -> Faith:
        """The end points under `abl`: the model, and every node ablated."""
        return cls(ablated_metric(sp, pairs, None, abl, metric), ablated_metric(sp, pairs, keep_masks(sp, []), abl, metric), pairs.head)

    def ci95(self, m: torch.Tensor, seed: int, n_boot: int = 1000) -> list[float] | None:
        """95% bootstrap interval of `of(m)` over head entities (each draw resamples whole heads with replacement, their
        pairs together: pairs of one head share its head and r1 activations, so they are not independent): the spread
        of a ratio of means, where per-pair ratios blow up on pairs with m(M) close to m(∅). None with one head."""
        heads = torch.arange(len(m)) if self.heads is None else self.heads
        return cluster_ratio_ci(*(t.double().cpu().numpy() for t in (m, self.m_full, self.m_empty)), heads.cpu().numpy(), n_boot, seed)


def circuit_scores(sp: Spliced, pairs: Pairs, nodes: list[Node], abl: Ablation, metric: str, faith: Faith, batch: int = 1024,
                   ci_seed: int | None = None) -> dict:
    """m(C), m(M \\ C), faithfulness and completeness of `nodes` on `pairs`; with `ci_seed`, their 95% bootstrap intervals."""
    m_c = ablated_metric(sp, pairs, keep_masks(sp, nodes), abl, metric, batch)
    m_rest = ablated_metric(sp, pairs, keep_masks(sp, nodes, invert=True), abl, metric, batch)
    out = {"m_circuit": float(m_c.mean()), "m_complement": float(m_rest.mean()), "faithfulness": faith.of(m_c), "completeness": faith.of(m_rest)}
    if ci_seed is not None:
        out.update(faithfulness_ci95=faith.ci95(m_c, ci_seed), completeness_ci95=faith.ci95(m_rest, ci_seed))
    return out


def end_points(faith: Faith) -> dict:
    return {"m_full": float(faith.m_full.mean()), "m_empty": float(faith.m_empty.mean())}


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


SCOPE_RULE = ("ablate only the nodes outside the ablation's scope (mean, zero: features silent on the clean prompt; resample, "
              "corrupt: features silent on both the clean prompt and the prompt the values come from) to their ablation values; "
              "the metric must not move")


@torch.no_grad()
def inactive_check(sp: Spliced, pairs: Pairs, abl: Ablation, metric: str, faith: Faith, tolerance: float, batch: int = 2048) -> dict:
    """The scope check (see the module docstring). Passes when the mean |change| of the metric is at most `tolerance`
    of |m(M) - m(∅)|; `can_fail` is False when no node outside the scope takes another value under the ablation, so
    nothing could move. Every circuit is scored with the ablation restricted to its scope whatever this says."""
    clean = NodeValues.cat([sp.cache(b.clean)[1] for b in pairs.batches(batch)])
    moved = clean.differs(abl)
    can_fail = any(bool((moved.acts[h] & ~abl.scope.acts[h]).any()) for h in sp.hooks)
    keep = (abl.scope.acts, {h: torch.ones(len(pairs), sp.n_pos, dtype=torch.bool, device=sp.device) for h in sp.hooks})
    change = (ablated_metric(sp, pairs, keep, abl.unscoped(), metric, batch) - faith.m_full).double()
    scale = abs(float(faith.m_full.mean() - faith.m_empty.mean()))
    rel = float(change.abs().mean()) / scale if scale > 0 else None  # no range to measure against
    return {"rule": SCOPE_RULE, "metric_change_mean": float(change.mean()), "metric_change_std": float(change.std()) if len(change) > 1 else 0.0,
            "max_abs_change": float(change.abs().max()) if len(change) else 0.0, "relative_change": rel, "tolerance": tolerance,
            "passes": rel is not None and rel <= tolerance, "can_fail": can_fail, "n_pairs": len(pairs),
            "circuits_restricted_to_scope": True}


def ablation_curves(sp: Spliced, ne: NodeEffects, held: NodeEffects, ds, c, metric: str, sizes: list[int]) -> dict[str, dict]:
    """For every ablation kind, on the held-out pairs (`held`): m(M), m(∅), the scope check, which unit it is valid for, and
    faithfulness against circuit size for the aggregate circuit (top-n by |mean effect| on the selection pairs,
    `ne`) and for per-prompt circuits (each held-out pair its own top-n by its own effects: in-sample)."""
    n_feats = len(ranked_features(ne))
    sizes = sorted({min(s, n_feats) for s in sizes})
    pairs = held.pairs
    out = {}
    for kind in tqdm(ABLATIONS.names(), desc="ablations", unit="kind", leave=False):
        abl = ablation_values(sp, ds, kind, c.mean_examples, c.seed, pairs)
        faith = Faith.measure(sp, pairs, abl, metric)
        agg, per = [], []
        for n in sizes:
            agg.append(faith.of(ablated_metric(sp, pairs, keep_masks(sp, select_nodes(ne, n, 0.0, c.errors)), abl, metric)))
            per.append(faith.of(ablated_metric(sp, pairs, prompt_keep_masks(sp, held, n, c.errors), abl, metric)))
        out[kind] = {**end_points(faith), "sizes": sizes, "valid_for": VALIDITY.get(kind),
                     "inactive_check": inactive_check(sp, pairs, abl, metric, faith, c.inactive_tolerance),
                     "faithfulness": agg, "faithfulness_per_prompt_circuits_in_sample": per,
                     "min_features_reaching_target": next((n for n, f in zip(sizes, agg) if f >= TARGET_FAITHFULNESS), None),
                     "min_features_reaching_target_per_prompt_in_sample": next((n for n, f in zip(sizes, per) if f >= TARGET_FAITHFULNESS), None)}
    return out
