"""Node effects on disk: RUN/attribution/node_effects.safetensors (+ node_effects.json, the top nodes).

node_effects.safetensors holds `effects.<hook>` [n_pos, d_sae + 1] (mean over pairs; last column: the error
node), `per_prompt.<hook>` [n_pairs, n_pos, d_sae + 1], the pairs (`pairs.*`) and their metrics
(`metric.clean`, `metric.corrupt`); its metadata names the hooks, method and metric.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from sae_ooc.circuits.attribute_result import NodeEffectsSummary
from sae_ooc.circuits.nodes import Node
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import load_spliced
from sae_ooc.errors import UserError
from sae_ooc.io import save_tensors
from sae_ooc.records import OMIT, Record, opt
from sae_ooc.tasks.data import POSITION_ROLES

EFFECTS_FILE = "node_effects.safetensors"
EFFECTS_JSON = NodeEffectsSummary.FILE


@dataclass(kw_only=True)
class EffectsMeta(Record):
    """What node_effects.safetensors holds: its metadata's "sae_ooc" key (a JSON object; the browser reads it alone)."""

    hooks: list[str]  # hook_names, forward order
    d_sae: dict[str, int]  # hook_name -> SAE width
    method: str  # exact, atp or ig
    metric: str  # logit_diff or logprob
    positions: list[str] = OMIT  # the name of each node position (files of the toy task before it was recorded lack it)
    layout: str = OMIT  # the tensors' shapes, in words

    @classmethod
    def read(cls, f) -> "EffectsMeta":
        """From an open safetensors file (safe_open)."""
        return cls.from_json(json.loads((f.metadata() or {})["sae_ooc"]))


@dataclass
class NodeEffects:
    hooks: list[str]
    d_sae: dict[str, int]
    method: str
    metric: str
    per_prompt: dict[str, torch.Tensor]  # hook -> [n, P, d_sae + 1]
    pairs: Pairs
    metric_clean: torch.Tensor
    metric_corrupt: torch.Tensor
    positions: tuple[str, ...] = POSITION_ROLES  # the name (role) of each node position (Spliced.position_names)

    @property
    def mean(self) -> dict[str, torch.Tensor]:
        return {h: e.mean(0) for h, e in self.per_prompt.items()}

    def column(self, node) -> int:
        """The node's column in the [..., n_pos, d_sae + 1] effect tensors (the error node's is the last)."""
        return self.d_sae[node.hook] if node.idx is None else node.idx

    def of(self, node) -> torch.Tensor:
        """The node's per-prompt effects [n_pairs]."""
        return self.per_prompt[node.hook][:, node.pos, self.column(node)]

    def std_of(self, node) -> float:
        pp = self.of(node)
        return float(pp.std()) if len(pp) > 1 else 0.0

    def subset(self, idx) -> NodeEffects:
        """The effects on pairs `idx` only (what a circuit chosen on those pairs may see)."""
        return NodeEffects(self.hooks, self.d_sae, self.method, self.metric, {h: e[idx] for h, e in self.per_prompt.items()},
                           self.pairs.subset(idx), self.metric_clean[idx], self.metric_corrupt[idx], self.positions)

    def ranked(self) -> list[tuple[str, int, int | None, float]]:
        """Every node with a nonzero mean effect as (hook, pos, feature or None, mean effect), largest |effect| first."""
        out = []
        for h, m in self.mean.items():
            p, i = m.nonzero(as_tuple=True)
            for pp, ii, v in zip(p.tolist(), i.tolist(), m[p, i].tolist()):
                out.append((h, pp, None if ii == self.d_sae[h] else ii, v))
        return sorted(out, key=lambda r: (-abs(r[3]), self.hooks.index(r[0]), r[1], -1 if r[2] is None else r[2]))


