"""ROME-style causal tracing (Meng et al. 2022): corrupt the subject's embedding with Gaussian noise, restore one clean
state at a time, and measure how much of the answer's probability comes back. The one implementation of causal tracing:
`trace_states` does the noising, restoring and batched forwards (ROME's `trace_with_patch` / `trace_with_repatch`), and
its two named variants choose the noise, the states and the summary: `causal_trace` (`analyze causal-tracing`: every
layer and position, mean indirect effects) and `trace_effects` (the `edit` stage: one position, per-fact effects).

`causal_trace`. Noise: N(0, (noise_scale * sigma)^2) added to `hook_embed` at the head position, sigma the std of the
token embeddings of the prompts' head entities (ROME: 3 sigma of the subject embeddings), `samples` draws per prompt.
States restored: resid_pre of each block at each position; for MLP and attention, the outputs of a window of `window`
layers centred on the layer (ROME's `trace_with_repatch` window). Indirect effect = p(answer | corrupted, state
restored) - p(answer | corrupted); total effect = p(answer | clean) - p(answer | corrupted).

`trace_effects` (atomic facts, compact): noise std `noise` times the std of the entity embeddings, the same draw on every
token of the head's name; restores one layer's clean MLP output (or residual stream after the block) at one position;
a fact's effect is the restored probability of the true tail minus the corrupted one, averaged over noise samples.

Every restored state is one block of rows of one batched forward per (state, layer), which starts at the first
restored layer from the noised run's residual stream (below it every row is that run).
"""

from __future__ import annotations

from typing import Callable

import torch

from sae_ooc.analyses.common import answer_prob_rank, roles, run_hooked
from sae_ooc.models.evaluate import answer_scores
from sae_ooc.tasks.layout import TOY_LAYOUT, Layout

KINDS = {"resid": "blocks.{l}.hook_resid_pre", "mlp": "blocks.{l}.hook_mlp_out", "attn": "blocks.{l}.hook_attn_out"}
STATES = {"mlp": "blocks.{L}.hook_mlp_out", "resid": "blocks.{L}.hook_resid_post"}  # trace_effects' states


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """ROME's centred window: layers max(0, l - w//2) .. min(L, l - (-w//2)) - 1."""
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


@torch.no_grad()
def trace_states(model, tokens: torch.Tensor, src: torch.Tensor, noise: torch.Tensor, subject_pos: int | list[int],
                 restores: list[tuple[int, list[str]]], positions: list[int], prob: Callable, batch_size: int = 8192) -> dict:
    """Causal tracing, the one implementation. `tokens` [n, T]: the prompts; `src` [R]: the prompt of each noised row
    (a prompt's noise draws are several rows); `noise` [R, ..., d]: what row r adds to `hook_embed` at `subject_pos`;
    `restores`: [(start layer, hook names restored together)], each forward starting at its layer from the noised run's
    residual stream; `positions`: where a state is restored, one block of R rows each; `prob(logits, prompts)`: the
    answer probability of each row of `logits` [m, T, V] (float, CPU), whose prompts are `prompts` [m].

    Returns {"p_clean": [n], "p_corrupt": [R], "p_restored": [len(restores), len(positions), R]}."""
    device = next(model.parameters()).device
    names = sorted({h for _, hooks in restores for h in hooks})
    logits, cache = model.run_with_cache(tokens.to(device), names_filter=lambda h: h in names)
    p_clean = prob(logits.float().cpu(), torch.arange(len(tokens)))
    noise = noise.to(device)

    def noised(act, hook):
        """Each row's own noise draw at the subject's position(s)."""
        act[:, subject_pos] = act[:, subject_pos] + noise.to(act.dtype)
        return act

    resid = sorted({f"blocks.{start}.hook_resid_pre" for start, _ in restores})
    with model.hooks(fwd_hooks=[("hook_embed", noised)]):
        lg_noised, noised_cache = model.run_with_cache(tokens[src].to(device), names_filter=lambda h: h in resid)
    p_corrupt = prob(lg_noised.float().cpu(), src)
    R, P = len(src), len(positions)
    pos_of = torch.as_tensor(positions).repeat_interleave(R)  # block j of rows restores positions[j]

    def restore(act, hook, rs):
        r = torch.arange(rs.start, rs.stop)
        b = torch.arange(len(r), device=device)
        p = pos_of[r].to(device)
        act[b, p] = cache[hook.name][src[r % R].to(device), p]
        return act

    p_restored = torch.zeros(len(restores), P, R)
    for i, (start, hooks) in enumerate(restores):
        x = noised_cache[f"blocks.{start}.hook_resid_pre"].repeat(P, 1, 1)
        p_restored[i] = prob(run_hooked(model, x, [(h, restore) for h in hooks], batch_size, start=start), src.repeat(P)).view(P, R)
    return {"p_clean": p_clean, "p_corrupt": p_corrupt, "p_restored": p_restored}


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
    emb = model.embed(tokens.to(device))[:, subject_pos]  # = hook_embed
    sigma = float(emb.std())
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(samples, *emb.shape, generator=g) * noise_scale * sigma  # [S, n, (k,) d]
    src = torch.arange(n).repeat(samples)  # row s*n + i: prompt i, draw s

    def prob(logits_, prompts):
        return answer_prob_rank(logits_[torch.arange(len(prompts)), answer_pos[prompts]], answer[prompts])[0]

    restores = [(layers[0], [fmt.format(l=k) for k in layers]) for kind, fmt in KINDS.items()
                for layers in ([l] if kind == "resid" else window_layers(l, window, L) for l in range(L))]
    tr = trace_states(model, tokens, src, noise.reshape(samples * n, *emb.shape[1:]), subject_pos, restores, list(range(P)),
                      prob, batch_size)
    p_clean = tr["p_clean"]
    base = tr["p_corrupt"].view(samples, n).mean(0)  # per prompt
    out = {"n_prompts": n, "samples": samples, "noise_scale": noise_scale, "sigma": sigma, "noise_std": noise_scale * sigma,
           "window": window, "subject_pos": subject_pos, "roles": (roles(layout) + [f"pos{p}" for p in range(layout.n_pos, P)])[:P], "p_clean": float(p_clean.mean()),
           "p_corrupt": float(base.mean()), "total_effect": float((p_clean - base).mean())}
    for i, kind in enumerate(KINDS):
        p = tr["p_restored"][i * L:(i + 1) * L].view(L, P, samples, n)
        out[kind] = (p.mean(2) - base).mean(-1).tolist()  # [L, P]
    return out


