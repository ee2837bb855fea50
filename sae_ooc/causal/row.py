"""One row of stage `variables`: every candidate unit of the bridge at (hook, r1), its control and its erasure."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sae_ooc.causal.control import Scored, switch_only
from sae_ooc.causal.das import das_delta, train_das
from sae_ooc.causal.erase import leace, leace_fn, mean_projection_fn, one_hot, probe_accuracy
from sae_ooc.causal.isolation import read_state
from sae_ooc.causal.pairs import FIT, HELD, VALID, Pairs
from sae_ooc.causal.result import RowPairs, VariableRow
from sae_ooc.causal.scoring import Scorer, sae_units
from sae_ooc.causal.units import class_means, principal_directions, projected, random_basis, random_subspace_delta
from sae_ooc.interventions.prompts import matches
from sae_ooc.interventions.steering import answers_with_delta, bridge_feature_matrix


@dataclass
class Context:
    """What every hook's row shares (built once by the stage)."""

    model: object
    facts: object
    cfg: object  # the causal section
    pos: int  # r1's position
    position_name: str
    prefixes: list[tuple[int, int]]  # distinct (h, r1) prefixes
    p_group: torch.Tensor  # [P] FIT | VALID | HELD
    p_bridge: torch.Tensor  # [P] the bridge each prefix lands on
    q_tok: torch.Tensor  # [Q, width] every two-hop question
    q_pos: torch.Tensor
    clean: object  # Answers of every question
    q: object  # Questions
    pairs: dict[int, Pairs]
    heldout_q: torch.Tensor  # questions of the held-out splits with a held-out prefix (erasure's accuracy)
    entity_of: dict[str, int]
    read_hook: str = ""  # where r2 is read for isolation (the last layer's output, answer position)
    r2_reader: object = None  # activation there -> r2 (a probe fitted on clean fit-prefix questions)
    bases: dict = field(default_factory=dict)  # hook -> {rank: DAS basis [r, d]} of the bridge at r1 (the circuit's node)

    def prefix_rows(self, hr: torch.Tensor) -> torch.Tensor:
        index = {p: i for i, p in enumerate(self.prefixes)}
        return torch.tensor([index[(int(h), int(r))] for h, r in hr.tolist()], dtype=torch.long).reshape(-1)


def scored(ctx: Context, P: Pairs, X: torch.Tensor) -> Scored:
    x = X[ctx.prefix_rows(torch.stack([P.head, P.r1], 1))] if len(P) else X[:0]
    xd = X[ctx.prefix_rows(P.donor)] if len(P) else X[:0]
    cons = torch.tensor([ctx.facts.answer_via(int(b2), int(r1), rel) for b2, r1, rel in zip(P.b2, P.r1, P.rels())], dtype=torch.long)
    return Scored(ctx.q_tok[P.base_q], ctx.q_pos[P.base_q], ctx.clean[P.base_q], ctx.facts.answer_ids(cons), x, xd, P.head)


def das_unit(ctx: Context, hook: str, X: torch.Tensor, base_resid: torch.Tensor, U: torch.Tensor, rank: int, seed: int):
    """DAS of rank `rank` at (hook, r1), trained on the fit pairs ctx.pairs[FIT] (ctx.cfg's das_steps, das_batch, das_lr) and
    started from U[:rank], the top principal directions of the fit class means. X [P, d]: each prefix's r1 state at the
    hook; base_resid [len(fit pairs), width, d]: their base questions' residual at the hook. The variables stage and
    `sae-ooc dynamics` (per checkpoint) both fit their subspaces here."""
    cfg, Fp = ctx.cfg, ctx.pairs[FIT]
    xd_fit = X[ctx.prefix_rows(Fp.donor)]
    target = ctx.facts.answer_ids(torch.tensor([ctx.facts.answer_via(int(b2), int(r1), rel) for b2, r1, rel in zip(Fp.b2, Fp.r1, Fp.rels())]))[:, 0]
    return train_das(ctx.model, hook, base_resid, ctx.pos, ctx.q_pos[Fp.base_q], xd_fit, target, rank, cfg.das_steps,
                     cfg.das_batch, cfg.das_lr, seed, init=U[:rank])