def save_node_effects(path: Path, ne: NodeEffects) -> None:
    tensors = {f"effects.{h}": e for h, e in ne.mean.items()}
    tensors.update({f"per_prompt.{h}": e for h, e in ne.per_prompt.items()})
    tensors.update(ne.pairs.to_tensors())
    tensors["metric.clean"], tensors["metric.corrupt"] = ne.metric_clean, ne.metric_corrupt
    meta = EffectsMeta(hooks=ne.hooks, d_sae=ne.d_sae, method=ne.method, metric=ne.metric, positions=list(ne.positions),
                       layout="effects.<hook>: [n_pos, d_sae + 1], last column = SAE error node; per_prompt.<hook>: [n_pairs, n_pos, d_sae + 1]")
    save_tensors(path, tensors, metadata={"sae_ooc": json.dumps(meta.to_json())})


def load_node_effects(path: Path) -> NodeEffects:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no node effects at {path}; run `sae-ooc attribute --run {path.parent.parent}` first")
    with safe_open(str(path), framework="pt") as f:
        meta = EffectsMeta.read(f)
        t = {k: f.get_tensor(k) for k in f.keys()}
    return NodeEffects(
        hooks=meta.hooks, d_sae={h: int(v) for h, v in meta.d_sae.items()}, method=meta.method, metric=meta.metric,
        per_prompt={h: t[f"per_prompt.{h}"] for h in meta.hooks}, pairs=Pairs.from_tensors(t),
        metric_clean=t["metric.clean"], metric_corrupt=t["metric.corrupt"], positions=tuple(opt(meta.positions, POSITION_ROLES)),
    )


def effects_summary(ne: NodeEffects, vocab, top: int) -> dict:
    ranked = ne.ranked()
    nodes = []
    for rank, (h, p, i, v) in enumerate(ranked[:top]):
        n = Node(h, p, i)
        nodes.append({
            "rank": rank + 1, "node": n.id, "hook": h, "position": p, "role": ne.positions[p],
            "feature": "error" if i is None else i, "mean_effect": v, "std_effect": ne.std_of(n),
            "per_prompt": [round(x, 6) for x in ne.of(n).tolist()],
        })
    total = ne.metric_corrupt - ne.metric_clean
    return {
        "method": ne.method, "metric": ne.metric, "n_pairs": len(ne.pairs), "hooks": ne.hooks, "positions": list(ne.positions),
        "metric_clean_mean": float(ne.metric_clean.mean()), "metric_corrupt_mean": float(ne.metric_corrupt.mean()),
        "total_effect_mean": float(total.mean()),
        "sum_of_node_effects_mean": float(sum(e.sum((1, 2)) for e in ne.per_prompt.values()).mean()),
        "n_nonzero_nodes": len(ranked),
        "pairs": [{"clean": vocab.decode(c), "corrupt": vocab.decode(k), "answer": vocab.entity_name(int(a)), "answer_corrupt": vocab.entity_name(int(a2))}
                  for c, k, a, a2 in zip(ne.pairs.clean, ne.pairs.corrupt, ne.pairs.answer, ne.pairs.answer_corrupt)],
        "nodes": nodes,
    }


def load_effects_and_model(run, what: str):
    """(node effects, spliced model) for a stage that builds a circuit from the attribute stage's pairs: the SAEs must
    be the ones the effects were computed with, and there must be a pair to choose on and one to score on."""
    ne = load_node_effects(run.attribution_dir / EFFECTS_FILE)
    sp = load_spliced(run)
    if sp.hooks != ne.hooks:
        raise UserError(f"the SAEs in {run.saes_dir} ({', '.join(sp.hooks)}) differ from those the node effects were computed with; "
                        f"rerun `sae-ooc attribute --run {run.root}`")
    if len(ne.pairs) < 2:
        raise UserError(f"{what} needs at least 2 attribution pairs (one to choose it on, one to score it on) but {run.attribution_dir} "
                        f"has {len(ne.pairs)}; raise attribution.n_pairs (or use attribution.split=all) and rerun `sae-ooc attribute`")
    return ne, sp
