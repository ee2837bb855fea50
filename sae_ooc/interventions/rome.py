"""ROME's rank-one model edit (Meng et al. 2022) of one MLP's output weights, in TransformerLens's layout.

The MLP of layer L computes out = k @ W_out + b_out from its hidden activation k (`blocks.L.mlp.hook_post`, the *key*).
To make the key k* of a fact's prompt produce the value v* (so that k* @ W' = v*) while moving every other key as little
as possible under their second moment C = E[k k^T] (estimated on the train prompts' keys, every position):

    W' = W_out + u d^T,   u = C^-1 k* / (k*^T C^-1 k*),   d = v* - k* @ W_out

and k* @ W' = k* @ W_out + (k*^T u) d = v* exactly. v* is found by gradient descent: the change delta added to the
MLP's output at the key's position of the fact's prompt that makes the model answer b' (cross-entropy, a weight decay
on |delta|^2 / |x|^2, |delta| clamped to `clamp` |x|: ROME's recipe with one prompt, except that the scale x is the
residual stream after the layer there rather than the MLP's own output, which is 0 for a dead MLP and would freeze delta).

An edit is applied either to the weights (`applied`, restored exactly on exit) or, for batched evaluation of many
independent edits in one forward pass, as a hook adding (k . u_row) d_row to the MLP output of each row (`edit_hooks`);
the two are the same function of the input (tests/test_edit.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sae_ooc.models.evaluate import answer_token_logits


def key_hook(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


def out_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


@torch.no_grad()
def mlp_keys(model, tokens: torch.Tensor, layers: list[int], batch: int = 4096) -> dict[int, torch.Tensor]:
    """{layer: [n, width, d_mlp]} keys of every position."""
    names = {key_hook(L): L for L in layers}
    out: dict[int, list] = {L: [] for L in layers}
    for s in range(0, len(tokens), batch):
        _, cache = model.run_with_cache(tokens[s : s + batch].to(model.cfg.device), names_filter=lambda n: n in names)
        for name, L in names.items():
            out[L].append(cache[name].float().cpu())
    return {L: torch.cat(v) for L, v in out.items()}


def key_second_moment(keys: torch.Tensor, valid: torch.Tensor, ridge: float) -> torch.Tensor:
    """E[k k^T] over the valid positions ([n, P, d_mlp] keys, [n, P] mask), plus `ridge` times its mean eigenvalue."""
    k = keys[valid].double()
    C = k.T @ k / max(len(k), 1)
    return C + ridge * (torch.trace(C) / C.shape[0]).clamp(min=1e-12) * torch.eye(C.shape[0], dtype=C.dtype)


@dataclass
class RankOneEdits:
    """One rank-one edit of layer `layer`'s W_out per row: W' = W_out + u[i] d[i]^T."""

    layer: int
    u: torch.Tensor  # [n, d_mlp]
    d: torch.Tensor  # [n, d_model]

    def rows(self, idx) -> "RankOneEdits":
        return RankOneEdits(self.layer, self.u[idx], self.d[idx])


def rank_one(W_out: torch.Tensor, C: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, layer: int, eps: float = 1e-9) -> RankOneEdits:
    """The closed-form edits mapping each key [n, d_mlp] to its value [n, d_model] (values of k @ W', bias excluded).

    A key with k^T C^-1 k ~ 0 (a dead MLP: the key is 0) cannot be moved by any change of W_out: its edit is zero."""
    W, k = W_out.double().cpu(), keys.double().cpu()
    Ck = torch.linalg.solve(C.double().cpu(), k.T).T  # [n, d_mlp]
    denom = (k * Ck).sum(-1, keepdim=True)
    ok = denom > eps * (k.norm(dim=-1, keepdim=True) ** 2).clamp(min=eps)
    u = torch.where(ok, Ck / denom.clamp(min=1e-300), torch.zeros_like(Ck))
    d = values.double().cpu() - k @ W
    return RankOneEdits(layer, u.float(), d.float())


@contextmanager
def applied(model, edits: RankOneEdits, row: int):
    """The model with edit `row` written into its weights; the original weights restored exactly afterwards."""
    W = model.blocks[edits.layer].mlp.W_out
    saved = W.detach().clone()
    with torch.no_grad():
        W += torch.outer(edits.u[row], edits.d[row]).to(W.device, W.dtype)
    try:
        yield model
    finally:
        with torch.no_grad():
            W.copy_(saved)


def edit_hooks(edits: RankOneEdits) -> list[tuple]:
    """Forward hooks applying row i's edit to batch row i: the MLP output gains (k . u_i) d_i at every position."""
    seen: dict[str, torch.Tensor] = {}

    def keep(k, hook=None):
        seen["k"] = k
        return k

    def add(out, hook=None):
        k = seen["k"]
        u, d = edits.u.to(k.device, k.dtype), edits.d.to(k.device, k.dtype)
        return out + torch.einsum("bpk,bk->bp", k, u)[..., None] * d[:, None, :]

    return [(key_hook(edits.layer), keep), (out_hook(edits.layer), add)]


def optimise_values(model, tokens: torch.Tensor, answer_pos: torch.Tensor, key_pos: int, layer: int, target: torch.Tensor,
                    steps: int, lr: float, clamp: float, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys [n, d_mlp], values [n, d_model]): for each row, the key at `key_pos` and the W_out product that makes the
    model answer target[i] at answer_pos[i] when the MLP's output at key_pos becomes value + b_out. All rows at once:
    the loss is a sum of per-row terms, so each row's delta gets its own gradient (and Adam is per element). A target
    [n, answer_len] (-1 padded) is a multi-token answer: `tokens` then carry it (teacher forcing) and the loss is the
    cross-entropy of all of its tokens."""
    dev = model.cfg.device
    tokens, target, answer_pos = tokens.to(dev), target.to(dev), answer_pos.to(dev)
    n = len(tokens)
    rows = torch.arange(n, device=dev)
    cache: dict[str, torch.Tensor] = {}

    def grab(name):
        def fn(t, hook=None):
            cache[name] = t.detach()
            return t

        return fn

    resid = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(key_hook(layer), grab("k")), (out_hook(layer), grab("out")), (resid, grab("x"))])
    keys, v0 = cache["k"][:, key_pos], cache["out"][:, key_pos]
    v0_norm = cache["x"][:, key_pos].norm(dim=-1, keepdim=True).clamp(min=1e-6)  # the scale of delta's clamp and decay
    delta = torch.zeros_like(v0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)

    def add(out, hook=None):
        out = out.clone()
        out[:, key_pos] = out[:, key_pos] + delta
        return out

    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                lg = model.run_with_hooks(tokens, fwd_hooks=[(out_hook(layer), add)])
                if target.dim() == 1:
                    loss = F.cross_entropy(lg[rows, answer_pos].float(), target, reduction="sum")
                else:
                    lg = answer_token_logits(lg, answer_pos, target.shape[1]).float()
                    loss = F.cross_entropy(lg.flatten(0, 1), target.flatten(), ignore_index=-1, reduction="sum")
                loss = loss + weight_decay * ((delta.norm(dim=-1, keepdim=True) / v0_norm) ** 2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():  # ROME's clamp: |delta| <= clamp * |x|
                    scale = (clamp * v0_norm / delta.norm(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)
                    delta.mul_(scale)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    b_out = model.blocks[layer].mlp.b_out.detach()
    return keys.float().cpu(), (v0 + delta.detach() - b_out).float().cpu()
