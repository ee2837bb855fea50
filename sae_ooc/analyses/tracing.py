"""ROME-style causal tracing (Meng et al. 2022): corrupt the head entity's embedding with Gaussian noise, restore one
clean state at a time, and measure how much of the answer's probability comes back.

Noise: N(0, (noise_scale * sigma)^2) added to `hook_embed` at the head position, sigma the std of the token
embeddings of the prompts' head entities (ROME: 3 sigma of the subject embeddings), `samples` draws per prompt. States
restored: resid_pre of each block at each position; for MLP and attention, the outputs of a window of `window` layers
centred on the layer (ROME's `trace_with_repatch` window). Indirect effect = p(answer | corrupted, state restored) -
p(answer | corrupted); total effect = p(answer | clean) - p(answer | corrupted). Every (layer, position) of a kind
is one block of rows of one batched forward per layer, which starts at that layer from the noised run's residual stream.
"""

from __future__ import annotations

import torch

from sae_ooc.analyses.common import answer_prob_rank, roles, run_hooked
from sae_ooc.tasks.layout import TOY_LAYOUT, Layout

KINDS = {"resid": "blocks.{l}.hook_resid_pre", "mlp": "blocks.{l}.hook_mlp_out", "attn": "blocks.{l}.hook_attn_out"}


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """ROME's centred window: layers max(0, l - w//2) .. min(L, l - (-w//2)) - 1."""
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


@torch.no_grad()
def causal_trace(model, tokens: torch.Tensor, answer: torch.Tensor, answer_pos: torch.Tensor, subject_pos: int | list[int] = 0,
                 noise_scale: float = 3.0, samples: int = 10, window: int = 2, seed: int = 0, batch_size: int = 8192,
                 layout: Layout = TOY_LAYOUT) -> dict:
    """Indirect effects {kind: [L][P]} (mean over prompts and noise draws) with the clean and corrupted probabilities.
    `subject_pos`: the subject's position, or every position of a multi-token subject (each token noised independently,
    as Meng et al. do)."""
    if not isinstance(subject_pos, int):
        subject_pos = int(subject_pos[0]) if len(subject_pos) == 1 else [int(p) for p in subject_pos]
    device = next(model.parameters()).device
    n, P = tokens.shape
    L = model.cfg.n_layers
    names = sorted({KINDS[k].format(l=l) for k in KINDS for l in range(L)} | {"hook_embed"})
    logits, cache = model.run_with_cache(tokens.to(device), names_filter=lambda h: h in names)
    rows = torch.arange(n)
    p_clean = answer_prob_rank(logits.float().cpu()[rows, answer_pos], answer)[0]
    emb = cache["hook_embed"][:, subject_pos]
    sigma = float(emb.std())
    g = torch.Generator().manual_seed(seed)
    noise = (torch.randn(samples, *emb.shape, generator=g) * noise_scale * sigma).to(device)  # [S, n, (k,) d]
    src = torch.arange(n).repeat(samples)  # row s*n + i: prompt i, draw s

    def noised(act, hook):
        """Each row's own noise draw at the head position (row s * n + i: prompt i, draw s)."""
        act[:, subject_pos] = act[:, subject_pos] + noise.reshape(samples * n, *emb.shape[1:])
        return act

    def probs(logits_, k_blocks: int) -> torch.Tensor:
        src_all = src.repeat(k_blocks)
        return answer_prob_rank(logits_[torch.arange(len(src_all)), answer_pos[src_all]], answer[src_all])[0]

    resid = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
    with model.hooks(fwd_hooks=[("hook_embed", noised)]):
        lg_noised, noised_cache = model.run_with_cache(tokens[src].to(device), names_filter=lambda h: h in resid)
    p_corrupt = probs(lg_noised.float().cpu(), 1).view(samples, n)
    base = p_corrupt.mean(0)  # per prompt
    out = {"n_prompts": n, "samples": samples, "noise_scale": noise_scale, "sigma": sigma, "noise_std": noise_scale * sigma,
           "window": window, "subject_pos": subject_pos, "roles": (roles(layout) + [f"pos{p}" for p in range(layout.n_pos, P)])[:P], "p_clean": float(p_clean.mean()),
           "p_corrupt": float(base.mean()), "total_effect": float((p_clean - base).mean())}
    block = samples * n
    pos_of = torch.arange(P).repeat_interleave(block)  # block p of rows restores position p

    def restore(act, hook, rs):
        r = torch.arange(rs.start, rs.stop)
        b = torch.arange(len(r), device=device)
        p = pos_of[r].to(device)
        act[b, p] = cache[hook.name][src[r % block].to(device), p]
        return act

    for kind, fmt in KINDS.items():
        grid = torch.zeros(L, P)
        for l in range(L):
            layers = [l] if kind == "resid" else window_layers(l, window, L)
            # start at the first restored layer from the noised run's stream: below it every row is that run
            x = noised_cache[resid[layers[0]]].repeat(P, 1, 1)
            p = probs(run_hooked(model, x, [(fmt.format(l=k), restore) for k in layers], batch_size, start=layers[0]), P).view(P, samples, n)
            grid[l] = (p.mean(1) - base).mean(-1)
        out[kind] = grid.tolist()
    return out
