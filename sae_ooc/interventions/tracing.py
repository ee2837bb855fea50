"""Causal tracing of atomic facts (Meng et al. 2022), compact and batched: a small stand-in that a fuller
`analyze causal-tracing` can replace (same inputs, same [n, n_layers] effects out).

Corrupt the head entity's embedding with Gaussian noise (std `noise` times the std of the entity embeddings), then
restore one layer's clean MLP output (or residual stream after the block) at one position; the layer's effect on a fact
is the restored probability of the true tail minus the corrupted one, averaged over noise samples. Every fact and noise
sample is one row of the same forward pass; one pass per (layer, state).
"""

from __future__ import annotations

import torch

STATES = {"mlp": "blocks.{L}.hook_mlp_out", "resid": "blocks.{L}.hook_resid_post"}


@torch.no_grad()
def trace_effects(model, tokens: torch.Tensor, answer: torch.Tensor, answer_pos: torch.Tensor, n_entities: int, restore_pos: int,
                  layers: list[int], samples: int = 10, noise: float = 3.0, seed: int = 0, head_pos: int = 0) -> dict:
    """{"mlp"/"resid": [n, len(layers)] effects, "p_clean": [n], "p_corrupt": [n]} for the facts `tokens` ([n, P])."""
    dev = model.cfg.device
    n = len(tokens)
    tok = tokens.to(dev).repeat_interleave(samples, 0)
    ans = answer.to(dev).repeat_interleave(samples, 0)
    apos = answer_pos.to(dev).repeat_interleave(samples, 0)
    rows = torch.arange(len(tok), device=dev)
    std = float(model.W_E[:n_entities].std())
    g = torch.Generator().manual_seed(seed)
    eps = (torch.randn(len(tok), model.cfg.d_model, generator=g) * noise * std).to(dev)

    def corrupt(x, hook=None):
        x = x.clone()
        x[:, head_pos] += eps.to(x.dtype)
        return x

    names = [STATES[s].format(L=L) for s in STATES for L in layers]
    clean_lg, cache = model.run_with_cache(tok, names_filter=lambda nm: nm in names)

    def prob(lg):
        return lg[rows, apos].float().softmax(-1)[rows, ans].view(n, samples).mean(1).cpu()

    p_clean = prob(clean_lg)
    p_corrupt = prob(model.run_with_hooks(tok, fwd_hooks=[("hook_embed", corrupt)]))
    out = {"p_clean": p_clean, "p_corrupt": p_corrupt}
    for s, pattern in STATES.items():
        eff = torch.zeros(n, len(layers))
        for j, L in enumerate(layers):
            name = pattern.format(L=L)
            clean = cache[name][:, restore_pos]

            def restore(x, hook=None, clean=clean):
                x = x.clone()
                x[:, restore_pos] = clean
                return x

            eff[:, j] = prob(model.run_with_hooks(tok, fwd_hooks=[("hook_embed", corrupt), (name, restore)])) - p_corrupt
        out[s] = eff
    return out
