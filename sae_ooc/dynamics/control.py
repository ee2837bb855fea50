"""Per checkpoint: is the bridge at r1 *used*, not only readable? The control score of stage `variables` (sae_ooc.causal),
refitted on each checkpoint.

A probe reads what a layer holds; an interchange shows what the model computes with. At each `dynamics.das_hooks` hook,
a DAS subspace of rank `dynamics.das_rank` is trained on the fit prefixes' interchange pairs (started from the top
principal directions of the fit class means, `dynamics.das_steps` Adam steps: `sae_ooc.causal.row.das_unit`, the
variables stage's own) and its interchange switch rate to t(b', r2) is scored on the held-out prefixes' pairs, beside
the residual patch (upper reference) and random subspaces of the same rank at the DAS edit's norm (lower reference).

The pairs are built once, as the variables stage builds them (`sae_ooc.causal.pairs`, the run's `causal` settings), on
the prefixes train-sae holds out at r1, except that every question is used whether or not a checkpoint answers it
(`only_correct` would change the pairs from one checkpoint to the next), and the fit pairs are a seeded sample of at
most `dynamics.das_fit_pairs`. A late-layer probe of b at r1 reads the atomic answer the model was trained to predict
there (the r1 prompt is an atomic fact): readability there says the atomic fact is learned, not that it is used.
"""

from __future__ import annotations

import dataclasses

import torch

from sae_ooc.causal.control import score, switch_only
from sae_ooc.causal.das import das_delta
from sae_ooc.causal.pairs import FIT, HELD, VALID, Pairs, draw_pairs, prefix_groups
from sae_ooc.causal.row import Context, das_unit, scored
from sae_ooc.causal.variables import two_hop_questions
from sae_ooc.causal.units import class_means, principal_directions, random_subspace_delta
from sae_ooc.dynamics.result import Checkpoint, Used
from sae_ooc.interventions.facts import Facts, atomic_template
from sae_ooc.interventions.prompts import read_batched
from sae_ooc.interventions.steer import residuals

USED = 0.5  # the bridge counts as used from the first step its DAS switch rate reaches this share of its final value


def _take(P: Pairs, idx: torch.Tensor) -> Pairs:
    return Pairs(*(getattr(P, f.name)[idx] for f in dataclasses.fields(P)))


@dataclasses.dataclass
class ControlSetup:
    """What every checkpoint shares: the questions the pairs use, the prefixes and the pairs (model-free)."""

    ctx: Context  # model and clean answers filled in per checkpoint
    p_tok: torch.Tensor  # [P, width] a question per distinct prefix (its r1 state is the prefix's)


def control_setup(ds, vocab, task_cfg, ccfg, held: set[tuple[int, int]], das_steps: int, max_fit_pairs: int,
                  keep_valid: bool = False) -> ControlSetup:
    """The variables stage's prefixes and pairs (`sae_ooc.causal.variables`), every question kept, the fit pairs capped
    (`keep_valid`: keep the fit-valid pairs too, for a caller that chooses something on them: scripts/sae_search.py)."""
    ccfg = dataclasses.replace(ccfg, das_steps=das_steps)
    facts = Facts.from_dataset(ds, vocab, task_cfg.family, atomic_template(task_cfg))
    layout = vocab.layout
    pos = layout.index("r1")
    q = two_hop_questions(ds, vocab, list(dict.fromkeys(ccfg.fit_splits + ccfg.heldout_splits)))
    groups = prefix_groups(list(zip(q.head.tolist(), q.r1.tolist())), held, ccfg.valid_fraction, ccfg.seed)
    prefixes = sorted(groups)
    p_group = torch.tensor([groups[p] for p in prefixes])
    p_bridge = torch.tensor([facts.tail[p] for p in prefixes])
    has_mean = set(p_bridge[p_group == FIT].tolist())
    in_fit = torch.tensor([s in ccfg.fit_splits for s in q.split], dtype=torch.bool)
    in_held = torch.tensor([s in ccfg.heldout_splits for s in q.split], dtype=torch.bool)
    pairs = {g: draw_pairs(facts, q, (in_held if g == HELD else in_fit).nonzero().squeeze(1), groups, g,
                           ccfg.das_pairs_per_prompt if g == FIT else 1, ccfg.seed + g, has_mean) for g in (FIT, VALID, HELD)}
    fit = pairs[FIT]
    if len(fit) > max_fit_pairs:  # DAS sees das_steps x das_batch pairs: a sample of them is enough
        g = torch.Generator().manual_seed(ccfg.seed)
        pairs[FIT] = _take(fit, torch.randperm(len(fit), generator=g)[:max_fit_pairs].sort().values)
    if not keep_valid:
        del pairs[VALID]  # the rank is fixed (dynamics.das_rank): nothing is chosen on fit-valid here
    # only the questions the pairs ask are answered per checkpoint: renumber them
    used = torch.cat([P.base_q for P in pairs.values()]).unique()
    new_index = torch.full((len(q),), -1, dtype=torch.long)
    new_index[used] = torch.arange(len(used))
    pairs = {k: dataclasses.replace(P, base_q=new_index[P.base_q]) for k, P in pairs.items()}
    q = q.subset(used)
    q_tok, q_pos = facts.tokens(list(zip(q.head.tolist(), q.r1.tolist(), q.r2.tolist())))
    p_tok, _ = facts.tokens([(h, r, r) for h, r in prefixes])
    ctx = Context(model=None, facts=facts, cfg=ccfg, pos=pos, position_name=layout.position_names[pos], prefixes=prefixes,
                  p_group=p_group, p_bridge=p_bridge, q_tok=q_tok, q_pos=q_pos, clean=None, q=q, pairs=pairs,
                  heldout_q=torch.zeros(0, dtype=torch.long), entity_of={})
    return ControlSetup(ctx, p_tok)


