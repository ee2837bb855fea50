"""The logit lens: the residual stream at every layer and position read through the final layer norm and the
unembedding, with the probability and rank of the bridge entity and of the answer.

`ActivationCache.accumulated_resid` gives the stream before each block and after the last;
`apply_ln_to_stack(recompute_ln=True)` applies ln_final with statistics of that stream itself (not the final
layer's cached scale), and `model.unembed` adds b_U. No tuned lens: an early layer may hold the bridge in a basis the
unembedding does not read, so a poor rank there is not evidence that the information is absent (the probes are).
"""

from __future__ import annotations

import torch

from sae_ooc.analyses.common import answer_prob_rank, roles
from sae_ooc.tasks.layout import TOY_LAYOUT, Layout
from sae_ooc.circuits.pairs import Pairs

CAVEAT = ("logit lens without a tuned lens: every layer's residual stream is read through the final layer norm and "
          "unembedding, which only the last layer was trained for; an early layer can hold the bridge in a basis the "
          "unembedding does not read, so a poor rank there does not show the information is absent (see the probes)")


@torch.no_grad()
def lens_logits(model, tokens: torch.Tensor, positions: list[int] | None = None) -> tuple[torch.Tensor, list[str]]:
    """The logit lens itself, the one implementation (`analyze logit-lens` and `sae-ooc dynamics` read it): logits
    [S, n, P, V] (float, on the CPU) of every state S (resid_pre of each block, then the final resid_post) at every
    position of `tokens` [n, P], or only at `positions` (then P = len(positions)), with the state labels."""
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(device), names_filter=lambda n: "hook_resid" in n)
    stack, labels = cache.accumulated_resid(layer=None, incl_mid=False, apply_ln=False, return_labels=True)  # [S, n, P, d]
    if positions is not None:
        stack = stack[:, :, list(positions)]
    normed = cache.apply_ln_to_stack(stack, layer=None, recompute_ln=True)  # ln_final on each state's own statistics
    logits = model.unembed(normed.reshape(-1, *normed.shape[2:])).reshape(*normed.shape[:3], -1).float().cpu()  # [S, n, P, V]
    return logits, list(labels)


@torch.no_grad()
def logit_lens(model, pairs: Pairs, layout: Layout = TOY_LAYOUT) -> dict:
    """Per state (resid_pre of each block, then the final resid_post) and position: mean probability, median rank and
    top-1 rate of the bridge and of the answer, over the clean prompts."""
    logits, labels = lens_logits(model, pairs.clean)
    out = {"n_prompts": len(pairs), "states": labels, "roles": roles(layout), "caveat": CAVEAT}
    for var, target in (("bridge", pairs.bridge), ("answer", pairs.answer)):
        if bool((target < 0).all()):  # no such variable in this task's question (the reversal family's has no bridge)
            out[var] = None
            continue
        prob, rank = answer_prob_rank(logits, target[None, :, None])
        out[var] = {"prob": prob.mean(1).tolist(), "prob_std": prob.std(1).tolist() if len(pairs) > 1 else None,
                    "median_rank": rank.float().median(1).values.tolist(), "mean_rank": rank.float().mean(1).tolist(),
                    "top1": (rank == 0).float().mean(1).tolist()}
    final = logits[-1, torch.arange(len(pairs)), pairs.answer_pos]
    out["final_accuracy"] = float((final.argmax(-1) == pairs.answer).float().mean())
    return out
