"""Ablation: what a node outside a circuit is set to, and the metric of the model with nodes ablated.

The kinds (`circuit.ablation`, `circuit.prune_ablation`), one registered function each:
  mean      each node's mean over the task's two-hop prompts (per position);
  zero      zero;
  resample  its value on a random two-hop prompt (one per pair);
  corrupt   its value on the pair's corrupted prompt, so the ablation matches the clean/corrupted contrast the
            node effects measure.
A kind is `fn(sp, ds, pairs, n_examples, seed, batch) -> Ablation`; adding one: its name in
`sae_ooc.config.ABLATIONS` and `@ABLATIONS.register("name")` on its function.
"""

from __future__ import annotations

import torch

from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import NodeMask, NodeValues, Spliced
from sae_ooc.config import ABLATIONS as ABLATION_NAMES
from sae_ooc.errors import UserError
from sae_ooc.registry import Registry

ABLATIONS: Registry = Registry("ablation", expected=ABLATION_NAMES)


class Ablation(NodeValues):
    """What an ablated node is set to: {hook: [P, d]} shared by all pairs, or [n_pairs, P, d] per pair
    (`rows` picks pairs; `get(node)` is one node's value)."""


def task_prompts(ds) -> torch.Tensor:
    """The two-hop prompts of train (of every split if train has none): the task distribution. A multi-token answer's
    tokens but its last follow the prompt, as in the pairs (node positions cover them)."""
    for splits in (("train",), ("train", "test_id", "test_ood")):
        rows = [list(ids) + list(ans[:-1]) for s in splits
                for ids, ans, hop in zip(ds[s]["input_ids"], ds[s]["answer_ids"], ds[s]["hop"]) if hop == 2]
        if rows:
            return torch.tensor(rows, dtype=torch.long)
    raise UserError("the task has no two-hop prompts to ablate with; regenerate the data with task.phi > 0")


def _cached(sp: Spliced, token_batches) -> Ablation:
    return Ablation.cat([sp.cache(t)[1] for t in token_batches])


@ABLATIONS.register("mean")
def mean_ablation(sp: Spliced, ds, pairs: Pairs, n_examples: int, seed: int, batch: int) -> Ablation:
    prompts = task_prompts(ds)
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
    prompts = task_prompts(ds)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(prompts), (len(pairs),), generator=g)
    return _cached(sp, (prompts[idx[i : i + batch]] for i in range(0, len(idx), batch)))


@ABLATIONS.register("corrupt")
def corrupt_ablation(sp: Spliced, ds, pairs: Pairs, n_examples: int, seed: int, batch: int) -> Ablation:
    return _cached(sp, (b.corrupt for b in pairs.batches(batch)))


ABLATIONS.check()  # the registrations above are exactly the names config validation accepts


@torch.no_grad()
def ablation_values(sp: Spliced, ds, kind: str, n_examples: int, seed: int, pairs: Pairs, batch: int = 2048) -> Ablation:
    """The values of ablation `kind` (see the module docstring); mean uses up to `n_examples` two-hop prompts."""
    return ABLATIONS.get(kind)(sp, ds, pairs, n_examples, seed, batch)


@torch.no_grad()
def ablated_metric(sp: Spliced, pairs: Pairs, keep: tuple[dict, dict] | None, abl: Ablation, metric: str, batch: int = 1024) -> torch.Tensor:
    """Per-pair metric with every node outside `keep` set to its ablation value (keep=None: the model).
    Keep masks (features, errors) are shared ([P, d_sae] and [P]) or per pair ([n, P, d_sae] and [n, P])."""
    out = []
    for s in range(0, len(pairs), batch):
        b = pairs.subset(slice(s, s + batch))
        if keep is None:
            logits = sp.model(b.clean.to(sp.device))
        else:
            a, k = abl.rows(slice(s, s + batch)), NodeMask(*keep).rows(slice(s, s + batch))
            logits = sp.run_replaced(b.clean, a.acts, a.errs, k.acts, k.errs)
        out.append(b.metric(logits, metric).cpu())
    return torch.cat(out)