def bridge_control(model, setup: ControlSetup, hooks: list[str], rank: int, n_random: int) -> dict[str, dict]:
    """{hook: {das, resid_patch, random: switch rates on the held-out pairs; das_ci95: the DAS rate's 95% interval over head
    entities; das_logit_change}} on this checkpoint's `model`. The DAS seed
    of hook k is the variables stage's (causal.seed + 1000 k + rank), so on the same model and pairs the two agree."""
    ctx = dataclasses.replace(setup.ctx, model=model)
    cfg, pos, bs = ctx.cfg, ctx.pos, ctx.cfg.batch_size
    ctx.clean = read_batched(model, ctx.q_tok, ctx.q_pos, ctx.facts.answer_len, bs)
    fit = ctx.p_group == FIT
    Fp = ctx.pairs[FIT]
    p_x = residuals(model, setup.p_tok, hooks, bs)
    out = {}
    for k, h in enumerate(hooks):
        X = p_x[h][:, pos]
        r = min(rank, X.shape[1])
        S = scored(ctx, ctx.pairs[HELD], X)
        rec = {"n": len(S), "resid_patch": switch_only(model, S, h, pos, S.xd - S.x, bs), "das": None, "random": None}
        if len(Fp) and len(S):
            mu, has = class_means(X[fit], ctx.p_bridge[fit], ctx.facts.n_entities)
            U, _ = principal_directions(mu, has)
            seed = cfg.seed + 1000 * k
            mod = das_unit(ctx, h, X, residuals(model, ctx.q_tok[Fp.base_q], [h], bs)[h], U, r, seed + r)
            d = das_delta(mod, S.x, S.xd)
            sc = score(model, S, h, pos, d, bs, cfg.bootstrap, seed, r, "das")  # the variables stage's numbers for das_rank<r>
            rec.update(das=sc["switch"], das_ci95=sc["ci95"], das_logit_change=sc["logit_change"])
            g = torch.Generator().manual_seed(seed)
            draws = [switch_only(model, S, h, pos, random_subspace_delta(S.x, S.xd, r, d, g), bs) for _ in range(n_random)]
            rec["random"] = sum(draws) / len(draws)
        out[h] = rec
    return out


def first_used(points: list[Checkpoint], hooks: list[str], key: str = "control") -> Used | None:
    """The earliest step at which the DAS switch rate reaches USED of its final value, at the hook where the final value is
    highest (None when no checkpoint was scored or the final value is 0). `key`: the checkpoints' record (control: at r1;
    control_answer: at the answer position)."""
    scored_pts = [p for p in points if getattr(p, key)]
    if not scored_pts:
        return None
    last = getattr(scored_pts[-1], key)
    best = max((h for h in hooks if h in last and last[h].das is not None), key=lambda h: last[h].das, default=None)
    if best is None or last[best].das <= 0:
        return None
    final = last[best].das
    for p in scored_pts:
        v = getattr(p, key)[best].das if best in getattr(p, key) else None
        if v is not None and v >= USED * final:
            return Used(step=p.step, hook=best, switch=v, final_switch=final)
    return None
