"""Attention patterns per layer and head: for a few prompts, and averaged over the sample by token role (which
position attends to which role), with the heads that move information from r1 to r2 picked out.

A head is called a mover when the answer position r2 attends to r1 at least `min_attention` on average (what it
reads) AND patching its output at r2 from the clean into the corrupted run recovers at least `min_effect` of the
clean-corrupt metric gap (that what it writes there matters: an intervention, not just a pattern).
"""

from __future__ import annotations

import torch

from sae_ooc.analyses.common import roles
from sae_ooc.tasks.layout import TOY_LAYOUT, Layout
from sae_ooc.analyses.patching import clean_cache, patch_layer
from sae_ooc.circuits.pairs import Pairs



@torch.no_grad()
def attention(model, pairs: Pairs, names: list[str], metric: str = "logit_diff", n_examples: int = 3,
              min_attention: float = 0.3, min_effect: float = 0.1, batch_size: int = 8192, layout: Layout = TOY_LAYOUT) -> dict:
    """Mean pattern [L][H][dest][src] over the clean prompts, the first `n_examples` prompts' patterns, and the movers.
    Attention is read from the answer position (`r2` in the toy) to r1's (last) token and to the head's."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    ANSWER_POS, R1, HEAD = layout.answer_pos, layout.index("r1"), layout.index("head")
    pat_names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
    z_names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    logits, cache = clean_cache(model, pairs, pat_names + z_names)
    pattern = torch.stack([cache[n].float().cpu() for n in pat_names], 1)  # [n, L, H, dest, src]
    mean = pattern.mean(0)
    device = next(model.parameters()).device
    m_clean = float(pairs.metric(logits.float().cpu(), metric).mean())
    m_corrupt = float(pairs.metric(model(pairs.corrupt.to(device)).float().cpu(), metric).mean())
    gap = m_clean - m_corrupt
    at_r2 = torch.stack([torch.tensor([ANSWER_POS, h]) for h in range(H)])  # every head's output at r2
    effect = torch.stack([patch_layer(model, pairs, "z", l, cache[z_names[l]], metric, batch_size, at_r2).mean(-1) for l in range(L)])
    recovered = (effect - m_corrupt) / gap if abs(gap) > 1e-9 else torch.full_like(effect, float("nan"))
    heads = []
    for l in range(L):
        for h in range(H):
            a = float(mean[l, h, ANSWER_POS, R1])
            rec = float(recovered[l, h])
            heads.append({"head": f"L{l}H{h}", "layer": l, "head_index": h, "attn_r2_to_r1": a,
                          "attn_r2_to_r1_std": float(pattern[:, l, h, ANSWER_POS, R1].std()) if len(pairs) > 1 else 0.0,
                          "attn_r2_to_head": float(mean[l, h, ANSWER_POS, HEAD]), "z_patch_at_r2_recovered": rec,
                          "mover": bool(a >= min_attention and rec == rec and rec >= min_effect)})
    movers = [h for h in heads if h["mover"]]
    joint = None
    if movers:  # every mover's output at r2 patched at once: how much of the gap the movers carry together
        by_layer = {}
        for h in movers:
            by_layer.setdefault(h["layer"], []).append(h["head_index"])

        def put(act, hook):
            l = int(hook.name.split(".")[1])
            hs = torch.tensor(by_layer[l], device=act.device)
            act[:, ANSWER_POS, hs] = cache[z_names[l]][:, ANSWER_POS, hs]
            return act

        lg = model.run_with_hooks(pairs.corrupt.to(device), fwd_hooks=[(z_names[l], put) for l in by_layer])
        m = float(pairs.metric(lg.float().cpu(), metric).mean())
        joint = (m - m_corrupt) / gap if abs(gap) > 1e-9 else None
    ex = list(range(min(n_examples, len(pairs))))
    A = layout.position_names[ANSWER_POS]  # the answer position's role: r2 in the toy
    return {
        "n_prompts": len(pairs), "roles": roles(layout), "mean_pattern": mean.tolist(),
        "examples": [{"prompt": " ".join(names[int(t)] for t in pairs.clean[i]), "answer": names[int(pairs.answer[i])],
                      "bridge": names[int(pairs.bridge[i])], "pattern": pattern[i].tolist()} for i in ex],
        "metric": metric, "clean": m_clean, "corrupt": m_corrupt, "heads": heads,
        "movers": [h["head"] for h in movers], "movers_joint_recovered": joint,
        "mover_rule": f"mean attention {A} -> r1 >= {min_attention} and patching the head's output at {A} clean -> corrupted "
                      f"recovers >= {min_effect} of the {metric} gap",
    }
