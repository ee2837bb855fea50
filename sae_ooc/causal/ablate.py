"""The circuit with no remainder: at a hook, every position's residual stream is replaced by its projection on the units
kept there (the clean value) plus the mean of everything else, x -> mu_p + W_p^T W_p (x - mu_p) with W_p the orthonormal
basis of the units at position p (no units: the position is mean-ablated whole). mu_p is the mean residual at (hook, p)
over fit prompts, so the complement of the units carries no information about the prompt.

Validity (what makes the ablation readable): with W_p = I at every position nothing changes (the hook plumbing is exact);
with no units anywhere it is the stream's full mean ablation (the zero point of faithfulness), which must destroy the
answer; and a random subspace of the units' rank in their place must keep far less than the units.
"""

from __future__ import annotations

import torch

from sae_ooc.causal.units import bootstrap_share
from sae_ooc.interventions.prompts import Answers, matches, read_batched


def keep_units_hook(bases: dict[int, torch.Tensor], mean: torch.Tensor):
    """A TransformerLens hook: position p keeps its component on the rows of bases[p] (orthonormal [r, d]), the rest of
    the stream (and every position without a basis) is its mean `mean` [width, d]."""

    def hook(act, hook=None):
        mu = mean.to(act.device, act.dtype)[: act.shape[1]]
        out = mu[None].expand_as(act).clone()
        for p, W in bases.items():
            if p >= act.shape[1] or W is None or len(W) == 0:
                continue
            W = W.to(act.device, act.dtype)
            out[:, p] = mu[p] + ((act[:, p] - mu[p]) @ W.T) @ W
        return out

    return hook


def orthonormal(*parts: torch.Tensor) -> torch.Tensor:
    """[r, d] an orthonormal basis of the span of the rows of `parts` (numerically null directions dropped)."""
    A = torch.cat([p.float() for p in parts if p is not None and len(p)], 0)
    if len(A) == 0:
        return A
    u, s, vh = torch.linalg.svd(A, full_matrices=False)
    return vh[s > s.max() * 1e-5]


def ablated_answers(model, tokens: torch.Tensor, answer_pos: torch.Tensor, answer_len: int, cuts: dict[str, dict[int, torch.Tensor]],
                    means: dict[str, torch.Tensor], batch: int) -> Answers:
    """The answers with every hook of `cuts` ({hook: {position: basis}}) ablated to its units (keep_units_hook)."""
    hooks = [(h, keep_units_hook(b, means[h])) for h, b in cuts.items()]
    return read_batched(model, tokens, answer_pos, answer_len, batch, lambda sl: hooks)


def logit_diff(out: Answers, answer: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """[n] first-token logit of the right answer minus that of the counterfactual answer t(b', r2)."""
    rows = torch.arange(len(answer))
    return out.first[rows, answer[:, 0]] - out.first[rows, counter[:, 0]]


def faithfulness(out: Answers, clean: Answers, full: Answers, answer: torch.Tensor, counter: torch.Tensor,
                 heads: torch.Tensor | None = None, n_boot: int = 0, seed: int = 0) -> dict:
    """`kept`: share of prompts whose whole answer is still the right one (with `heads`, its 95% interval resampling
    them, `kept_ci95`); `faithfulness`: (ablated - fully ablated) / (clean - fully ablated) of the mean logit difference
    (logit_diff)."""
    if len(answer) == 0:
        return {"kept": None, "faithfulness": None, "logit_diff": None}
    ld, lc, lf = (float(logit_diff(o, answer, counter).mean()) for o in (out, clean, full))
    den = lc - lf
    kept = matches(out.greedy, answer).float()
    ci = {"kept_ci95": bootstrap_share(kept, heads, n_boot, seed)} if heads is not None and n_boot else {}
    return ci | {"kept": float(kept.mean()), "logit_diff": ld,
            "faithfulness": (ld - lf) / den if abs(den) > 1e-9 else None,
            "max_abs_logit_change": float((out.first - clean.first).abs().max())}
