"""Section 2 of stage `variables`: the circuit of causal variables, scored as a causal model.

High-level model: head, r1 -> bridge@r1 -> bridge@answer; bridge@answer, r2 -> answer (= t(bridge, r2)). Its nodes are
units of section 1 and a second DAS unit fitted here:
- bridge@r1: section 1's DAS subspace at the hook whose residual patch at r1 switches most fit-valid pairs, at the rank
  chosen there (the smallest reaching 80% of that patch on fit-valid pairs);
- bridge@answer: a DAS subspace at the answer position (the layout's `answer_pos`), trained by interchange from a donor
  question with another bridge (half the donors asking the same r2, half another r2'', the target t(b', r2) either way) on
  fit pairs, at every residual hook (hook_resid_pre and hook_resid_mid of
  every layer, with or without an SAE) whose residual patch at the answer position
  switches at least `causal.circuit_patch_min` of fit-valid pairs; hook and rank chosen on fit-valid pairs the same way;
- r2 at the answer position: the span of the fit class means of r2 there (a supervised unit: r2 is an input of the
  high-level model, the circuit needs it beside the bridge), its IIA on section 1's r2 pairs (donor (h, r1, r2'));
- the inputs head, r1 and r2: each its token (the whole stream at the first hook), beside the smallest DAS unit of section 1
  that carries it (`input_nodes`).

Scores, on the held-out pairs of section 1 (prefixes held out of everything fitted; `iia`: the weaker bridge node,
`iia_every_node`: the weakest node, inputs and r2 included):
- IIA per node: the unit's value interchanged from the donor (bridge b'), the model's answer equal to the high-level
  model's counterfactual t(b', r2); beside the residual patch at that (hook, position) and random subspaces of the rank;
- faithfulness with no remainder (sae_ooc.causal.ablate): each chosen hook's whole stream replaced by the units' clean
  projection plus the fit mean of the rest; shares of answers kept and the logit-difference faithfulness, beside random
  subspaces of the same ranks, the stream's full mean ablation (the zero point) and the identity (validity).
"""

from __future__ import annotations

import numpy as np
import torch

from sae_ooc.hooks import hook_sort_key
from sae_ooc.causal.ablate import ablated_answers, faithfulness, orthonormal
from sae_ooc.causal.control import Scored, score, spread, switch_only
from sae_ooc.causal.das import train_das_hooked
from sae_ooc.causal.pairs import FIT, HELD, VALID, Pairs
from sae_ooc.causal.planted import pair_scored
from sae_ooc.causal.units import class_means, principal_directions, projected, random_basis, random_subspace_delta
from sae_ooc.interventions.steer import residuals

CIRCUIT_UNITS_FILE = "circuit_units.safetensors"
SHARE = 0.8  # the chosen rank: the smallest whose fit-valid switch reaches this share of the patch's


def _counter(ctx, P: Pairs) -> torch.Tensor:
    """The high-level model's counterfactual answer of each pair (the task family's, sae_ooc.tasks.counterfactuals): the
    donor's bridge b' through the base's relations after r1 (t(b', r2); three hops t(t(b', r2), r3))."""
    return torch.tensor([ctx.facts.answer_via(int(b2), int(r1), rel) for b2, r1, rel in zip(P.b2, P.r1, P.rels())], dtype=torch.long)


class PairStates:
    """The base and donor questions of a set of pairs, their residual streams at every hook (whole width)."""

    def __init__(self, ctx, P: Pairs, hooks: list[str]):
        self.P = P
        self.tokens, self.answer_pos = ctx.q_tok[P.base_q], ctx.q_pos[P.base_q]
        self.clean = ctx.clean[P.base_q]
        self.counter = _counter(ctx, P)
        self.consistent = ctx.facts.answer_ids(self.counter)
        self.answer = ctx.facts.answer_ids(ctx.q.answer[P.base_q])
        bs = ctx.cfg.batch_size
        d_tok, _ = ctx.facts.tokens(P.donor_prompts()) if len(P) else (self.tokens[:0], None)
        self.base = residuals(ctx.model, self.tokens, hooks, bs) if len(P) else {}
        self.donor = residuals(ctx.model, d_tok, hooks, bs) if len(P) else {}

    def scored(self, hook: str, pos: int) -> Scored:
        return Scored(self.tokens, self.answer_pos, self.clean, self.consistent, self.base[hook][:, pos],
                      self.donor[hook][:, pos], self.P.head)