def bridge_row(ctx: Context, sae, hook: str, X: torch.Tensor, q_x: torch.Tensor, hook_labels: dict, seed: int) -> VariableRow:
    """The bridge at (hook, r1). X [P, d]: each prefix's r1 state at the hook; q_x [Q, width, d]: every question's
    residual at the hook (what DAS is trained on)."""
    cfg, model, pos, bs = ctx.cfg, ctx.model, ctx.pos, ctx.cfg.batch_size
    E = ctx.facts.n_entities
    fit = ctx.p_group == FIT
    mu, has = class_means(X[fit], ctx.p_bridge[fit], E)
    U, var_share = principal_directions(mu, has)
    with torch.no_grad():
        F = sae.encode(X.to(sae.W_dec.device)).float().cpu()
    mu_f, _ = class_means(F[fit], ctx.p_bridge[fit], E)
    S, V = scored(ctx, ctx.pairs[HELD], X), scored(ctx, ctx.pairs[VALID], X)
    row = VariableRow(variable="bridge", position=ctx.position_name, hook=hook, n_heldout=len(S), n_heads=int(S.heads.unique().numel()),
                      pairs=RowPairs())
    g = torch.Generator().manual_seed(seed)
    sc = Scorer(model, S, hook, pos, cfg, seed, row, g)
    measure = sc.measure
    Pr = ctx.pairs[HELD]
    measure("resid_patch", S.xd - S.x, None, "resid_patch")
    # labelled features: eval-sae's bridge=b and bridge=b' features at r1, exchanged from the donor
    M = bridge_feature_matrix(hook_labels, ctx.position_name, ctx.entity_of, E, int(sae.cfg.d_sae))
    sae_units(sc, sae, mu_f, Pr.b, Pr.b2, M)
    row.units["labelled_features"]["n_bridge_features"] = row.units["labelled_features"].pop("n_labelled_features")
    edit = mu[Pr.b2] - mu[Pr.b]
    measure("supervised", edit, None, "supervised")
    ranks = sorted(set(r for r in cfg.ranks if r <= X.shape[1]))
    row.curves["supervised"] = []
    for r in ranks:
        measure(f"supervised_rank{r}", projected(edit, U[:r]), r, "supervised")
        row.curves["supervised"].append(f"supervised_rank{r}")
    # DAS: trained on fit-train pairs, rank chosen on fit-valid pairs, scored on held-out pairs
    Fp = ctx.pairs[FIT]
    das = {"valid_switch": {}, "valid_resid_patch": switch_only(model, V, hook, pos, V.xd - V.x, bs), "n_train_pairs": len(Fp),
           "n_valid_pairs": len(V)}
    bases = {}
    row.curves["das"], row.curves["random_subspace"] = [], []
    if len(Fp):
        for r in ranks:
            mod = das_unit(ctx, hook, X, q_x[Fp.base_q], U, r, seed + r)
            bases[r] = mod.basis.detach().cpu()
            das["valid_switch"][str(r)] = switch_only(model, V, hook, pos, das_delta(mod, V.x, V.xd), bs)
            d = measure(f"das_rank{r}", das_delta(mod, S.x, S.xd), r, "das")
            row.curves["das"].append(f"das_rank{r}")
            sc.random_ref(f"random_rank{r}", lambda d=d, r=r: random_subspace_delta(S.x, S.xd, r, d, g), r, "random_subspace")
            row.curves["random_subspace"].append(f"random_rank{r}")
    ref = das["valid_resid_patch"]
    reach = [r for r in ranks if ref and das["valid_switch"].get(str(r)) is not None and das["valid_switch"][str(r)] >= 0.8 * ref]
    das["min_rank_80"] = min(reach) if reach else None
    ctx.bases[hook] = bases
    das["chosen_on"] = "fit-valid prefixes (never the held-out ones)"
    row.das = das
    if len(S) and "random_rank16" in row.units:
        row.units["random"] = dict(row.units["random_rank16"], reference="a random rank-16 subspace at das_rank16's norm")
    row.class_means = {"variance_share": [float(v) for v in var_share[:32]], "n_classes": int(has.sum())}
    k = min(cfg.erase_rank, X.shape[1])
    iso = {"resid_patch": S.xd - S.x, "supervised": edit}
    if k in bases:
        iso[f"das_rank{k}"] = ((S.xd - S.x) @ bases[k].T) @ bases[k]
        iso[f"random_rank{k}"] = random_subspace_delta(S.x, S.xd, k, iso[f"das_rank{k}"], g)
    row.isolation = isolation(ctx, hook, S, iso)
    row.erase = erase_row(ctx, hook, X, q_x, mu, has, U, bases, g)
    return row


