"""Ablation: what a node outside a circuit is set to, and the metric of the model with nodes ablated.

The kinds (`circuit.ablation`, `circuit.prune_ablation`), one registered function each:
  mean      each node's mean over the task's two-hop prompts (per position);
  zero      zero;
  resample  its value on a random two-hop prompt (one per pair);
  corrupt   its value on the pair's corrupted prompt, so the ablation matches the clean/corrupted contrast the
            node effects measure.
A kind is `fn(sp, ds, pairs, n_examples, seed, batch) -> Ablation`; adding one: its name in
`sae_ooc.registry.NAMES["ablation"]` and `@ABLATIONS.register("name")` on its function.

Scope: which nodes an ablation may set (`Ablation.scope`, per pair). A TopK or ReLU SAE's feature that is silent on a
prompt is 0 there; setting it to its mean adds that feature's mean contribution to the prompt's own code (on the
default run, 0.8-0.98 of the mean reconstruction), so "ablating" a silent feature injects signal instead of removing
it. Every ablation therefore sets only the features in its scope to its values, and holds every other feature it
ablates at its value on the clean prompt, 0, so an upstream ablation cannot switch it on either:
  shared values (mean, zero)               features active on the clean prompt;
  values of another prompt (resample,      features active on the clean prompt or on that prompt (a feature silent
  corrupt: per pair)                       on the clean prompt but active on the corrupted one is the very signal
                                           an interchange moves in);
and every error term. Which ablation is valid for which unit: `VALIDITY` (recorded in faithfulness.json).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import NodeMask, NodeValues, Spliced
from sae_ooc.errors import UserError
from sae_ooc.registry import Registry
from sae_ooc.tasks.rows import columns

ABLATIONS: Registry = Registry("ablation")


# which ablation is valid for which unit, as every circuit here applies it (features and error terms: single nodes;
# variable groups: their members, each node by its own rule; subspaces are not ablated by these kinds)
VALIDITY = {
    "mean": {"feature": "valid only on features active on the clean prompt (a silent feature set to its mean injects the "
                        "mean's signal: see the scope check); so restricted here",
             "error": "valid: every error term is replaced by its mean"},
    "zero": {"feature": "valid: a silent TopK/ReLU feature is already 0, so only active features change",
             "error": "an error term set to 0 (as if the SAE reconstructed perfectly) is a value no prompt has: read error-node "
                      "numbers under zero ablation with that in mind"},
    "resample": {"feature": "valid on features active on the clean or the resampled prompt (interchange); so restricted here",
                 "error": "valid: the resampled prompt's error term"},
    "corrupt": {"feature": "valid on features active on the clean or the corrupted prompt (interchange); so restricted here",
                "error": "valid: the corrupted prompt's error term"},
}


@dataclass
class Ablation(NodeValues):
    """What an ablated node is set to: {hook: [P, d]} shared by all pairs, or [n_pairs, P, d] per pair
    (`rows` picks pairs; `get(node)` is one node's value). `scope` (per pair, `ablation_scope`): the nodes it may
    set; None: every node (only the scope check uses that)."""

    scope: NodeMask | None = None

    def rows(self, idx):
        out = super().rows(idx)
        out.scope = None if self.scope is None else self.scope.rows(idx)
        return out

    def unscoped(self) -> Ablation:
        return Ablation(self.acts, self.errs)

    def scoped_acts(self) -> dict[str, torch.Tensor]:
        """What an ablated feature is set to on each pair: the ablation's value inside the scope, 0 (its value on the
        clean prompt) outside it; without a scope, the values themselves."""
        if self.scope is None:
            return self.acts
        return {h: torch.where(self.scope.acts[h], a, torch.zeros((), dtype=a.dtype, device=a.device)) for h, a in self.acts.items()}


def is_interchange(abl: NodeValues) -> bool:
    """Values of another prompt, one per pair (resample, corrupt), rather than values shared by every pair (mean, zero)."""
    return any(a.dim() == 3 for a in abl.acts.values())


def ablation_scope(clean: NodeValues, abl: NodeValues) -> NodeMask:
    """Per pair, the nodes an ablation may set (module docstring): features active on the clean prompt, or for
    values of another prompt active on either; every error term."""
    acts = {h: (a != 0) | (abl.acts[h] != 0) if is_interchange(abl) else a != 0 for h, a in clean.acts.items()}
    return NodeMask(acts, {h: torch.ones(e.shape[:-1], dtype=torch.bool, device=e.device) for h, e in clean.errs.items()})


def task_prompts(ds, hop: int = 2) -> torch.Tensor:
    """The analysed prompts (rows of the layout's question_hop) of train (of every split if train has none): the task
    distribution. A multi-token answer's tokens but its last follow the prompt, as in the pairs (node positions cover them)."""
    for splits in (("train",), ("train", "test_id", "test_ood_sys", "test_unanswerable")):
        rows = [list(ids) + list(ans[:-1]) for s in splits
                for ids, ans, row_hop in zip(*columns(ds[s], "input_ids", "answer_ids", "hop")) if row_hop == hop]
        if rows:
            return torch.tensor(rows, dtype=torch.long)
    raise UserError("the task has no analysed prompts to ablate with; regenerate the data with task.phi > 0")


def _cached(sp: Spliced, token_batches) -> Ablation:
    return Ablation.cat([sp.cache(t)[1] for t in token_batches])


@ABLATIONS.register("mean")
def mean_ablation(sp: Spliced, ds, pairs: Pairs, n_examples: int, seed: int, batch: int) -> Ablation:
    prompts = task_prompts(ds, sp.layout.question_hop)
    g = torch.Generator().manual_seed(seed)
    if len(prompts) > n_examples:
        prompts = prompts[torch.randperm(len(prompts), generator=g)[:n_examples]]
    sa = {h: torch.zeros(sp.n_pos, sp.d_sae[h], device=sp.device, dtype=torch.float64) for h in sp.hooks}
    se = {h: torch.zeros(sp.n_pos, sp.d_in[h], device=sp.device, dtype=torch.float64) for h in sp.hooks}
    for i in range(0, len(prompts), batch):
        _, v = sp.cache(prompts[i : i + batch])
        for h in sp.hooks:
            sa[h] += v.acts[h].double().sum(0)
            se[h] += v.errs[h].double().sum(0)
    n = len(prompts)
    return Ablation({h: (a / n).float() for h, a in sa.items()}, {h: (e / n).float() for h, e in se.items()})


@ABLATIONS.register("zero")
def zero_ablation(sp: Spliced, ds, pairs: Pairs, n_examples: int, seed: int, batch: int) -> Ablation:
    return Ablation({h: torch.zeros(sp.n_pos, sp.d_sae[h], device=sp.device) for h in sp.hooks},
                    {h: torch.zeros(sp.n_pos, sp.d_in[h], device=sp.device) for h in sp.hooks})


@ABLATIONS.register("resample")
def resample_ablation(sp: Spliced, ds, pairs: Pairs, n_examples: int, seed: int, batch: int) -> Ablation:
    prompts = task_prompts(ds, sp.layout.question_hop)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(prompts), (len(pairs),), generator=g)
    return _cached(sp, (prompts[idx[i : i + batch]] for i in range(0, len(idx), batch)))


