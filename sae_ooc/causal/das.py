"""Distributed alignment search (Geiger et al. 2024): a rank-r subspace learned so that interchanging it from a donor makes
the model give the donor's counterfactual answer.

pyvene's `RotatedSpaceIntervention` is the reference; pyvene itself (a model-wrapping framework with its own config
system) is a heavy dependency for one matrix, so the rotation is torch's own `orthogonal` parametrization of an r x d
matrix (orthonormal rows), and the interchange is x + W^T W (x_donor - x): the donor's coordinates in the subspace
replace the base's, the orthogonal complement stays. At r = d_model W is square orthogonal, W^T W = I and the
interchange is the residual patch (a property tests/test_causal_variables.py checks).

Training is batched interchange on cached activations: the base question's residual stream at the hook is cached once,
its r1 row is edited, and the model runs from that layer on only (TransformerLens's `start_at_layer`).
"""

from __future__ import annotations

import torch
from torch.nn.utils.parametrizations import orthogonal


class RotatedSubspace(torch.nn.Module):
    """An orthonormal basis W [r, d] (rows) and the interchange x + W^T W (xd - x)."""

    def __init__(self, d: int, rank: int, seed: int = 0, init: torch.Tensor | None = None):
        """`init` [k, d]: directions to start from (their first min(k, rank)), completed by random ones; the orthogonal
        parametrization keeps an orthonormal starting weight as it is."""
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        lin = torch.nn.Linear(d, rank, bias=False)
        start = torch.randn(d, rank, generator=g)
        if init is not None and len(init):
            k = min(len(init), rank)
            start[:, :k] = init[:k].T.float()
        with torch.no_grad():
            lin.weight.copy_(torch.linalg.qr(start)[0].T)
        # torch's orthogonal parametrization completes a non-square weight to a square orthogonal base with the global RNG:
        # seeded here, so a subspace depends on `seed` alone, not on whatever ran before it in the process
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lin = orthogonal(lin)

    @property
    def basis(self) -> torch.Tensor:
        return self.lin.weight  # [r, d], orthonormal rows

    def forward(self, x: torch.Tensor, xd: torch.Tensor) -> torch.Tensor:
        W = self.basis
        return x + ((xd - x) @ W.T) @ W


def start_layer(hook: str, n_layers: int) -> int:
    """The layer whose input is `hook`'s activation: blocks.L.hook_resid_pre -> L, blocks.L.hook_resid_post -> L + 1."""
    parts = hook.split(".")
    layer = int(parts[1])
    return layer if parts[-1] == "hook_resid_pre" else min(layer + 1, n_layers)


def logits_from(model, resid: torch.Tensor, layer: int) -> torch.Tensor:
    """[n, width, d_vocab] logits of the model run from `layer` on, given that layer's input residual stream."""
    return model(resid.to(model.cfg.device), start_at_layer=layer, return_type="logits")


def _fit(model, mod: RotatedSubspace, n: int, answer_pos: torch.Tensor, target: torch.Tensor, steps: int, batch: int, lr: float,
         seed: int, logits_of) -> RotatedSubspace:
    """Train `mod` by interchange: `logits_of(idx)` runs the model with the interchange applied on rows `idx` of the n fit
    questions; the loss is the cross-entropy of `target` [n] at `answer_pos` [n]. The model's weights are frozen."""
    dev = model.cfg.device
    opt = torch.optim.Adam(mod.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                idx = torch.randint(n, (min(batch, n),), generator=g)
                lg = logits_of(idx)
                loss = torch.nn.functional.cross_entropy(lg[torch.arange(len(idx), device=dev), answer_pos[idx].to(dev)],
                                                         target[idx].to(dev))
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return mod.eval()


def train_das(model, hook: str, base_resid: torch.Tensor, pos: int, answer_pos: torch.Tensor, xd: torch.Tensor,
              target: torch.Tensor, rank: int, steps: int, batch: int, lr: float, seed: int,
              init: torch.Tensor | None = None) -> RotatedSubspace:
    """A rank-`rank` subspace trained by interchange: base_resid [N, width, d] (the base questions' residual at `hook`),
    its row `pos` interchanged with xd [N, d] (the donors' r1 state), loss the cross-entropy of `target` [N] (the
    counterfactual answer's first token) at `answer_pos` [N]. The model's weights are frozen (only W learns). `init`:
    directions to start from (the stage starts from the top principal directions of the fit class means, which makes a
    short training enough; pyvene starts from a random rotation)."""
    layer = start_layer(hook, model.cfg.n_layers)
    dev = model.cfg.device
    mod = RotatedSubspace(base_resid.shape[-1], rank, seed, init).to(dev)

    def logits_of(idx):
        r = base_resid[idx].to(dev).clone()
        r[:, pos] = mod(r[:, pos], xd[idx].to(dev))
        return logits_from(model, r, layer)

    return _fit(model, mod, len(base_resid), answer_pos, target, steps, batch, lr, seed, logits_of)


@torch.no_grad()
def das_delta(mod: RotatedSubspace, x: torch.Tensor, xd: torch.Tensor) -> torch.Tensor:
    """The interchange as a change of the residual: W^T W (xd - x), [n, d]."""
    W = mod.basis.detach().to(x.device)
    return ((xd - x) @ W.T) @ W


def train_das_hooked(model, hook: str, tokens: torch.Tensor, pos: int, answer_pos: torch.Tensor, xd: torch.Tensor,
                     target: torch.Tensor, rank: int, steps: int, batch: int, lr: float, seed: int) -> RotatedSubspace:
    """`train_das` for any hook (hook_resid_mid included, where `start_at_layer` cannot start): the whole model runs on the
    base questions' tokens [N, width] with the interchange applied at (hook, pos) by a TransformerLens hook."""
    dev = model.cfg.device
    mod = RotatedSubspace(xd.shape[-1], rank, seed).to(dev)

    def logits_of(idx):
        x_d = xd[idx].to(dev)

        def edit(act, hook=None):
            return torch.cat([act[:, :pos], mod(act[:, pos], x_d)[:, None], act[:, pos + 1:]], 1)

        return model.run_with_hooks(tokens[idx].to(dev), return_type="logits", fwd_hooks=[(hook, edit)])

    return _fit(model, mod, len(tokens), answer_pos, target, steps, batch, lr, seed, logits_of)
