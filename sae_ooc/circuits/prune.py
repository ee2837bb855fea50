"""Per-prompt circuits by backward elimination, measured by ablation at every step.

Ranking nodes by their single-node patching effect finds the nodes that matter one at a time; when a
prompt's computation is spread over many redundant features (each one's removal barely matters while
removing them together breaks the answer), the top nodes by effect are not a sufficient set. Backward
elimination searches for small sufficient sets directly: each prompt starts from every node in the
ablation's scope (`sae_ooc.circuits.ablation`) whose ablated value differs from its clean value (with zero or
mean ablation: its active features and error terms; keeping all of them reproduces the model exactly) and repeatedly drops the nodes without which its
metric stays closest to the model's, re-measuring every remaining node after each round. Greedy, so the sizes it reaches
are upper bounds on the smallest faithful circuit of each prompt.

Such a circuit is fitted to its prompt, so its faithfulness there is in-sample. What generalizes is measured by
`transfer`: the pruned node types (hook, position, feature or error) of one prompt applied to every other prompt
that shares its relations (r1, r2), beside the same for prompts with other relations (the control).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from sae_ooc.circuits.ablation import Ablation, ablation_values
from sae_ooc.circuits.faithfulness import (
    TARGET_FAITHFULNESS,
    TARGET_MAX_FEATURES,
    Faith,
    faithfulness_of,
)
from sae_ooc.circuits.nodes import Node
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import NodeMask, Spliced
from sae_ooc.circuits.validation import spread
from sae_ooc.errors import UserError


class NodeLayout:
    """Every node of a prompt as one flat index: each hook's features [P * d_sae], then each hook's error nodes [P]."""

    def __init__(self, sp: Spliced):
        self.hooks = list(sp.hooks)
        self.d_sae = dict(sp.d_sae)
        self.n_pos = sp.n_pos
        self.sizes = [sp.n_pos * sp.d_sae[h] for h in self.hooks] + [sp.n_pos] * len(self.hooks)
        self.n_feature_cols = sum(self.sizes[: len(self.hooks)])

    def flatten(self, acts: dict[str, torch.Tensor], errs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([acts[h].flatten(1) for h in self.hooks] + [errs[h] for h in self.hooks], 1)

    def node_of(self, j: int) -> Node:
        """The node at flat index j."""
        n = len(self.hooks)
        if j < self.n_feature_cols:
            for h, size in zip(self.hooks, self.sizes[:n]):
                if j < size:
                    return Node(h, j // self.d_sae[h], j % self.d_sae[h])
                j -= size
        j -= self.n_feature_cols
        return Node(self.hooks[j // self.n_pos], j % self.n_pos, None)

    def unflatten(self, flat: torch.Tensor) -> tuple[dict, dict]:
        parts = flat.split(self.sizes, 1)
        n = len(self.hooks)
        return ({h: parts[i].reshape(-1, self.n_pos, self.d_sae[h]) for i, h in enumerate(self.hooks)},
                {h: parts[n + i] for i, h in enumerate(self.hooks)})


@torch.no_grad()
def candidate_nodes(sp: Spliced, pairs: Pairs, abl: Ablation, layout: NodeLayout) -> torch.Tensor:
    """[n, n_nodes] bool: nodes in the ablation's scope whose clean value differs from their ablation value (the
    others are unchanged by ablating them, so no circuit needs them)."""
    _, clean = sp.cache(pairs.clean)
    moved = clean.differs(abl)
    if abl.scope is not None:
        moved = NodeMask({h: m & abl.scope.acts[h] for h, m in moved.acts.items()}, {h: m & abl.scope.errs[h] for h, m in moved.errs.items()})
    return layout.flatten(moved.acts, moved.errs).cpu()


@torch.no_grad()
def _metric_rows(sp: Spliced, pairs: Pairs, rows: torch.Tensor, keep: torch.Tensor, abl: Ablation, metric: str,
                 layout: NodeLayout, batch: int) -> torch.Tensor:
    """Metric of pair rows[r] with only the nodes keep[r] kept (the rest ablated)."""
    out = []
    for s in range(0, len(rows), batch):
        idx = rows[s : s + batch]
        sub = pairs.subset(idx)
        a = abl.rows(idx)
        ka, ke = layout.unflatten(keep[s : s + batch].to(sp.device))
        logits = sp.run_replaced(sub.clean, a.scoped_acts(), a.errs, ka, ke)
        out.append(sub.metric(logits, metric).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def prune_circuits(sp: Spliced, pairs: Pairs, abl: Ablation, metric: str, faith: Faith, step: float = 0.05,
                   batch: int = 2048, max_candidates: int = 4000, progress: bool = True, snapshot_max_features: int | None = None) -> dict:
    """Backward elimination on each pair. Every round lowers the node budget (features + error nodes per
    prompt) by `step` of itself; each prompt drops the nodes whose individual removal leaves its metric
    closest to the model's, down to the budget. Returns the rounds (budget, mean feature and error
    nodes per prompt, faithfulness over the pairs); with `snapshot_max_features`, also "snapshot": the keep
    masks [n_pairs, n_nodes] of the first round with at most that many feature nodes per prompt."""
    layout = NodeLayout(sp)
    keep = candidate_nodes(sp, pairs, abl, layout)
    n_cand = int(keep.sum(1).max()) if len(keep) else 0
    cand_mean = float(keep.sum(1).float().mean()) if len(keep) else 0.0
    if n_cand > max_candidates:
        raise UserError(f"backward elimination would start from {n_cand} nodes per prompt under this ablation (most features are "
                        f"changed by it); set circuit.prune_ablation to zero or corrupt, or none to skip it")
    all_rows = torch.arange(len(pairs))
    rounds = []

    def record(budget: int) -> None:
        m = _metric_rows(sp, pairs, all_rows, keep, abl, metric, layout, batch)
        feats = keep[:, : layout.n_feature_cols].sum(1).float()
        rounds.append({"budget": budget, "max_nodes": int(keep.sum(1).max()), "mean_features": float(feats.mean()),
                       "max_features": int(feats.max()), "mean_errors": float(keep[:, layout.n_feature_cols :].sum(1).float().mean()),
                       "faithfulness": faith.of(m), "metric_mean": float(m.mean())})
        if snapshot_max_features is not None and not snap and int(feats.max()) <= snapshot_max_features:
            snap.update(keep=keep.clone(), metric=m, round=len(rounds) - 1)

    snap: dict = {}
    record(n_cand)
    for budget in tqdm(budgets(n_cand, step), desc="prune circuits", unit="round", leave=False, disable=not progress):
        over = keep.sum(1) > budget
        if over.any():
            b, j = keep[over].nonzero(as_tuple=True)
            b = all_rows[over][b]
            trial = keep[b].clone()
            trial[torch.arange(len(b)), j] = False
            # how far the prompt's metric would move from the model's without the node: aiming at the model's
            # value, not above it, keeps the search from collecting nodes that merely inflate the metric
            dist = (_metric_rows(sp, pairs, b, trial, abl, metric, layout, batch) - faith.m_full.cpu()[b]).abs()
            for p in b.unique().tolist():
                sel = (b == p).nonzero(as_tuple=True)[0]
                drop = sel[dist[sel].argsort(stable=True)[: len(sel) - budget]]
                keep[p, j[drop]] = False
        record(budget)
    return {"rounds": rounds, "n_pairs": len(pairs), "step": step, "candidates_max": n_cand, "candidates_mean": cand_mean,
            "snapshot": snap or None}


def budgets(n: int, step: float) -> list[int]:
    """The node budget of every round after the first: each `step` of the last lower (at least 1 lower), down to 0."""
    out = []
    while n > 0:
        n = min(n - 1, int(n * (1 - step)))
        out.append(n)
    return out


def summarize(result: dict, target: float, max_features: int) -> dict:
    """Faithfulness at the largest round within `max_features` feature nodes per prompt, and the smallest
    per-prompt feature count whose round still reaches `target`."""
    rounds = result["rounds"]
    within = [r for r in rounds if r["max_features"] <= max_features]
    reach = [r for r in rounds if r["faithfulness"] >= target]
    return {"faithfulness_within_max": within[0]["faithfulness"] if within else None,
            "max_features": max_features,
            "min_features_reaching_target": min((r["max_features"] for r in reach), default=None),
            "target": target}


def transfer(sp: Spliced, pairs: Pairs, sources: list[int], keep: torch.Tensor, abl: Ablation, metric: str, faith: Faith,
             batch: int = 2048) -> dict:
    """Source prompt k's circuit (keep[k], a NodeLayout mask) applied to every other pair of `pairs` (sources[k]
    is its own index there): faithfulness pooled over the (source, target) rows whose target shares the source's
    (r1, r2), the same over each source's targets (spread), and both for targets with other relations (control)."""
    layout = NodeLayout(sp)
    rel = pairs.relations()
    out = {}
    for name, same in (("same_relations", True), ("other_relations", False)):
        rows = [(k, j) for k, i in enumerate(sources) for j in range(len(pairs)) if j != i and (rel[j] == rel[i]) == same]
        src, tgt = (torch.tensor([r[c] for r in rows], dtype=torch.long) for c in (0, 1))
        m = _metric_rows(sp, pairs, tgt, keep[src], abl, metric, layout, batch)
        full, empty = faith.m_full.cpu()[tgt], faith.m_empty.cpu()[tgt]
        per_source = [faithfulness_of(m[src == k], full[src == k], empty[src == k]) for k in src.unique().tolist()]
        out[name] = {"faithfulness": faithfulness_of(m, full, empty) if len(rows) else None, "n_rows": len(rows),
                     "per_source": spread(per_source)}
    return out


