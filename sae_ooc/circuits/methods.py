"""Attribution methods: the effect of every node on the metric, m(clean run with the node at its corrupted
value) - m(clean run), exactly or estimated. Each is one function registered under its config name:

  exact  one patched forward pass per (pair, node); nodes whose clean and corrupted values are equal
         have effect exactly 0 and are skipped, the rest run as big batches of patched rows.
  atp    attribution patching: gradient at the clean run times (corrupted - clean).
  ig     integrated gradients: the gradient averaged over `ig_steps` points on the straight line from
         the clean to the corrupted values of one hook's nodes, times (corrupted - clean).
  atp_verified  atp for every node, then exact patching of each pair's `verify_top` nodes with the
         largest |atp| (atp as a cheap filter, exact patching as the judge of what it keeps).

A method is `fn(sp, pairs, metric, **options) -> {hook: [n_pairs, n_pos, d_sae + 1]}` (last column: the error
node); it takes the options it needs (ig_steps, chunk, progress, verify_top) and ignores the rest. Adding one:
its name in `sae_ooc.registry.NAMES["attribution.method"]` and `@ATTRIBUTION_METHODS.register("name")` on its function.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import NodeValues, RowPatches, Spliced
from sae_ooc.registry import Registry

ATTRIBUTION_METHODS: Registry = Registry("attribution.method")


def _empty(sp: Spliced, n: int) -> dict[str, torch.Tensor]:
    return {h: torch.zeros(n, sp.n_pos, sp.d_sae[h] + 1) for h in sp.hooks}


def _per_node(sp: Spliced, acts: dict[str, torch.Tensor], errs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{hook: [n, P, d_sae + 1]}: feature effects, then the error node's effect (summed over its vector) last."""
    return {h: torch.cat([acts[h], errs[h].sum(-1, keepdim=True)], -1).cpu() for h in sp.hooks}


@ATTRIBUTION_METHODS.register("exact")
@torch.no_grad()
def effects_exact(sp: Spliced, pairs: Pairs, metric: str, chunk: int = 4096, progress: bool = False, **_) -> dict[str, torch.Tensor]:
    """Exact activation patching of every node whose corrupted value differs from its clean value
    (the others have effect exactly 0), as batches of `chunk` patched clean rows."""
    logits, clean = sp.cache(pairs.clean)
    _, corr = sp.cache(pairs.corrupt)
    m_clean = pairs.metric(logits, metric).cpu()
    out = _empty(sp, len(pairs))
    _patch_jobs(sp, pairs, _changed_jobs(sp, clean, corr), clean, corr, m_clean, metric, out, chunk, progress)
    return out


@ATTRIBUTION_METHODS.register("atp")
def effects_atp(sp: Spliced, pairs: Pairs, metric: str, **_) -> dict[str, torch.Tensor]:
    """Attribution patching: one forward and backward pass on the clean prompts, one forward pass on the corrupted."""
    logits, leaves, _ = sp.run_leaves(pairs.clean)
    pairs.metric(logits, metric).sum().backward()
    _, corr = sp.cache(pairs.corrupt)
    d, g = corr.minus(leaves), leaves.grads()
    return _per_node(sp, {h: g.acts[h] * d.acts[h] for h in sp.hooks}, {h: g.errs[h] * d.errs[h] for h in sp.hooks})


@ATTRIBUTION_METHODS.register("ig")
def effects_ig(sp: Spliced, pairs: Pairs, metric: str, ig_steps: int = 10, **_) -> dict[str, torch.Tensor]:
    """Integrated gradients, one hook at a time: its nodes move from clean to corrupted (midpoint rule)
    while the other spliced layers pass the gradient straight through."""
    steps = ig_steps
    _, clean = sp.cache(pairs.clean)
    _, corr = sp.cache(pairs.corrupt)
    d = corr.minus(clean)
    B = len(pairs)
    alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps).repeat_interleave(B).to(sp.device)[:, None, None]
    rep = pairs.subset(torch.arange(B).repeat(steps))
    ga, ge = {}, {}
    for h in sp.hooks:
        fa = (clean.acts[h].repeat(steps, 1, 1) + alphas * d.acts[h].repeat(steps, 1, 1)).requires_grad_(True)
        fe = (clean.errs[h].repeat(steps, 1, 1) + alphas * d.errs[h].repeat(steps, 1, 1)).requires_grad_(True)
        logits, _ = sp.run_straight_through(rep.clean, {h: (fa, fe)})
        rep.metric(logits, metric).sum().backward()
        ga[h] = fa.grad.view(steps, B, *fa.shape[1:]).mean(0) * d.acts[h]
        ge[h] = fe.grad.view(steps, B, *fe.shape[1:]).mean(0) * d.errs[h]
    return _per_node(sp, ga, ge)


