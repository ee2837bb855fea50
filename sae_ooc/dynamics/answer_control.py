"""Per checkpoint: is the bridge *used at the answer position*? The variables stage's bridge@answer unit, refitted on
each checkpoint.

At r1 the bridge is the atomic answer the model was trained to predict there, so a probe (or even a DAS subspace) at r1
can show the atomic fact, not the second hop. The answer position is where the second hop reads the bridge: per
checkpoint and `dynamics.das_hooks` hook, stage `variables`' own search (`sae_ooc.causal.circuit.answer_units`, with the
one rank `dynamics.das_rank`) trains a DAS subspace at the answer position on the fit pairs, half of whose donors ask
another relation (a subspace that carried the donor's answer instead of its bridge could not fit them), where the
residual patch there switches at least `causal.circuit_patch_min` of the fit-valid pairs; its interchange switch rate to
t(b', r2) is scored on the held-out pairs beside the residual patch at the answer position.
"""

from __future__ import annotations

import dataclasses

from sae_ooc.causal.circuit import PairStates, answer_units
from sae_ooc.causal.control import switch_only
from sae_ooc.causal.pairs import FIT, HELD, VALID
from sae_ooc.interventions.prompts import read_batched


def answer_hooks(model) -> list[str]:
    """Where the variables stage looks for bridge@answer (`sae_ooc.causal.circuit.variable_circuit`), in its order: every
    hook_resid_pre and hook_resid_mid (the DAS seeds follow this order, so the same hooks give the same subspaces)."""
    n = model.cfg.n_layers
    return [h for h in (f"blocks.{L}.hook_resid_{w}" for L in range(n) for w in ("pre", "mid")) if h in model.hook_dict]


def answer_control(model, setup, rank: int) -> dict[str, dict]:
    """{hook: {das: held-out switch of the rank-`rank` bridge@answer subspace (None where the residual patch is below
    causal.circuit_patch_min on the fit-valid pairs), resid_patch: the held-out residual patch at the answer position,
    valid_resid_patch, n}} at every `answer_hooks` hook of this checkpoint's `model`. `setup` is
    `control_setup(..., keep_valid=True)`."""
    hooks = answer_hooks(model)
    ctx = dataclasses.replace(setup.ctx, model=model, cfg=dataclasses.replace(setup.ctx.cfg, ranks=[rank]))
    ctx.clean = read_batched(model, ctx.q_tok, ctx.q_pos, ctx.facts.answer_len, ctx.cfg.batch_size)
    if len(ctx.pairs[HELD]) == 0 or not bool((ctx.q_pos == ctx.q_pos[0]).all()):  # nothing to score, or no one answer position
        return {}
    apos = int(ctx.q_pos[0])
    F, V, H = (PairStates(ctx, ctx.pairs[g], hooks) for g in (FIT, VALID, HELD))
    search, _ = answer_units(ctx, hooks, F, V, H, apos, ctx.cfg.seed + 7)  # the variables stage's circuit seed
    out = {}
    for h in hooks:
        S = H.scored(h, apos)
        rec = search.get(h, {})
        out[h] = {"n": len(S), "das": rec.get("heldout_switch", {}).get(str(rank)),
                  "resid_patch": switch_only(model, S, h, apos, S.xd - S.x, ctx.cfg.batch_size),
                  "valid_resid_patch": rec.get("valid_resid_patch")}
    return out
