"""Activation patching, corrupted -> clean, on the A->C metric: layer x position for resid_pre, attn_out and mlp_out,
and per head for z (its output) and its attention pattern, batched. The one implementation of activation patching:
`analyze patching`, `analyze attention` (head outputs at r2) and `sae-ooc dynamics` (resid_pre per checkpoint) call it.

The semantics are `transformer_lens.patching`'s (`get_act_patch_resid_pre`, `get_act_patch_attn_out`,
`get_act_patch_mlp_out`, `get_act_patch_attn_head_out_by_pos`, `get_act_patch_attn_head_pattern_by_pos`): run the
corrupted prompt, overwrite one activation with its value on the clean prompt, read the metric. As there, one generic
function (`generic_patch`: a hook name, a patch setter, the sites) does the work and every kind is a named variant of it
(`KINDS`: hook name and setter; `patch_layer`). TransformerLens runs one forward per patched site (over every prompt);
here every site of a layer is a block of rows of one batched forward, so a hook patches a different site in each block,
and that forward starts at the patched layer from the corrupted run's residual stream (the layers below are the same in
every row). tests/test_analyze.py checks that both agree; benchmarks/bench_analyses.py times both.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from sae_ooc.analyses.common import normalise, run_hooked
from sae_ooc.circuits.pairs import Pairs


# Patch setters, TransformerLens's (`layer_pos_patch_setter`, ...) for a block of rows: (act, batch rows, source prompts,
# sites, clean) puts each row's site of its source prompt's clean activation into the corrupted activation.
def pos_setter(act, b, src, site, clean):
    """[b, pos, ...]: one position (resid_pre, attn_out, mlp_out)."""
    act[b, site[:, 0]] = clean[src, site[:, 0]]


def pos_head_vector_setter(act, b, src, site, clean):
    """[b, pos, head, d_head]: one head at one position (z)."""
    act[b, site[:, 0], site[:, 1]] = clean[src, site[:, 0], site[:, 1]]


def head_pos_pattern_setter(act, b, src, site, clean):
    """[b, head, dest, src]: the whole attention row of (dest, head)."""
    act[b, site[:, 1], site[:, 0]] = clean[src, site[:, 1], site[:, 0]]


class Kind(NamedTuple):
    hook: str  # hook name of layer l
    sites: str  # "pos" = one site per position, "pos_head" = per position and head (position-major)
    setter: Callable


KINDS = {
    "resid_pre": Kind("blocks.{l}.hook_resid_pre", "pos", pos_setter),
    "attn_out": Kind("blocks.{l}.hook_attn_out", "pos", pos_setter),
    "mlp_out": Kind("blocks.{l}.hook_mlp_out", "pos", pos_setter),
    "z": Kind("blocks.{l}.attn.hook_z", "pos_head", pos_head_vector_setter),  # get_act_patch_attn_head_out_by_pos
    "pattern": Kind("blocks.{l}.attn.hook_pattern", "pos_head", head_pos_pattern_setter),  # ..._attn_head_pattern_by_pos
}


def sites(kind: str, n_pos: int, n_heads: int) -> torch.Tensor:
    """Every site of one layer: [S, 1] positions, or [S, 2] (position, head) in position-major order."""
    if KINDS[kind].sites == "pos":
        return torch.arange(n_pos)[:, None]
    return torch.cartesian_prod(torch.arange(n_pos), torch.arange(n_heads))


@torch.no_grad()
def generic_patch(model, pairs: Pairs, hook_name: str, setter: Callable, site_list: torch.Tensor, clean_act: torch.Tensor,
                  metric: str, batch_size: int, corrupt_resid: torch.Tensor | None = None, start: int | None = None) -> torch.Tensor:
    """Per-prompt metric with each site of `site_list` [S, k] of `hook_name` patched clean -> corrupted: [S, n]
    (TransformerLens's `generic_activation_patch`, batched). `corrupt_resid`: the corrupted run's residual stream
    entering block `start`, to start the patched forwards there instead of at the tokens."""
    n = len(pairs)
    site_of, src = torch.arange(len(site_list)).repeat_interleave(n), torch.arange(n).repeat(len(site_list))
    device = clean_act.device

    def hook(act, hook, rows):
        r = torch.arange(rows.start, rows.stop)
        setter(act, torch.arange(len(r), device=device), src[r].to(device), site_list[site_of[r]].to(device), clean_act)
        return act

    if corrupt_resid is None:
        logits = run_hooked(model, pairs.corrupt.repeat(len(site_list), 1), [(hook_name, hook)], batch_size)
    else:
        logits = run_hooked(model, corrupt_resid.repeat(len(site_list), 1, 1), [(hook_name, hook)], batch_size, start=start)
    return pairs.subset(src).metric(logits, metric).view(len(site_list), n)


def patch_layer(model, pairs: Pairs, kind: str, layer: int, clean_act: torch.Tensor, metric: str, batch_size: int,
                site_list: torch.Tensor | None = None, corrupt_resid: torch.Tensor | None = None) -> torch.Tensor:
    """`generic_patch` for the sites of `kind` at `layer` (every one, or `site_list`): [S, n]. `corrupt_resid`: the
    corrupted run's blocks.<layer>.hook_resid_pre, to start the patched forwards there instead of at the tokens."""
    k = KINDS[kind]
    st = sites(kind, pairs.clean.shape[1], model.cfg.n_heads) if site_list is None else site_list
    return generic_patch(model, pairs, k.hook.format(l=layer), k.setter, st, clean_act, metric, batch_size, corrupt_resid, layer)


@torch.no_grad()
def clean_cache(model, pairs: Pairs, names: list[str]):
    device = next(model.parameters()).device
    return model.run_with_cache(pairs.clean.to(device), names_filter=lambda h: h in names)


@torch.no_grad()
def patch_all(model, pairs: Pairs, kinds, metric: str = "logit_diff", batch_size: int = 8192):
    """Per-prompt metrics of the clean run [n], of the corrupted run [n], and per kind with every site of every layer
    patched, {kind: [L, S, n]} (S: `sites`)."""
    L = model.cfg.n_layers
    names = [KINDS[k].hook.format(l=l) for k in kinds for l in range(L)]
    logits, cache = clean_cache(model, pairs, names)
    device = next(model.parameters()).device
    m_clean = pairs.metric(logits.float().cpu(), metric)
    resid = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
    lg_corrupt, corrupt_cache = model.run_with_cache(pairs.corrupt.to(device), names_filter=lambda h: h in resid)
    m_corrupt = pairs.metric(lg_corrupt.float().cpu(), metric)
    per = {kind: torch.stack([patch_layer(model, pairs, kind, l, cache[KINDS[kind].hook.format(l=l)].to(device), metric, batch_size,
                                          corrupt_resid=corrupt_cache[resid[l]]) for l in range(L)]) for kind in kinds}
    return m_clean, m_corrupt, per


@torch.no_grad()
def patching(model, pairs: Pairs, metric: str = "logit_diff", batch_size: int = 8192, kinds=tuple(KINDS)) -> dict:
    """Mean metric and its normalised recovery per layer and position (and head) for every kind of site.

    Returns {"metric", "n_prompts", "clean", "corrupt", kind: {"raw": [L][P] or [L][P][H], "normalised": ..., "sem": ...}}.
    """
    L, P, H = model.cfg.n_layers, pairs.clean.shape[1], model.cfg.n_heads
    m_clean, m_corrupt, per_kind = patch_all(model, pairs, kinds, metric, batch_size)
    clean, corrupt = float(m_clean.mean()), float(m_corrupt.mean())
    out = {"metric": metric, "n_prompts": len(pairs), "clean": clean, "corrupt": corrupt,
           "clean_std": float(m_clean.std()) if len(pairs) > 1 else 0.0, "corrupt_std": float(m_corrupt.std()) if len(pairs) > 1 else 0.0}
    for kind in kinds:
        per = per_kind[kind]  # [L, S, n]
        shape = (L, P) if KINDS[kind].sites == "pos" else (L, P, H)
        raw = per.mean(-1).view(shape)
        sem = (per.std(-1) / len(pairs) ** 0.5 if len(pairs) > 1 else torch.zeros_like(per[..., 0])).view(shape)
        out[kind] = {"raw": raw.tolist(), "normalised": normalise(raw, clean, corrupt).tolist(), "sem": sem.tolist()}
    return out
