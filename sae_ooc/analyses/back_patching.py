"""Back-patching ("Hopping Too Late", Biran et al. 2024): copy the residual stream at r1 (or r2) from a later layer
into an earlier layer at the same position and rerun from there. If a failure is the bridge being resolved too late
for the second hop, giving the earlier layers the later state fixes it.

States are indexed 0..L: state s < L is blocks.s.hook_resid_pre, state L the final resid_post; a patch (pos, src, dst)
sets blocks.dst.hook_resid_pre at `pos` to state `src` of the same prompt's unpatched run. Biran et al. report the
share of failures fixed by *some* patch (up to 66% in LLMs), a per-prompt best: here it is reported as an upper
bound beside one patch chosen on the valid_id failures and scored on the test_id, test_ood_sys and test_unanswerable failures, and beside
how many correct answers that patch breaks.
"""

from __future__ import annotations

import torch

from sae_ooc.analyses.common import run_hooked, share

POSITIONS = {"r1": 1, "r2": 2}


def state_name(s: int, n_layers: int) -> str:
    return f"blocks.{s}.hook_resid_pre" if s < n_layers else f"blocks.{n_layers - 1}.hook_resid_post"


def all_patches(n_layers: int, positions=POSITIONS) -> list[tuple[str, int, int]]:
    """Every (position, src, dst) with dst < src: a later state into an earlier layer, at each of `positions`."""
    return [(p, s, d) for p in positions for s in range(1, n_layers + 1) for d in range(s)]


@torch.no_grad()
def back_patch(model, tokens: torch.Tensor, answer: torch.Tensor, answer_pos: torch.Tensor, patches: list[tuple[str, int, int]],
               batch_size: int = 8192, where: dict[str, int] = POSITIONS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(correct without patching [n], correct with each patch [C, n], logits with each patch at the answer position [C, n, V])."""
    device = next(model.parameters()).device
    L = model.cfg.n_layers
    names = {state_name(s, L) for _, s, _ in patches} | {state_name(d, L) for _, _, d in patches}
    logits, cache = model.run_with_cache(tokens.to(device), names_filter=lambda h: h in names)
    n = len(tokens)
    rows = torch.arange(n)
    base = logits.float().cpu()[rows, answer_pos].argmax(-1) == answer
    out = torch.zeros(len(patches), n, model.cfg.d_vocab_out)
    for d in sorted({d for _, _, d in patches}):
        idx = [c for c, (_, _, dd) in enumerate(patches) if dd == d]
        pos_of = torch.tensor([where[patches[c][0]] for c in idx]).repeat_interleave(n)
        src_state = [state_name(patches[c][1], L) for c in idx]
        src = rows.repeat(len(idx))

        def hook(act, hook, rs):
            r = torch.arange(rs.start, rs.stop)
            for j, name in enumerate(src_state):  # each block of rows reads its own source state
                in_block = (r // n) == j
                if in_block.any():
                    b = in_block.nonzero().squeeze(1)
                    p = pos_of[r[b]].to(device)
                    act[b.to(device), p] = cache[name][src[r[b]].to(device), p]
            return act

        # start at block d from the run's own stream there (the layers below are unchanged by the patch)
        x = cache[state_name(d, L)].repeat(len(idx), 1, 1)
        lg = run_hooked(model, x, [(f"blocks.{d}.hook_resid_pre", hook)], batch_size, start=d)
        out[idx] = lg[torch.arange(len(src)), answer_pos[src]].view(len(idx), n, -1)
    return base, out.argmax(-1) == answer[None], out


def summarise(base: torch.Tensor, fixed: torch.Tensor, patches, chosen: int | None) -> dict:
    """Share of failures each patch fixes, the best-per-prompt upper bound, the chosen patch's share and what it breaks."""
    fail = ~base
    rec = {"n_prompts": len(base), "n_failures": int(fail.sum()), "accuracy": share(base),
           "fixed_by_patch": [share(fixed[c][fail]) for c in range(len(patches))],
           "fixed_by_any_patch_upper_bound": share(fixed[:, fail].any(0)) if fail.any() else None}
    if chosen is not None:
        rec["chosen_fixed"] = share(fixed[chosen][fail]) if fail.any() else None
        rec["chosen_breaks_correct"] = share(~fixed[chosen][base]) if base.any() else None
    return rec