def _chosen_rank(valid: dict[int, float | None], patch: float | None) -> int:
    reach = [r for r, v in valid.items() if patch and v is not None and v >= SHARE * patch]
    return min(reach) if reach else max(valid)


def node_iia(ctx, S: Scored, hook: str, pos: int, W: torch.Tensor, g: torch.Generator, seed: int) -> dict:
    """IIA of a subspace unit W at (hook, pos) on the pairs S, beside the residual patch and random subspaces of its rank."""
    cfg, bs = ctx.cfg, ctx.cfg.batch_size
    d = projected(S.xd - S.x, W)
    r = len(W)
    return {"hook": hook, "position": pos, "rank": r,
            "unit": score(ctx.model, S, hook, pos, d, bs, cfg.bootstrap, seed, r, "das"),
            "resid_patch": score(ctx.model, S, hook, pos, S.xd - S.x, bs, cfg.bootstrap, seed, None, "resid_patch"),
            "random": spread([score(ctx.model, S, hook, pos, random_subspace_delta(S.x, S.xd, r, d, g), bs, cfg.bootstrap, seed, r,
                                    "random_subspace") for _ in range(cfg.random_draws)], r, "random_subspace")}


def answer_units(ctx, hooks: list[str], F: PairStates, V: PairStates, H: PairStates, apos: int, seed: int) -> tuple[dict, dict]:
    """bridge@answer: per hook the fit-valid residual patch at the answer position, and where it reaches causal.circuit_patch_min a DAS
    subspace per rank (fit-valid and held-out switch). Returns (the record, {hook: {rank: basis}})."""
    cfg, bs, model = ctx.cfg, ctx.cfg.batch_size, ctx.model
    rec, bases = {}, {}
    # half the training donors ask another relation r2'' (target still t(b', r2)): a subspace that carries the donor's
    # answer t(b', r2'') instead of its bridge cannot fit them, so what is learned is the bridge, not the answer
    o_idx, o_prompts, _ = other_r2_donors(ctx, F.P, seed + 1)
    o_tok = ctx.facts.tokens(o_prompts)[0] if len(o_idx) else None
    target = torch.cat([F.consistent[:, 0], F.consistent[o_idx, 0]])
    tokens, answer_pos = torch.cat([F.tokens, F.tokens[o_idx]]), torch.cat([F.answer_pos, F.answer_pos[o_idx]])
    for k, h in enumerate(hooks):
        Sv = V.scored(h, apos)
        patch = switch_only(model, Sv, h, apos, Sv.xd - Sv.x, bs)
        rec[h] = {"valid_resid_patch": patch, "valid_switch": {}, "heldout_switch": {}}
        if patch is None or patch < cfg.circuit_patch_min or len(F.P) == 0:
            continue
        bases[h] = {}
        Sh = H.scored(h, apos)
        xd = F.donor[h][:, apos]
        if o_tok is not None:
            xd = torch.cat([xd, residuals(model, o_tok, [h], bs)[h][:, apos]])
        for r in sorted(set(x for x in cfg.ranks if x <= Sv.x.shape[1])):
            mod = train_das_hooked(model, h, tokens, apos, answer_pos, xd, target, r, cfg.das_steps, cfg.das_batch, cfg.das_lr,
                                   seed + 100 * k + r)
            W = mod.basis.detach().cpu()
            bases[h][r] = W
            rec[h]["valid_switch"][r] = switch_only(model, Sv, h, apos, projected(Sv.xd - Sv.x, W), bs)
            rec[h]["heldout_switch"][r] = switch_only(model, Sh, h, apos, projected(Sh.xd - Sh.x, W), bs)
        rec[h]["chosen_rank"] = _chosen_rank(rec[h]["valid_switch"], patch)
    for h in rec:  # json keys
        rec[h]["valid_switch"] = {str(r): v for r, v in rec[h]["valid_switch"].items()}
        rec[h]["heldout_switch"] = {str(r): v for r, v in rec[h]["heldout_switch"].items()}
    return rec, bases


