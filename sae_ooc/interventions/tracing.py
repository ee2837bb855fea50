"""Causal tracing of atomic facts (Meng et al. 2022), compact and batched: a small stand-in that a fuller
`analyze causal-tracing` can replace (same inputs, same [n, n_layers] effects out).

Corrupt the head entity's embedding (every token of its name) with Gaussian noise (std `noise` times the std of the entity embeddings), then
restore one layer's clean MLP output (or residual stream after the block) at one position; the layer's effect on a fact
is the restored probability of the true tail minus the corrupted one, averaged over noise samples. Every fact and noise
sample is one row of the same forward pass; one pass per (layer, state).
"""

from __future__ import annotations

import torch

from sae_ooc.models.evaluate import answer_scores

STATES = {"mlp": "blocks.{L}.hook_mlp_out", "resid": "blocks.{L}.hook_resid_post"}


@torch.no_grad()
def trace_effects(model, tokens: torch.Tensor, answer: torch.Tensor, answer_pos: torch.Tensor, n_entities: int, restore_pos: int,
                  layers: list[int], samples: int = 10, noise: float = 3.0, seed: int = 0, head_pos: int | list[int] = 0,
                  embed_rows: list[int] | None = None) -> dict:
    """{"mlp"/"resid": [n, len(layers)] effects, "p_clean": [n], "p_corrupt": [n]} for the facts `tokens` ([n, P]).

    `answer` [n] one-token answers, or [n, answer_len] (-1 padded) whole answers that `tokens` carry after the prompt
    (teacher forcing): p is then the whole answer's probability. `head_pos`: the head's position, or every position of
    its span (the same noise on each, as ROME corrupts every subject token); `embed_rows`: the token ids whose embeddings'
    std scales the noise (default: the toy's entity tokens 0..n_entities-1)."""
    dev = model.cfg.device
    n = len(tokens)
    tok = tokens.to(dev).repeat_interleave(samples, 0)
    ans = answer.to(dev).repeat_interleave(samples, 0)
    apos = answer_pos.to(dev).repeat_interleave(samples, 0)
    rows = torch.arange(len(tok), device=dev)
    std = float(model.W_E[:n_entities].std() if embed_rows is None else model.W_E[torch.tensor(embed_rows, device=model.W_E.device)].std())
    g = torch.Generator().manual_seed(seed)
    eps = (torch.randn(len(tok), model.cfg.d_model, generator=g) * noise * std).to(dev)

    def corrupt(x, hook=None):
        x = x.clone()
        if isinstance(head_pos, int):
            x[:, head_pos] += eps.to(x.dtype)
        else:
            x[:, head_pos] += eps.to(x.dtype)[:, None]
        return x

    names = [STATES[s].format(L=L) for s in STATES for L in layers]
    clean_lg, cache = model.run_with_cache(tok, names_filter=lambda nm: nm in names)

    def prob(lg):
        if ans.dim() == 2:
            return answer_scores(lg, apos, ans)[0].exp().view(n, samples).mean(1).cpu()
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
