"""Section 1 for every planted variable besides the bridge at r1 (`causal.variables`): the head entity at `head`, the
relations r1 and r2 at their positions, the bridge and the answer at the answer position (a natural task: the last token of
each role's span, sae_ooc.tasks.layout).

A variable is interchanged from a donor question that differs from the base in it (and in what it determines) and agrees
with the base where the high-level model needs it to, so that the high-level model's counterfactual answer is always the
donor's own answer, and differs from the base's:
- head: donor (h', r1, r2), answer t(t(h', r1), r2);       - r1: donor (h, r1', r2), answer t(t(h, r1'), r2);
- r2: donor (h, r1, r2'), answer t(b, r2');                - bridge@answer: donor (h', r1', r2) with b' != b, answer t(b', r2);
- answer: donor asking another r2 with another answer a' (a unit carrying the bridge would give t(b', r2), not a').
Base and donor are correctly answered questions of the same prefix group at the variable's position: the state there
depends on the tokens up to it (its prefix: (h), (h, r1) or (h, r1, r2)), so the held-out questions are those whose prefix
train-sae held out at that position (neither the SAE nor its labels saw them), and the other prefixes are split into
fit-train (class means, DAS) and fit-valid (DAS's validation switch), as for the bridge (sae_ooc.causal.pairs).

Every row has the residual patch (upper reference), the SAE units (sae_ooc.causal.scoring), the class-mean edit and its
rank-r projections where the held-out values have fit class means (a head held out at `head` has none: its state there is
its own), DAS subspaces of the ranks `causal.variable_ranks` where the residual patch switches at least
`causal.variable_patch_min` of fit-valid pairs, and random subspaces at each DAS rank's norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae_ooc.causal.control import Scored, switch_only
from sae_ooc.causal.das import das_delta, train_das
from sae_ooc.causal.pairs import FIT, HELD, VALID, prefix_groups
from sae_ooc.causal.result import VariableRow
from sae_ooc.causal.scoring import Scorer, sae_units
from sae_ooc.causal.units import class_means, principal_directions, projected, random_subspace_delta
from sae_ooc.errors import UserError
from sae_ooc.interventions.steering import label_matrix
from sae_ooc.tasks.layout import TOY_LAYOUT

FIELDS = ("head", "r1", "r2", "r3", "bridge", "bridge2", "answer")


@dataclass(frozen=True)
class Spec:
    variable: str  # the Questions field its value is (head, r1, r2, bridge, answer)
    role: str  # where it is interchanged: a layout role, or "answer" (the answer position)
    share: tuple[str, ...]  # fields the donor shares with the base
    differ: tuple[str, ...]  # fields the donor differs in (the answer always does)


def specs(layout, high=None) -> dict[str, Spec]:
    """The variables of the layout's question (Layout.variables, its roles) and how each is interchanged. A donor shares
    every relation the high-level model reads after the variable, so that its answer is the counterfactual one. Two
    hops: head, r1, r2, bridge@answer, answer. Three hops (r3, bridge2 = t(bridge, r2)) add r3, the first bridge at r2,
    the second at r2 and at the answer position (r3). One fact (the reversal family's question): head, r1, answer.
    `high` (sae_ooc.tasks.counterfactuals.HighLevel): the family's own specs replace or add to these (comparison: both
    values at the answer position, each with the other value shared)."""
    rels = tuple(r for r in ("r1", "r2", "r3") if r in layout.variables and (r in layout.roles or r in layout.position_names))
    out = {"head": Spec("head", "head", rels, ("head",))}
    for r in rels:
        out[r] = Spec(r, r, tuple(x for x in ("head",) + rels if x != r), (r,))
    if layout.question_hop >= 2:
        out["bridge@answer"] = Spec("bridge", "answer", rels[1:], ("bridge",))
    if "bridge2" in layout.variables:
        out["bridge@r2"] = Spec("bridge", "r2", rels[1:], ("bridge",))
        out["bridge2@r2"] = Spec("bridge2", "r2", rels[2:], ("bridge2",))
        out["bridge2@answer"] = Spec("bridge2", "answer", rels[2:], ("bridge2",))
    out["answer"] = Spec("answer", "answer", (), ("answer", rels[-1]))
    for name, (variable, role, share, differ) in (high.specs if high is not None else {}).items():
        out[name] = Spec(variable, role, tuple(share), tuple(differ))
    return out


def spec_of(layout, name: str, high=None) -> Spec:
    """Variable `name`'s Spec in this layout (and family: `high`), or the one-line error naming the ones it has."""
    s = specs(layout, high)
    if name not in s:
        raise UserError(f"causal.variables: {name} is not a variable of this task's question; use some of {', '.join(s)}")
    return s[name]


SPECS = specs(TOY_LAYOUT)  # the two-hop question's


def position_of(layout, role: str) -> int:
    return layout.answer_pos if role == "answer" else layout.index(role)