@ABLATIONS.register("corrupt")
def corrupt_ablation(sp: Spliced, ds, pairs: Pairs, n_examples: int, seed: int, batch: int) -> Ablation:
    return _cached(sp, (b.corrupt for b in pairs.batches(batch)))


ABLATIONS.check()  # every name of the one list (sae_ooc.registry.NAMES) is registered above


@torch.no_grad()
def ablation_values(sp: Spliced, ds, kind: str, n_examples: int, seed: int, pairs: Pairs, batch: int = 2048) -> Ablation:
    """The values of ablation `kind` on `pairs` with their scope (see the module docstring); mean uses up to
    `n_examples` two-hop prompts."""
    abl = ABLATIONS.get(kind)(sp, ds, pairs, n_examples, seed, batch)
    clean = NodeValues.cat([sp.cache(b.clean)[1] for b in pairs.batches(batch)])
    abl.scope = ablation_scope(clean, abl)
    return abl


@torch.no_grad()
def ablated_metric(sp: Spliced, pairs: Pairs, keep: tuple[dict, dict] | None, abl: Ablation, metric: str, batch: int = 1024) -> torch.Tensor:
    """Per-pair metric with every node outside `keep` ablated (keep=None: the model): set to its ablation value inside
    the ablation's scope, held at its clean value 0 outside it (`Ablation.scoped_acts`). Keep masks (features, errors)
    are shared ([P, d_sae] and [P]) or per pair ([n, P, d_sae] and [n, P])."""
    out = []
    for s in range(0, len(pairs), batch):
        b = pairs.subset(slice(s, s + batch))
        if keep is None:
            logits = sp.model(b.clean.to(sp.device))
        else:
            a, k = abl.rows(slice(s, s + batch)), NodeMask(*keep).rows(slice(s, s + batch))
            logits = sp.run_replaced(b.clean, a.scoped_acts(), a.errs, k.acts, k.errs)
        out.append(b.metric(logits, metric).cpu())
    return torch.cat(out)

