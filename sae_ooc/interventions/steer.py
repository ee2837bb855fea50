"""Stage `steer`: does the model *use* its bridge features? Make it think the bridge is b' and see whether the two-hop
answer follows: t(b', r2) (consistent), t(b, r2) (unchanged) or something else.

On the held-out prompts (h, r1, r2) of `steer.split` (the model's answer correct when `steer.only_correct`), per hook
with an SAE and position in `steer.positions`: b' is drawn (seeded) among the entities whose answer to r2 differs from
b's and that have bridge=b' features at that hook and position (prompts with none are steered by the baselines only,
and the row says how many the features covered). Interventions (sae_ooc.interventions.steering): feature steering,
feature steering with b' = b (the identity), random features of matched norm (`steer.random_draws` draws), and the
whole residual patched from a donor prompt (h', r1', r2) whose bridge is b' (and, as a control, one whose bridge is b).

Any task: the prompts are the task's two-hop questions rendered from their planted (h, r1, r2) (donors too), a position
`steer.positions` names is the last token of that role in the question (`vocab.layout.index`), labels name entities by
their planted names, and answers are whole answers (a natural task's multi-token names: greedy decoding must give the
name exactly; the consistent answer's log-probability is reported beside its first token's logit).

Outputs (RUN/steer/): steer.json (a `sae_ooc.interventions.steer_result.SteerResult`: settings, one row per hook and
position: every intervention's shares and consistent logit with 95% intervals over prompts; the random control's mean, sd
and range over draws), steer.png/.svg.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from sae_ooc.errors import UserError
from sae_ooc.interventions.facts import Facts, atomic_template
from sae_ooc.interventions.prompts import matches, read_batched
from sae_ooc.interventions.steer_result import RandomControl, SteerMethods, SteerResult, SteerRow, SteerSettings
from sae_ooc.interventions.steering import (
    answers_with_delta,
    bridge_feature_matrix,
    decode_delta,
    matched_norm,
    outcome,
    random_masks,
    steering_masks,
    switched,
    typical_activation,
)
from sae_ooc.models.hooked import load_model
from sae_ooc.saes.features import load_feature_labels
from sae_ooc.saes.store import load_saes, saved_hooks
from sae_ooc.tasks.counterfactuals import says
from sae_ooc.tasks.data import load_task, split_tensors
from sae_ooc.threads import torch_threads
from sae_ooc.viz.intervention_plots import plot_steering

STEER_FILE = SteerResult.FILE
METHODS = ("features", "features_same_bridge", "resid_patch", "resid_patch_same_bridge")


@torch.no_grad()
def residuals(model, tokens: torch.Tensor, hooks: list[str], batch: int) -> dict[str, torch.Tensor]:
    """{hook: [n, width, d]} clean activations."""
    out: dict[str, list] = {h: [] for h in hooks}
    for s in range(0, len(tokens), batch):
        _, cache = model.run_with_cache(tokens[s : s + batch].to(model.cfg.device), names_filter=lambda n: n in hooks)
        for h in hooks:
            out[h].append(cache[h].float().cpu())
    return {h: torch.cat(v) for h, v in out.items()}


def _donor(facts: Facts, h: int, r1: int, b: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """A (h', r1') != (h, r1) whose tail is b, the same r1 preferred (so only the bridge differs)."""
    cands = [c for c in facts.heads_into(b) if c != (h, r1)]
    same = [c for c in cands if c[1] == r1]
    pool = same or cands
    return pool[int(rng.integers(len(pool)))] if pool else None


def steer_prompts(run, facts: Facts, model, scfg) -> dict:
    """The prompts steered: two-hop rows of the split (seeded sample), answered correctly if asked, with a counterfactual.
    Each is rendered from its planted (h, r1, r2) (the split's own question: tests/test_steer.py checks it)."""
    ds, vocab = load_task(run.data_dir)
    st = split_tensors(ds[scfg.split], vocab)
    keep = (st.hop == vocab.layout.question_hop).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(scfg.seed)
    keep = keep[torch.randperm(len(keep), generator=g)[: scfg.max_prompts].sort().values]
    st = st.subset(keep)
    # the question's planted head and relations: (h, r1, r2), and r3 for a three-hop layout (what the bridge goes through)
    lay = vocab.layout  # the relations the question has (a one-fact question: r1 alone)
    rels = [r for r in ("r1", "r2", "r3") if r in lay.variables and (r in lay.roles or r in lay.position_names)]
    head, answer = st.variable("head"), st.variable("answer")
    planted = torch.stack([head] + [st.variable(r) for r in rels], 1)
    tokens, answer_pos = facts.tokens([tuple(int(x) for x in row) for row in planted])
    clean = read_batched(model, tokens, answer_pos, facts.answer_len, scfg.batch_size)
    right = matches(clean.greedy, facts.answer_ids(answer))
    ok = right.clone() if scfg.only_correct else torch.ones(len(st), dtype=torch.bool)
    ok &= torch.tensor([bool(facts.counterfactual_bridges(int(b), int(row[1]), row[2:].tolist())) for b, row in zip(st.bridge, planted)], dtype=torch.bool)
    idx = ok.nonzero().squeeze(1)
    return {"tokens": tokens[idx], "answer_pos": answer_pos[idx], "answer": answer[idx], "bridge": st.bridge[idx],
            "planted": planted[idx], "clean": clean[idx], "n_split": len(st),
            "n_correct": int(right.sum())}


def steer_row(model, sae, hook: str, role: str, pos: int, P: dict, facts: Facts, M: torch.Tensor, typical: torch.Tensor,
              clean_x: torch.Tensor, scfg, row_seed: int) -> SteerRow:
    """Every intervention at one (hook, position) on the prompts P; returns the row's results."""
    rng = np.random.default_rng([scfg.seed, row_seed])
    planted, b = P["planted"], P["bridge"]
    n = len(planted)
    has = M.any(1)
    b2, covered = torch.empty(n, dtype=torch.long), torch.zeros(n, dtype=torch.bool)
    donors, donors_same = [], []
    for i in range(n):
        h, r1, *after = (int(t) for t in planted[i])
        cands = facts.counterfactual_bridges(int(b[i]), r1, after)
        lab = [e for e in cands if has[e]]
        pool = lab or cands
        b2[i] = pool[int(rng.integers(len(pool)))]
        covered[i] = bool(lab)
        donors.append(_donor(facts, h, r1, int(b2[i]), rng))
        donors_same.append(_donor(facts, h, r1, int(b[i]), rng))
    use = covered if covered.any() else torch.ones(n, dtype=torch.bool)
    use &= torch.tensor([d is not None for d in donors])
    idx = use.nonzero().squeeze(1)
    tok, b, b2 = P["tokens"][idx], b[idx], b2[idx]
    consistent_e = torch.tensor([facts.answer_via(int(e), int(t[1]), t[2:].tolist()) for e, t in zip(b2, planted[idx])], dtype=torch.long)
    consistent, original = facts.answer_ids(consistent_e), facts.answer_ids(P["answer"][idx])
    multi = facts.answer_len > 1  # whole answers need the consistent answer's log-probability, teacher forced
    targets = consistent if multi else None
    ans_pos = P["answer_pos"][idx]
    clean = P["clean"][idx]
    if multi:
        clean.logprob = read_batched(model, tok, ans_pos, facts.answer_len, scfg.batch_size, targets=targets).logprob
    x = clean_x[idx]
    f = sae.encode(x.to(sae.W_dec.device)).float()
    typ = typical.to(f.device)

    def run(delta):
        return outcome(answers_with_delta(model, tok, ans_pos, hook, pos, delta, scfg.batch_size, facts.answer_len, targets),
                       consistent, original, clean)

    res, deltas = {}, {}
    if covered.any():
        Md = M.to(f.device)
        off, on = steering_masks(Md, b.to(f.device), b2.to(f.device))
        deltas["features"] = decode_delta(sae, f, switched(f, off, on, typ))
        same_off, same_on = steering_masks(Md, b.to(f.device), b.to(f.device))
        deltas["features_same_bridge"] = decode_delta(sae, f, switched(f, same_off, same_on, typ))
        n_off, n_on = (off & (f > 0)).sum(1), on.sum(1)
    # the residual patch: (h', r1', r2) has bridge b' (b for the control); a missing same-bridge donor keeps the prompt's own
    d_tok = facts.tokens([(*donors[int(i)], *planted[i, 2:].tolist()) for i in idx])[0]
    ds_tok = facts.tokens([(*(donors_same[int(i)] or planted[i, :2].tolist()), *planted[i, 2:].tolist()) for i in idx])[0]
    for name, dt in (("resid_patch", d_tok), ("resid_patch_same_bridge", ds_tok)):
        xd = residuals(model, dt, [hook], scfg.batch_size)[hook][:, pos] if len(dt) else x
        deltas[name] = xd - x
    for name, d in deltas.items():
        res[name] = run(d)
        res[name]["delta_norm"] = float(d.norm(dim=-1).mean()) if len(d) else None
    if covered.any():
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        labelled = M.any(0).to(f.device)
        draws = []
        for _ in range(scfg.random_draws):
            r_off, r_on = random_masks(f, n_off, n_on, labelled, typ, g)
            draws.append(run(matched_norm(decode_delta(sae, f, switched(f, r_off, r_on, typ)), deltas["features"])))
        res["random"] = summarize_draws(draws)
        res["features"]["n_switched_off"] = float(n_off.float().mean())
        res["features"]["n_switched_on"] = float(n_on.float().mean())
    return SteerRow(hook=hook, position=role, n_prompts=len(idx), covered_by_features=int(covered.sum()),
                    n_labelled_bridges=int(has.sum()), n_bridge_features=int(M.any(0).sum()), methods=SteerMethods.from_json(res))


def summarize_draws(draws: list[dict]) -> RandomControl:
    """The random control over its draws: each share's and the consistent logit's mean, sd and range."""
    def spread(v: list) -> dict:
        v = np.array(v, dtype=float)
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)), "min": float(v.min()), "max": float(v.max())}

    out = {"n_draws": len(draws), "draws": draws}
    for key in ("consistent", "unchanged", "other"):
        out[key] = spread([d[key]["share"] for d in draws])
    out["consistent_logit"] = spread([d["consistent_logit"]["mean"] for d in draws])
    return RandomControl.from_json(out)