def prefix_roles(layout, pos: int) -> list[str]:
    """The question's roles whose tokens are at or before `pos` (what the state at pos can depend on)."""
    return [r for r in ("head", "r1", "r2", "r3") if (r in layout.roles or r in layout.position_names) and layout.index(r) <= pos]


def heldout_keys(tok: dict[str, torch.Tensor], rows: torch.Tensor, pos: int, roles: list[str]) -> set[tuple]:
    """The prefixes (values of `roles`) of the cache rows `rows` [n_tokens] bool at position `pos`."""
    at = rows & (tok["role"] == pos)
    for r in roles:
        at &= tok[r] >= 0
    return set(zip(*(tok[r][at].tolist() for r in roles))) if roles else set()


def question_keys(q, roles: list[str]) -> list[tuple]:
    return list(zip(*(getattr(q, r).tolist() for r in roles)))


def draw(q, spec: Spec, rows: torch.Tensor, eligible: torch.Tensor, has: torch.Tensor | None, seed: int, tries: int = 30):
    """(base [n], donor [n]) question rows: for each base in `rows` a donor among `eligible` [Q] bool with the spec's shared
    fields equal and its differing fields and answer different; with `has` [n_values] bool, both values have a fit mean."""
    rng = np.random.default_rng(seed)
    vals = {f: getattr(q, f).tolist() for f in FIELDS}
    index: dict[tuple, list[int]] = {}
    for j in eligible.nonzero().squeeze(1).tolist():
        index.setdefault(tuple(vals[f][j] for f in spec.share), []).append(j)
    hv = None if has is None else has.tolist()
    v = vals[spec.variable]
    base, donor = [], []
    for i in rows.tolist():
        if hv is not None and not hv[v[i]]:
            continue
        pool = index.get(tuple(vals[f][i] for f in spec.share), [])
        for _ in range(tries if pool else 0):
            j = pool[int(rng.integers(len(pool)))]
            if (vals["answer"][j] != vals["answer"][i] and all(vals[f][j] != vals[f][i] for f in spec.differ)
                    and (hv is None or hv[v[j]])):
                base.append(i)
                donor.append(j)
                break
    return torch.tensor(base, dtype=torch.long), torch.tensor(donor, dtype=torch.long)


@dataclass
class VariablePairs:
    """Per group (FIT, VALID, HELD): (base rows, donor rows) of the stage's Questions; what they were drawn on."""

    spec: Spec
    name: str
    pos: int
    position_name: str
    group: torch.Tensor  # [Q] each question's prefix group at pos
    pairs: dict
    has: torch.Tensor | None  # [n_values] the values with a fit class mean, when the held-out ones have them
    n_values: int


def variable_pairs(ctx, name: str, layout, held_keys: set[tuple], fit_ok: torch.Tensor, held_ok: torch.Tensor,
                   donor_ok: torch.Tensor) -> VariablePairs:
    """The interchange pairs of variable `name` (SPECS). fit_ok / held_ok [Q] bool: the base questions of the fit / held-out
    splits (answered correctly, when only correct ones are interchanged); donor_ok: the donors (any split of the stage: a
    donor's prefix is what has to be held out)."""
    cfg, q = ctx.cfg, ctx.q
    spec = spec_of(layout, name, ctx.facts.high)
    pos = position_of(layout, spec.role)
    roles = prefix_roles(layout, pos)
    keys = question_keys(q, roles)
    groups = prefix_groups(keys, held_keys, cfg.valid_fraction, cfg.seed)
    group = torch.tensor([groups[k] for k in keys], dtype=torch.long)
    value = getattr(q, spec.variable)
    n_values = int(value.max()) + 1 if len(value) else 1
    has = torch.bincount(value[(group == FIT) & fit_ok], minlength=n_values) > 0
    held = (group == HELD) & held_ok
    # values without a fit class mean have no class-mean unit: keep to values with one unless no held-out question has one
    # (a head held out at `head` is held out everywhere: its state there is its own)
    use_has = has if bool(has[value[held]].any()) else None
    pairs = {}
    for g, ok in ((FIT, fit_ok), (VALID, fit_ok), (HELD, held_ok)):
        rows = ((group == g) & ok).nonzero().squeeze(1)
        if g == FIT and len(rows) > cfg.variable_fit_pairs:
            rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.variable_fit_pairs]].sort().values
        pairs[g] = draw(q, spec, rows, (group == g) & donor_ok, use_has, cfg.seed + 10 * g + 1)
    return VariablePairs(spec, name, pos, layout.position_names[pos], group, pairs, use_has, n_values)


def pair_scored(ctx, base: torch.Tensor, donor: torch.Tensor, X: torch.Tensor) -> Scored:
    q = ctx.q
    return Scored(ctx.q_tok[base], ctx.q_pos[base], ctx.clean[base], ctx.facts.answer_ids(q.answer[donor]), X[base], X[donor], q.head[base])


