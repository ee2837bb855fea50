"""Activation patching, corrupted -> clean, on the A->C metric: layer x position for resid_pre, attn_out and mlp_out,
and per head for z (its output) and its attention pattern, batched.

The semantics are `transformer_lens.patching`'s (`get_act_patch_resid_pre`, `get_act_patch_attn_out`,
`get_act_patch_mlp_out`, `get_act_patch_attn_head_out_by_pos`, `get_act_patch_attn_head_pattern_by_pos`): run the
corrupted prompt, overwrite one activation with its value on the clean prompt, read the metric. TransformerLens runs
one forward per patched site (over every prompt); here every site of a layer is a block of rows of one batched
forward, so a hook patches a different site in each block, and that forward starts at the patched layer from the
corrupted run's residual stream (the layers below are the same in every row). tests/test_analyze.py checks that
both agree; benchmarks/bench_analyses.py times both.
"""

from __future__ import annotations

import torch

from sae_ooc.analyses.common import normalise, run_hooked
from sae_ooc.circuits.pairs import Pairs

# kind -> (hook name of layer l, shape of its sites: "pos" = one per position, "pos_head" = per position and head)
KINDS = {
    "resid_pre": ("blocks.{l}.hook_resid_pre", "pos"),
    "attn_out": ("blocks.{l}.hook_attn_out", "pos"),
    "mlp_out": ("blocks.{l}.hook_mlp_out", "pos"),
    "z": ("blocks.{l}.attn.hook_z", "pos_head"),  # a head's output at one position (get_act_patch_attn_head_out_by_pos)
    "pattern": ("blocks.{l}.attn.hook_pattern", "pos_head"),  # a head's attention row at one destination position
}


def _put(kind: str):
    """How a site's clean value goes into the corrupted activation: (act, batch rows, source prompts, sites, clean)."""
    if kind == "pattern":  # [b, head, dest, src]: the whole attention row of (dest, head)
        def put(act, b, src, site, clean):
            act[b, site[:, 1], site[:, 0]] = clean[src, site[:, 1], site[:, 0]]
    elif kind == "z":  # [b, pos, head, d_head]
        def put(act, b, src, site, clean):
            act[b, site[:, 0], site[:, 1]] = clean[src, site[:, 0], site[:, 1]]
    else:  # [b, pos, d_model]
        def put(act, b, src, site, clean):
            act[b, site[:, 0]] = clean[src, site[:, 0]]
    return put


def sites(kind: str, n_pos: int, n_heads: int) -> torch.Tensor:
    """Every site of one layer: [S, 1] positions, or [S, 2] (position, head) in position-major order."""
    if KINDS[kind][1] == "pos":
        return torch.arange(n_pos)[:, None]
    return torch.cartesian_prod(torch.arange(n_pos), torch.arange(n_heads))


@torch.no_grad()
def patch_layer(model, pairs: Pairs, kind: str, layer: int, clean_act: torch.Tensor, metric: str, batch_size: int,
                site_list: torch.Tensor | None = None, corrupt_resid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-prompt metric with each site of `kind` at `layer` patched clean -> corrupted: [S, n]. `corrupt_resid`: the
    corrupted run's blocks.<layer>.hook_resid_pre, to start the patched forwards there instead of at the tokens."""
    name = KINDS[kind][0].format(l=layer)
    n = len(pairs)
    st = sites(kind, pairs.clean.shape[1], model.cfg.n_heads) if site_list is None else site_list
    site_of, src = torch.arange(len(st)).repeat_interleave(n), torch.arange(n).repeat(len(st))
    put = _put(kind)
    device = clean_act.device

    def hook(act, hook, rows):
        r = torch.arange(rows.start, rows.stop)
        put(act, torch.arange(len(r), device=device), src[r].to(device), st[site_of[r]].to(device), clean_act)
        return act

    if corrupt_resid is None:
        logits = run_hooked(model, pairs.corrupt.repeat(len(st), 1), [(name, hook)], batch_size)
    else:
        logits = run_hooked(model, corrupt_resid.repeat(len(st), 1, 1), [(name, hook)], batch_size, start=layer)
    return pairs.subset(src).metric(logits, metric).view(len(st), n)


@torch.no_grad()
def clean_cache(model, pairs: Pairs, names: list[str]):
    device = next(model.parameters()).device
    return model.run_with_cache(pairs.clean.to(device), names_filter=lambda h: h in names)


@torch.no_grad()
def patching(model, pairs: Pairs, metric: str = "logit_diff", batch_size: int = 8192, kinds=tuple(KINDS)) -> dict:
    """Mean metric and its normalised recovery per layer and position (and head) for every kind of site.

    Returns {"metric", "n_prompts", "clean", "corrupt", kind: {"raw": [L][P] or [L][P][H], "normalised": ..., "sem": ...}}.
    """
    L, P, H = model.cfg.n_layers, pairs.clean.shape[1], model.cfg.n_heads
    names = [KINDS[k][0].format(l=l) for k in kinds for l in range(L)]
    logits, cache = clean_cache(model, pairs, names)
    device = next(model.parameters()).device
    m_clean = pairs.metric(logits.float().cpu(), metric)
    resid = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
    lg_corrupt, corrupt_cache = model.run_with_cache(pairs.corrupt.to(device), names_filter=lambda h: h in resid)
    m_corrupt = pairs.metric(lg_corrupt.float().cpu(), metric)
    clean, corrupt = float(m_clean.mean()), float(m_corrupt.mean())
    out = {"metric": metric, "n_prompts": len(pairs), "clean": clean, "corrupt": corrupt,
           "clean_std": float(m_clean.std()) if len(pairs) > 1 else 0.0, "corrupt_std": float(m_corrupt.std()) if len(pairs) > 1 else 0.0}
    for kind in kinds:
        per = torch.stack([patch_layer(model, pairs, kind, l, cache[KINDS[kind][0].format(l=l)].to(device), metric, batch_size,
                                       corrupt_resid=corrupt_cache[resid[l]]) for l in range(L)])  # [L, S, n]
        shape = (L, P) if KINDS[kind][1] == "pos" else (L, P, H)
        raw = per.mean(-1).view(shape)
        sem = (per.std(-1) / len(pairs) ** 0.5 if len(pairs) > 1 else torch.zeros_like(per[..., 0])).view(shape)
        out[kind] = {"raw": raw.tolist(), "normalised": normalise(raw, clean, corrupt).tolist(), "sem": sem.tolist()}
    return out