@torch.no_grad()
def trace_effects(model, tokens: torch.Tensor, answer: torch.Tensor, answer_pos: torch.Tensor, n_entities: int, restore_pos: int,
                  layers: list[int], samples: int = 10, noise: float = 3.0, seed: int = 0, head_pos: int | list[int] = 0,
                  embed_rows: list[int] | None = None) -> dict:
    """{"mlp"/"resid": [n, len(layers)] effects, "p_clean": [n], "p_corrupt": [n]} for the facts `tokens` ([n, P]).

    `answer` [n] one-token answers, or [n, answer_len] (-1 padded) whole answers that `tokens` carry after the prompt
    (teacher forcing): p is then the whole answer's probability. `head_pos`: the head's position, or every position of
    its span (the same noise on each, as ROME corrupts every subject token); `embed_rows`: the token ids whose embeddings'
    std scales the noise (default: the toy's entity tokens 0..n_entities-1)."""
    n = len(tokens)
    tok = tokens.repeat_interleave(samples, 0)  # row i * samples + s: fact i, draw s
    ans, apos = answer.repeat_interleave(samples, 0), answer_pos.repeat_interleave(samples, 0)
    std = float(model.W_E[:n_entities].std() if embed_rows is None else model.W_E[torch.tensor(embed_rows, device=model.W_E.device)].std())
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(len(tok), model.cfg.d_model, generator=g) * noise * std
    eps = eps if isinstance(head_pos, int) else eps[:, None]  # the same draw on every token of the head

    def prob(lg, rows):
        if ans.dim() == 2:
            return answer_scores(lg, apos[rows], ans[rows])[0].exp()
        return lg[torch.arange(len(rows)), apos[rows]].float().softmax(-1)[torch.arange(len(rows)), ans[rows]]

    restores = [(L, [STATES[s].format(L=L)]) for s in STATES for L in layers]
    tr = trace_states(model, tok, torch.arange(len(tok)), eps, head_pos, restores, [restore_pos], prob)
    p_corrupt = tr["p_corrupt"].view(n, samples).mean(1)
    out = {"p_clean": tr["p_clean"].view(n, samples).mean(1), "p_corrupt": p_corrupt}
    for i, s in enumerate(STATES):
        out[s] = (tr["p_restored"][i * len(layers):(i + 1) * len(layers), 0].view(len(layers), n, samples).mean(2) - p_corrupt).T.contiguous()
    return out