def other_r2_donors(ctx, P: Pairs, seed: int) -> tuple[torch.Tensor, list[tuple[int, int, int]], torch.Tensor]:
    """For each pair whose donor bridge b' has another known relation r2'' with t(b', r2'') != t(b', r2): (the pair rows,
    the donor questions (h', r1', r2''), [n] t(b', r2'')), r2'' drawn seeded."""
    rng = np.random.default_rng(seed)
    tail = ctx.facts.tail
    keep, prompts, other = [], [], []
    for i, ((h2, a2), b2, r2) in enumerate(zip(P.donor.tolist(), P.b2.tolist(), P.r2.tolist())):
        cands = [r for r in ctx.facts.relations.get(b2, []) if r != r2 and tail[(b2, r)] != tail[(b2, r2)]]
        if cands:
            r = cands[int(rng.integers(len(cands)))]
            keep.append(i)
            prompts.append((h2, a2, r))
            other.append(tail[(b2, r)])
    return torch.tensor(keep, dtype=torch.long), prompts, torch.tensor(other, dtype=torch.long)


def other_r2_iia(ctx, H: PairStates, hook: str, apos: int, W: torch.Tensor, seed: int) -> dict:
    """bridge@answer from a donor that asks another relation r2'' (its bridge b', its answer t(b', r2'') != t(b', r2)): the
    high-level model still answers t(b', r2), a unit carrying the donor's answer rather than its bridge would answer
    t(b', r2''). The residual patch, which carries the donor's r2'' too, is the reference that should fail."""
    P = H.P
    idx, prompts, other = other_r2_donors(ctx, P, seed)
    if not len(idx):
        return {"n": 0, "unit": None, "resid_patch": None, "resid_patch_donor_answer": None}
    d_tok, _ = ctx.facts.tokens(prompts)
    xd = residuals(ctx.model, d_tok, [hook], ctx.cfg.batch_size)[hook][:, apos]
    S = Scored(H.tokens[idx], H.answer_pos[idx], H.clean[idx], H.consistent[idx], H.base[hook][idx, apos], xd, P.head[idx])
    cfg, bs = ctx.cfg, ctx.cfg.batch_size
    patch = S.xd - S.x
    donor_answer = Scored(S.tokens, S.answer_pos, S.clean, ctx.facts.answer_ids(other), S.x, S.xd, S.heads)
    return {"n": len(S), "unit": score(ctx.model, S, hook, apos, projected(patch, W), bs, cfg.bootstrap, seed, len(W), "das"),
            "resid_patch": switch_only(ctx.model, S, hook, apos, patch, bs),
            "resid_patch_donor_answer": switch_only(ctx.model, donor_answer, hook, apos, patch, bs),
            "unit_donor_answer": switch_only(ctx.model, donor_answer, hook, apos, projected(patch, W), bs)}