def isolation(ctx: Context, hook: str, S: Scored, deltas: dict[str, torch.Tensor]) -> dict:
    """Share of held-out pairs on which r2 is still read at the answer position after each unit's interchange
    (sae_ooc.causal.isolation), and on the clean questions."""
    if ctx.r2_reader is None or len(S) == 0:
        return {}
    r2 = ctx.q.r2[ctx.pairs[HELD].base_q]

    def kept(delta):
        z = read_state(ctx.model, S.tokens, S.answer_pos, hook, ctx.pos, delta, ctx.read_hook, ctx.cfg.batch_size)
        return float((ctx.r2_reader(z) == r2).float().mean())

    return {"read_at": ctx.read_hook, "clean": kept(None), **{n: kept(d) for n, d in deltas.items()}}


def erase_row(ctx: Context, hook: str, X: torch.Tensor, q_x: torch.Tensor, mu, has, U, bases: dict, g) -> dict:
    """Necessity: accuracy of the held-out questions and a refitted held-out probe of b, with a unit erased at (hook, r1)."""
    cfg, model, pos = ctx.cfg, ctx.model, ctx.pos
    r = min(cfg.erase_rank, X.shape[1])
    fit, held = ctx.p_group == FIT, ctx.p_group == HELD
    yb = ctx.p_bridge
    rows = ctx.heldout_q
    tok, apos = ctx.q_tok[rows], ctx.q_pos[rows]
    answer = ctx.facts.answer_ids(ctx.q.answer[rows])
    xq = q_x[rows, pos]
    mean = X[fit].mean(0)

    def measure(fn) -> dict:
        out = answers_with_delta(model, tok, apos, hook, pos, fn(xq) - xq, cfg.batch_size, answer.shape[1]) if len(rows) else None
        acc = float(matches(out.greedy, answer).float().mean()) if out is not None else None
        return {"acc": acc, "probe": probe_accuracy(fn(X[fit]), yb[fit], fn(X[held]), yb[held], cfg.probe_steps, cfg.seed)}

    res = {"rank": r, "n_questions": len(rows), "measured_on": "held-out questions (their prefixes held out); the probe: fit "
           "on the erased fit prefixes, scored on the erased held-out prefixes", "none": measure(lambda x: x)}
    z = (mu[yb[fit]] - mu[has].mean(0)) @ U[:r].T  # the bridge's coordinates on the top-r directions of the class means
    res[f"leace_rank{r}"] = measure(leace_fn(leace(X[fit], z)))
    classes = torch.unique(yb[fit])
    res["leace_full"] = measure(leace_fn(leace(X[fit], one_hot(torch.searchsorted(classes, yb[fit]), len(classes)))))
    res[f"mean_proj_supervised_rank{r}"] = measure(mean_projection_fn(U[:r], mean))
    if r in bases:
        res[f"mean_proj_das_rank{r}"] = measure(mean_projection_fn(bases[r], mean))
    draws = [measure(mean_projection_fn(random_basis(X.shape[1], r, g), mean)) for _ in range(cfg.random_draws)]
    res[f"random_rank{r}"] = {k: (sum(d[k] for d in draws) / len(draws) if draws[0][k] is not None else None) for k in ("acc", "probe")}
    res[f"random_rank{r}"]["acc_range"] = ([min(d["acc"] for d in draws), max(d["acc"] for d in draws)]
                                           if draws[0]["acc"] is not None else None)
    return res