def variable_row(ctx, vp: VariablePairs, sae, hook: str, q_x: torch.Tensor, hook_labels: dict, value_of: dict, seed: int) -> VariableRow:
    """Variable vp.name at (hook, vp.pos): every candidate unit's control on the held-out pairs (module docstring). q_x [Q,
    width, d]: every question's residual at the hook."""
    cfg, model, pos, bs = ctx.cfg, ctx.model, vp.pos, ctx.cfg.batch_size
    X = q_x[:, pos]
    value = getattr(ctx.q, vp.spec.variable)
    (hb, hd), (vb, vd), (fb, fd) = vp.pairs[HELD], vp.pairs[VALID], vp.pairs[FIT]
    S, V = pair_scored(ctx, hb, hd, X), pair_scored(ctx, vb, vd, X)
    row = VariableRow(variable=vp.spec.variable, position=vp.position_name, hook=hook, n_heldout=len(S),
                      n_heads=int(S.heads.unique().numel()))
    row.pairs = {"donor": "differs in " + ", ".join(vp.spec.differ) + (f", shares {', '.join(vp.spec.share)}" if vp.spec.share else ""),
                 "counterfactual": "the donor's answer", "n_fit": len(fb), "n_valid": len(vb), "name": vp.name,
                 "role": vp.spec.role, "pos": pos}
    g = torch.Generator().manual_seed(seed)
    sc = Scorer(model, S, hook, pos, cfg, seed, row, g)
    sc.measure("resid_patch", S.xd - S.x, None, "resid_patch")
    fit_rows = (vp.group == FIT).nonzero().squeeze(1)
    mu, has = class_means(X[fit_rows], value[fit_rows], vp.n_values)
    U, var_share = principal_directions(mu, has)
    row.class_means = {"variance_share": [float(v) for v in var_share[:32]], "n_classes": int(has.sum())}
    means = vp.has is not None
    if sae is not None:
        mu_f = None
        if means:
            with torch.no_grad():
                F = sae.encode(X[fit_rows].to(sae.W_dec.device)).float().cpu()
            mu_f = class_means(F, value[fit_rows], vp.n_values)[0]
        M = label_matrix(hook_labels, vp.spec.variable, vp.position_name, value_of, vp.n_values, int(sae.cfg.d_sae))
        sae_units(sc, sae, mu_f, value[hb], value[hd], M if bool(M.any()) else None)
    ranks = sorted(set(r for r in cfg.ranks if r <= X.shape[1]))
    if means:
        edit = mu[value[hd]] - mu[value[hb]]
        sc.measure("supervised", edit, None, "supervised")
        row.curves["supervised"] = []
        for r in ranks:
            if r <= int(has.sum()):
                sc.measure(f"supervised_rank{r}", projected(edit, U[:r]), r, "supervised")
                row.curves["supervised"].append(f"supervised_rank{r}")
    else:
        row.class_means["skipped"] = "the held-out values have no fit class mean, being held out with their prefix"
    das = {"valid_switch": {}, "valid_resid_patch": switch_only(model, V, hook, pos, V.xd - V.x, bs), "n_train_pairs": len(fb),
           "n_valid_pairs": len(V), "chosen_on": "nothing: every rank is reported on held-out pairs"}
    row.curves["das"], row.curves["random_subspace"] = [], []
    if das["valid_resid_patch"] is not None and das["valid_resid_patch"] < cfg.variable_patch_min:
        das["skipped"] = (f"the residual patch switches {das['valid_resid_patch']:.1%} of fit-valid pairs, under "
                          f"causal.variable_patch_min {cfg.variable_patch_min:.0%}: the variable is not used from here")
    elif len(fb):
        target = ctx.facts.answer_ids(ctx.q.answer[fd])[:, 0]
        for r in sorted(set(r for r in cfg.variable_ranks if r <= X.shape[1])):
            mod = train_das(model, hook, q_x[fb], pos, ctx.q_pos[fb], X[fd], target, r, cfg.das_steps, cfg.das_batch, cfg.das_lr,
                            seed + r, init=U[:r])
            das["valid_switch"][str(r)] = switch_only(model, V, hook, pos, das_delta(mod, V.x, V.xd), bs)
            d = sc.measure(f"das_rank{r}", das_delta(mod, S.x, S.xd), r, "das")
            row.curves["das"].append(f"das_rank{r}")
            sc.random_ref(f"random_rank{r}", lambda d=d, r=r: random_subspace_delta(S.x, S.xd, r, d, g), r, "random_subspace")
            row.curves["random_subspace"].append(f"random_rank{r}")
    row.das = das
    if row.curves["random_subspace"]:
        ref = row.curves["random_subspace"][-1]
        row.units["random"] = dict(row.units[ref], reference=f"a random rank-{row.units[ref]['size']} subspace at "
                                                              f"das_rank{row.units[ref]['size']}'s norm")
    return row