def r2_iia(ctx, r2_pairs, F: PairStates, hook: str, apos: int, g: torch.Generator, seed: int) -> dict | None:
    """IIA of the r2 node (r2_unit at (hook, answer position)) on the held-out pairs of section 1's r2 rows (donor (h, r1, r2'),
    counterfactual t(b, r2')), beside the residual patch there and random subspaces of its rank."""
    if r2_pairs is None or len(r2_pairs[0]) == 0:
        return None
    base, donor = r2_pairs
    W = r2_unit(ctx, F, hook, apos)
    if len(W) == 0:
        return None
    rows = torch.cat([base, donor]).unique()
    X = torch.zeros(len(ctx.q), W.shape[1])
    X[rows] = residuals(ctx.model, ctx.q_tok[rows], [hook], ctx.cfg.batch_size)[hook][:, apos]
    node = node_iia(ctx, pair_scored(ctx, base, donor, X), hook, apos, W, g, seed)
    return node | {"kind": "class-mean span of r2", "n": len(base),
                   "chosen_on": "the bridge@answer unit's hook; the span of r2's class means there over the bridge's fit questions "
                                "(fit by their (h, r1) prefix: a few of these held-out r2 pairs' questions may be among them)"}


def r2_unit(ctx, F: PairStates, hook: str, apos: int) -> torch.Tensor:
    """The span of the fit class means of r2 at (hook, answer position): the r2 node (rank <= relations - 1)."""
    x = F.base[hook][:, apos]
    mu, has = class_means(x, F.P.r2, int(F.P.r2.max()) + 1)
    U, var = principal_directions(mu, has)
    return U[: max(int(has.sum()) - 1, 0)][var[: max(int(has.sum()) - 1, 0)] > 1e-6]


def section1_node(rows) -> dict | None:
    """The smallest DAS unit of section 1 among `rows` (one variable's rows at every hook): at the hook whose residual patch
    switches most fit-valid pairs, of the smallest rank reaching SHARE of that patch on fit-valid pairs (else the largest
    trained), scored on that row's held-out pairs; None when no row has a DAS unit."""
    das_rows = [r for r in rows if r.curves.get("das")]
    if not das_rows:
        return None
    r = max(das_rows, key=lambda r: r.das.get("valid_resid_patch") or 0)
    k = _chosen_rank({int(k): v for k, v in r.das["valid_switch"].items()}, r.das.get("valid_resid_patch"))
    return {"hook": r.hook, "position": r.pairs["pos"], "rank": k, "kind": "DAS subspace", "unit": r.units[f"das_rank{k}"],
            "resid_patch": r.units["resid_patch"], "random": r.units[f"random_rank{k}"], "n": r.n_heldout,
            "chosen_on": "hook by the fit-valid residual patch, rank by the fit-valid switch"}


def input_nodes(v_rows, d_model: int, names=("head", "r1", "r2")) -> dict:
    """The high-level model's inputs (head, r1, r2; three hops add r3) as nodes: each is its token, i.e. the whole residual
    stream at the first hook at its position (`unit`: that interchange from section 1's donors, which differ in that input
    alone), beside the smallest unit that carries it (`smallest_unit`: section1_node)."""
    out = {}
    for name in names:
        rows = [r for r in v_rows if r.pairs.get("name") == name and r.n_heldout > 0]
        if not rows:
            continue
        first = min(rows, key=lambda x: hook_sort_key(x.hook))
        node = {"hook": first.hook, "position": first.pairs["pos"], "rank": d_model, "kind": "input token (the whole stream)",
                "unit": first.units["resid_patch"], "resid_patch": first.units["resid_patch"], "random": first.units.get("random") or {},
                "n": first.n_heldout, "chosen_on": "the input itself: the residual stream at the first hook, at its position"}
        sm = section1_node(rows)
        if sm:
            node["smallest_unit"] = {k: sm[k] for k in ("hook", "rank", "kind", "unit", "resid_patch", "random", "chosen_on")}
        out[name] = node
    return out


def bridge_r1_unit(ctx, rows) -> tuple[str, torch.Tensor] | None:
    """Section 1's unit of the bridge at r1 that the circuits of causal variables start from: the hook with the largest
    fit-valid residual patch among those with DAS subspaces, at the smallest rank reaching 80% of it (or the largest
    rank); None when no hook has one."""
    ok = [r for r in rows if r.das.get("valid_resid_patch") is not None and ctx.bases.get(r.hook)]
    if not ok:
        return None
    r1row = max(ok, key=lambda r: r.das["valid_resid_patch"])
    return r1row.hook, ctx.bases[r1row.hook][r1row.das.get("min_rank_80") or max(ctx.bases[r1row.hook])]