def pruned_circuits(sp: Spliced, pairs: Pairs, sources: torch.Tensor, ds, c, metric: str) -> dict | None:
    """Backward elimination on the first `circuit.prune_pairs` of `sources` (indices into `pairs`: the selection
    pairs) under `circuit.prune_ablation` (None: "none"), and the transfer of their circuits to the other pairs."""
    if c.prune_ablation == "none":
        return None
    src = sources[: c.prune_pairs]
    sub = pairs.subset(src)
    abl = ablation_values(sp, ds, c.prune_ablation, c.mean_examples, c.seed, sub)
    faith = Faith.measure(sp, sub, abl, metric)
    res = prune_circuits(sp, sub, abl, metric, faith, c.prune_step, snapshot_max_features=TARGET_MAX_FEATURES)
    res.update(summarize(res, TARGET_FAITHFULNESS, TARGET_MAX_FEATURES), ablation=c.prune_ablation, in_sample=True,
               source_pairs=src.tolist())
    snap = res["snapshot"]
    if snap is not None:
        snap["faith"] = faith
        abl_all = ablation_values(sp, ds, c.prune_ablation, c.mean_examples, c.seed, pairs)
        res["transfer"] = {"round": snap["round"], "max_features": res["rounds"][snap["round"]]["max_features"],
                           "in_sample_faithfulness": res["rounds"][snap["round"]]["faithfulness"],
                           **transfer(sp, pairs, src.tolist(), snap["keep"], abl_all, metric, Faith.measure(sp, pairs, abl_all, metric))}
    return res