@ATTRIBUTION_METHODS.register("atp_verified")
def effects_atp_verified(sp: Spliced, pairs: Pairs, metric: str, verify_top: int = 96, chunk: int = 4096,
                         progress: bool = False, **_) -> dict[str, torch.Tensor]:
    """atp for every node, then exact patching of each pair's `verify_top` nodes with the largest |atp|
    effect, whose atp estimate is replaced by the exact effect (AtP as a filter, exact patching as the
    judge: a node atp overrates is corrected; one it underrates below the shortlist keeps its atp value)."""
    out = effects_atp(sp, pairs, metric)
    with torch.no_grad():
        logits, clean = sp.cache(pairs.clean)
        _, corr = sp.cache(pairs.corrupt)
        m_clean = pairs.metric(logits, metric).cpu()
        jobs = _changed_jobs(sp, clean, corr)
        short = shortlist_mask(out, changed_mask(sp, clean, corr), verify_top)
        chosen = torch.zeros(len(jobs), dtype=torch.bool)
        for h, sel, b, p, col in _job_columns(sp, jobs):
            chosen[sel] = short[h][b, p, col]
        _patch_jobs(sp, pairs, jobs[chosen], clean, corr, m_clean, metric, out, chunk, progress)
    return out


def changed_mask(sp: Spliced, clean: NodeValues, corr: NodeValues) -> dict[str, torch.Tensor]:
    """{hook: [n, P, d_sae + 1] bool}: nodes whose corrupted value differs from their clean value (the only
    nodes with a nonzero effect, and the only ones any method computes)."""
    moved = corr.differs(clean)
    return {h: torch.cat([moved.acts[h], moved.errs[h][..., None]], -1).cpu() for h in sp.hooks}