def variable_circuit(ctx, rows, hooks: list[str], v_rows=(), r2_pairs=None) -> tuple[dict, dict[str, torch.Tensor]]:
    """The record of section 2 (see the module docstring): `nodes` (IIA per node), `inputs` (the inputs head, r1, r2 as
    section 1's units: input_nodes), `answer_das` (the bridge@answer search), `faithfulness` (no remainder, with its controls
    and validity); and the units' bases {node name: [r, d]} (what
    RUN/variables/circuit_units.safetensors keeps, so the record can be recomputed independently)."""
    cfg = ctx.cfg
    unit = bridge_r1_unit(ctx, rows)
    if unit is None or len(ctx.pairs[HELD]) == 0:
        return {"status": "no bridge@r1 unit (no hook with a DAS subspace and fit-valid pairs)"}, {}
    apos = int(ctx.q_pos[0])
    if not bool((ctx.q_pos == apos).all()):
        return {"status": "the questions' answer positions differ (an unaligned layout)"}, {}
    seed = cfg.seed + 7
    g = torch.Generator().manual_seed(seed)
    H1, W1 = unit
    n = ctx.model.cfg.n_layers
    # bridge@answer is looked for at every residual hook, SAE or not: the bridge reaches the answer position through
    # attention, so it may first be there in a layer's middle (hook_resid_mid), after the attention, before the MLP
    a_hooks = [h for h in (f"blocks.{L}.hook_resid_{w}" for L in range(n) for w in ("pre", "mid")) if h in ctx.model.hook_dict]
    states = sorted(set(hooks) | set(a_hooks) | {H1}, key=hook_sort_key)
    F, V, H = (PairStates(ctx, ctx.pairs[grp], states) for grp in (FIT, VALID, HELD))
    search, abases = answer_units(ctx, a_hooks, F, V, H, apos, seed)
    out = {"status": "ok", "high_level_model": "head, r1 -> bridge@r1 -> bridge@answer; bridge@answer, r2 -> answer = t(bridge, r2)",
           "answer_position": apos, "r1_position": ctx.pos, "n_heldout": len(H.P), "n_heads": int(H.P.head.unique().numel()),
           "answer_das": search, "patch_min": cfg.circuit_patch_min,
           "chosen_on": "fit-valid pairs (hooks and ranks); DAS trained on fit pairs; every score on held-out pairs"}
    nodes = {"bridge@r1": node_iia(ctx, H.scored(H1, ctx.pos), H1, ctx.pos, W1, g, seed)}
    nodes["bridge@r1"]["chosen_on"] = "section 1's DAS: hook by its fit-valid residual patch at r1, rank by fit-valid switch"
    if abases:
        H2 = max(abases, key=lambda h: search[h]["valid_resid_patch"])
        W2 = abases[H2][search[H2]["chosen_rank"]]
        nodes["bridge@answer"] = node_iia(ctx, H.scored(H2, apos), H2, apos, W2, g, seed)
        nodes["bridge@answer"]["other_r2"] = other_r2_iia(ctx, H, H2, apos, W2, seed)
        r2_node = r2_iia(ctx, r2_pairs, F, H2, apos, g, seed)
        if r2_node:
            nodes["r2@answer"] = r2_node
    else:
        H2, W2 = None, None
    out["nodes"] = nodes
    out["inputs"] = input_nodes(v_rows, int(ctx.model.cfg.d_model))
    bridge_iia = [nodes[k]["unit"]["switch"] for k in ("bridge@r1", "bridge@answer") if k in nodes and nodes[k]["unit"].get("switch") is not None]
    out["iia"] = min(bridge_iia) if len(bridge_iia) == 2 else None
    every = bridge_iia + [n["unit"]["switch"] for k, n in {**nodes, **out["inputs"]}.items()
                          if k not in ("bridge@r1", "bridge@answer") and n["unit"].get("switch") is not None]
    out["iia_every_node"] = min(every) if out["iia"] is not None and len(out["inputs"]) == 3 and "r2@answer" in nodes else None
    units = {"bridge@r1": W1} | ({"bridge@answer": W2} if H2 else {})
    out["faithfulness"] = no_remainder(ctx, F, H, H1, W1, H2, W2, apos, g, units) if H2 else {"status": "no bridge@answer unit"}
    return out, units