def run_steer(run, force: bool = False) -> dict:
    scfg = run.cfg.steer
    with torch_threads(scfg.threads):
        return _run_steer(run, scfg)


def _run_steer(run, scfg) -> dict:
    ds, vocab = load_task(run.data_dir)
    facts = Facts.from_dataset(ds, vocab, run.cfg.task.family, atomic_template(run.cfg.task))
    layout = vocab.layout
    missing = [p for p in scfg.positions if p not in layout.roles]
    if missing:
        raise UserError(f"steer.positions: {', '.join(missing)} is not a role of this task's question (roles: "
                        f"{', '.join(layout.roles)}); e.g. --set steer.positions=[r1]")
    available = saved_hooks(run.saes_dir)
    hooks = scfg.hooks or available
    bad = [h for h in hooks if h not in available]
    if bad and available:  # (no SAEs at all: load_saes names train-sae)
        raise UserError(f"steer.hooks: no trained SAE for {', '.join(bad)} in {run.saes_dir}; use some of {', '.join(available)} "
                        f"(e.g. --set steer.hooks=[{available[-1]}]), or [] for every hook with an SAE")
    saes = load_saes(run.saes_dir, run.device, hooks)
    model = load_model(run.model_dir, run.device)
    labels = load_feature_labels(run.sae_eval_dir)
    out_dir = run.steer_dir
    P = steer_prompts(run, facts, model, scfg)
    settings = {"split": scfg.split, "only_correct": scfg.only_correct, "n_split_two_hop": P["n_split"], "n_correct": P["n_correct"],
                "n_prompts": len(P["tokens"]), "random_draws": scfg.random_draws, "seed": scfg.seed, "hooks": hooks,
                "positions": list(scfg.positions)}
    if layout.render != "toy":
        settings["answers"] = ("whole answers: consistent / unchanged = the greedy answer is exactly t(b', r2)'s / t(b, r2)'s "
                               f"name ({facts.answer_len} tokens, greedy decoding); consistent_logit = its first token's logit; "
                               "consistent_logprob = the whole name's log-probability, teacher forced")
        settings["position_index"] = {p: layout.index(p) for p in scfg.positions}
    settings = SteerSettings(**settings)
    if len(P["tokens"]) == 0:
        why = (f"not measured: {facts.high.no_bridge}, and steering moves the bridge" if facts.high.no_bridge else
               f"no question of {scfg.split} to steer (none, none correct, or none with a counterfactual bridge)")
        SteerResult(settings=settings, rows=[], note=why).save(out_dir)
        return {"n_prompts": 0, "rows": 0}
    # typical activations: train prompts (never the steered split), every position the prompt has
    tr = split_tensors(ds["train"], vocab)
    g = torch.Generator().manual_seed(scfg.seed + 1)
    tr = tr.subset(torch.randperm(len(tr), generator=g)[: scfg.typical_examples].sort().values)
    train_x = residuals(model, tr.tokens, hooks, scfg.batch_size)
    clean_x = residuals(model, P["tokens"], hooks, scfg.batch_size)
    names = vocab.planted_names  # eval-sae labels name entities by their planted names (the toy's: tokens)
    entity_of = {names[e]: e for e in range(vocab.n_entities)}
    rows = []
    todo = [(h, p, layout.index(p)) for h in hooks for p in scfg.positions]
    # typical activations only where a train prompt has the position's role (natural tasks: the two-hop questions)
    roles = tr.role_codes()
    for k, (h, role, pos) in enumerate(tqdm(todo, desc="steer", leave=False)):
        sae = saes[h]
        d_sae = int(sae.cfg.d_sae)
        M = bridge_feature_matrix(labels.get(h, {}), layout.position_names[pos], entity_of, vocab.n_entities, d_sae)
        at = (tr.answer_pos >= pos) & (roles[:, pos] == pos)
        with torch.no_grad():
            typ = typical_activation(sae.encode(train_x[h][at, pos].to(sae.W_dec.device)).float())
        rows.append(steer_row(model, sae, h, role, pos, P, facts, M, typ, clean_x[h][:, pos], scfg, k))
    result = SteerResult(settings=settings, rows=rows)
    result.save(out_dir)
    plot_steering(result, out_dir / "steer", says(run.cfg.task.family)[0])
    best = result.best()
    return {"n_prompts": len(P["tokens"]), "rows": len(rows),
            "best": None if best is None else {"hook": best.hook, "position": best.position,
                                               "consistent": best.methods.features.consistent.share}}