def shortlist_mask(atp: dict[str, torch.Tensor], changed: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """atp_verified's shortlist: each pair's `k` changed nodes with the largest |atp| (ties: the earlier node
    in hook, position, column order), as {hook: [n, P, d_sae + 1] bool}: the nodes it patches exactly."""
    hooks = list(atp)
    score = torch.cat([atp[h].abs().masked_fill(~changed[h], -1.0).flatten(1) for h in hooks], 1)
    top = score.argsort(dim=1, descending=True, stable=True)[:, :k]
    flat = torch.zeros_like(score, dtype=torch.bool).scatter_(1, top, True) & (score >= 0)
    parts = flat.split([atp[h][0].numel() for h in hooks], 1)
    return {h: part.view(atp[h].shape) for h, part in zip(hooks, parts)}


def _changed_jobs(sp: Spliced, clean: NodeValues, corr: NodeValues) -> torch.Tensor:
    """[n_jobs, 4] rows (hook index, pair, pos, feature or -1 for the error node) of every node whose
    corrupted value differs from its clean value (the others have effect exactly 0)."""
    jobs = []
    moved = corr.differs(clean)
    for hi, h in enumerate(sp.hooks):
        b, p, i = moved.acts[h].nonzero(as_tuple=True)
        jobs.append(torch.stack([torch.full_like(b, hi), b, p, i], 1).cpu())
        b, p = moved.errs[h].nonzero(as_tuple=True)
        jobs.append(torch.stack([torch.full_like(b, hi), b, p, torch.full_like(b, -1)], 1).cpu())
    return torch.cat(jobs)


def _job_columns(sp: Spliced, jobs: torch.Tensor):
    """Per hook: (hook, row mask of its jobs, pair, pos, column in the [.., d_sae + 1] effect tensors)."""
    for hi, h in enumerate(sp.hooks):
        sel = jobs[:, 0] == hi
        yield h, sel, jobs[sel, 1], jobs[sel, 2], torch.where(jobs[sel, 3] >= 0, jobs[sel, 3], sp.d_sae[h])


@torch.no_grad()
def _patch_jobs(sp: Spliced, pairs: Pairs, jobs: torch.Tensor, clean: NodeValues, corr: NodeValues, m_clean: torch.Tensor,
                metric: str, out: dict[str, torch.Tensor], chunk: int, progress: bool) -> None:
    """out[hook][pair, pos, feature] = exact effect of each job, `chunk` patched clean rows at a time."""
    fast = sp.decode_is_stateless
    for start in tqdm(range(0, len(jobs), chunk), desc="exact patching", unit="batch", disable=not progress, leave=False):
        job = jobs[start : start + chunk]
        sub = pairs.subset(job[:, 1])
        logits = sp.run_deltas(sub.clean, _deltas_of(sp, job, clean, corr)) if fast else sp.run_patched(sub.clean, _patches_of(sp, job, corr))
        m = sub.metric(logits, metric).cpu()
        for h, sel, b, p, col in _job_columns(sp, job):
            out[h][b, p, col] = m[sel] - m_clean[b]


def _patches_of(sp: Spliced, job: torch.Tensor, corr: NodeValues) -> RowPatches:
    """Row r of the batch patches node job[r] = (hook index, pair, pos, feature or -1) to its corrupted value."""
    patches = RowPatches()
    rows = torch.arange(len(job))
    for hi, h in enumerate(sp.hooks):
        sel = job[:, 0] == hi
        feat, err = sel & (job[:, 3] >= 0), sel & (job[:, 3] < 0)
        if feat.any():
            b, p, i = job[feat, 1], job[feat, 2], job[feat, 3]
            patches.add_feats(h, rows[feat], p, i, corr.acts[h][b, p, i].cpu())
        if err.any():
            b, p = job[err, 1], job[err, 2]
            patches.add_errs(h, rows[err], p, corr.errs[h][b, p].cpu())
    return patches


def _deltas_of(sp: Spliced, job: torch.Tensor, clean: NodeValues, corr: NodeValues) -> dict:
    """The same patches as _patches_of, as vectors added to the original model's activations."""
    deltas = {}
    rows = torch.arange(len(job))
    for hi, h in enumerate(sp.hooks):
        sel = job[:, 0] == hi
        feat, err = sel & (job[:, 3] >= 0), sel & (job[:, 3] < 0)
        parts = []
        if feat.any():
            b, p, i = job[feat, 1], job[feat, 2], job[feat, 3]
            dev = clean.acts[h].device
            vec = sp.feature_deltas(h, clean.acts[h][b.to(dev), p.to(dev)], i, corr.acts[h][b.to(dev), p.to(dev), i.to(dev)])
            parts.append((rows[feat], p, vec))
        if err.any():
            b, p = job[err, 1], job[err, 2]
            dev = clean.errs[h].device
            parts.append((rows[err], p, corr.errs[h][b.to(dev), p.to(dev)] - clean.errs[h][b.to(dev), p.to(dev)]))
        if parts:
            deltas[h] = tuple(torch.cat([q[k].to(parts[0][2].device) if k == 2 else q[k] for q in parts]) for k in range(3))
    return deltas


ATTRIBUTION_METHODS.check()  # every name of the one list (sae_ooc.registry.NAMES) is registered above


def node_effects(sp: Spliced, pairs: Pairs, method: str, metric: str, batch_size: int = 256, ig_steps: int = 10,
                 exact_batch_size: int = 4096, progress: bool = True, verify_top: int = 96) -> dict[str, torch.Tensor]:
    """Per-pair effects {hook: [n_pairs, n_pos, d_sae + 1]} of every node, by `method`."""
    effects = ATTRIBUTION_METHODS.get(method)
    parts = []
    batches = list(pairs.batches(batch_size))
    for b in tqdm(batches, desc=f"attribute ({method})", unit="batch", disable=not progress or len(batches) < 2):
        parts.append(effects(sp, b, metric, ig_steps=ig_steps, chunk=exact_batch_size, progress=progress, verify_top=verify_top))
    return {h: torch.cat([p[h] for p in parts]) for h in sp.hooks}


@torch.no_grad()
def pair_metrics(sp: Spliced, pairs: Pairs, metric: str, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The metric on the clean and on the corrupted prompts (both against t2 vs t2')."""
    clean, corrupt = [], []
    for b in pairs.batches(batch_size):
        clean.append(b.metric(sp.model(b.clean.to(sp.device)), metric).cpu())
        corrupt.append(b.metric(sp.model(b.corrupt.to(sp.device)), metric).cpu())
    return torch.cat(clean), torch.cat(corrupt)