def no_remainder(ctx, F: PairStates, H: PairStates, H1: str, W1, H2: str, W2, apos: int, g, units: dict) -> dict:
    """Faithfulness of the circuit with no remainder nodes on the held-out base questions (sae_ooc.causal.ablate); adds
    the r2 units and the means to `units` ({"r2@<hook>", "mean@<hook>"})."""
    cfg, model, bs = ctx.cfg, ctx.model, ctx.cfg.batch_size
    both = sorted({H1, H2}, key=hook_sort_key)  # not a set: its order varies between processes (hash seeds), and so would the file
    means = {h: F.base[h].mean(0) for h in both}
    R2 = {h: r2_unit(ctx, F, h, apos) for h in both}
    units.update({f"r2@{h}": R2[h] for h in R2} | {f"mean@{h}": means[h] for h in means})
    cuts = {"cut_r1": {H1: {ctx.pos: W1, apos: R2[H1]}}, "cut_answer": {H2: {apos: orthonormal(W2, R2[H2])}}}
    if H1 == H2:
        cuts["circuit"] = {H1: {ctx.pos: W1, apos: orthonormal(W2, R2[H2])}}
    else:
        cuts["circuit"] = {**cuts["cut_r1"], **cuts["cut_answer"]}
    d = W1.shape[1]
    eye = torch.eye(d)
    width = H.tokens.shape[1]

    def run(c):
        return ablated_answers(model, H.tokens, H.answer_pos, H.answer.shape[1], c, means, bs)

    res = {"n": len(H.P), "measured_on": "held-out base questions (their prefixes held out of everything fitted)",
           "metric": "kept: the whole answer still right; faithfulness: (ablated - fully ablated) / (clean - fully ablated) of "
                     "the mean logit difference right answer - t(b', r2) (first tokens)",
           "r2_rank": {h: len(R2[h]) for h in R2}, "hooks": {"bridge@r1": H1, "bridge@answer": H2}}
    for name, c in cuts.items():
        full = run({h: {} for h in c})
        ident = run({h: {p: eye for p in range(width)} for h in c})
        unit = faithfulness(run(c), H.clean, full, H.answer, H.consistent, H.P.head, cfg.bootstrap, cfg.seed)
        draws = [faithfulness(run({h: {p: random_basis(d, len(W), g) for p, W in b.items()} for h, b in c.items()}),
                              H.clean, full, H.answer, H.consistent) for _ in range(cfg.random_draws)]
        f_full = faithfulness(full, H.clean, full, H.answer, H.consistent)
        f_id = faithfulness(ident, H.clean, full, H.answer, H.consistent)
        rnd = {k: float(np.mean([x[k] for x in draws])) if all(x[k] is not None for x in draws) else None for k in ("kept", "faithfulness")}
        rnd["kept_range"] = [min(x["kept"] for x in draws), max(x["kept"] for x in draws)]
        valid = bool(f_id["kept"] == 1.0 and f_id["max_abs_logit_change"] < 1e-3 and f_full["kept"] <= 0.1)
        res[name] = {"units": {h: {str(p): len(W) for p, W in b.items()} for h, b in c.items()}, "unit": unit, "random": rnd,
                     "full_mean_ablation": f_full, "identity": f_id, "valid": valid}
    res["validity_check"] = ("valid when keeping the whole space at every position changes no answer (max logit change < 1e-3) "
                             "and the full mean ablation keeps at most 10% of answers")
    return res
