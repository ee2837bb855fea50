"""A pretrained run and a fine-tuning run of it (`model.source: run`, issue 24 section 2): where do the facts taught by
fine-tuning go, and does the pretrained model's mechanism read them? Four measurements, each by the toolkit's one
implementation of it, on the two models and the fine-tuning run's splits:

- `tracing`: causal tracing of atomic facts (sae_ooc.analyses.tracing.causal_trace, the analyze stage's): the indirect
  effect per layer and position of restoring the MLP output / attention output / residual stream, for old facts on the
  pretrained model, old facts on the fine-tuned model and the new facts on the fine-tuned model (where ROME would edit
  them: the layer of the largest MLP effect);
- `bridge_probe`: a linear probe of the bridge b at r1 (sae_ooc.causal.isolation.fit_reader) fitted on the pretrained
  model's states of most old prefixes (h, r1 -> b), scored on the rest of them and on the new facts' prefixes, in both
  models (is a new bridge written where and as the old ones are?);
- `das`: the pretrained run's DAS subspace of the bridge at r1 (its variables stage's circuit node `bridge@r1`,
  RUN/variables/circuit_units.safetensors) interchanged on the fine-tuned model (sae_ooc.causal.circuit.node_iia: beside
  the residual patch at that hook and position and random subspaces of its rank): on the pretrained run's own held-out
  pairs (old bridges), and on pairs whose base question's first fact is new (the new_old split: its bridge is a new
  fact's tail) with donors whose first fact is new too. Bases the model answers right, as the variables stage counts;
- `sae_features`: the pretrained run's SAEs encoding both models' activations of the same prompts (old two-hop questions,
  and the held-out questions over new facts): the FVU on each, and per feature the correlation of its activations
  across the two models on the same tokens and the change of its mean activation and firing rate.

Every prompt is held out of what was fitted on it: the DAS subspace and the SAEs saw no new-fact prefix, and the old
pairs are the variables stage's held-out ones; the probe is scored on prefixes it was not fitted on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sae_ooc.errors import UserError
from sae_ooc.tasks.rows import columns
from sae_ooc.typed_yaml import load_yaml

N_OLD_FACTS = 200  # old atomic facts traced (seeded sample): the tracing mean is stable to ~0.01 by then
TOP_FEATURES = 10


def finetune_pairs(runs: list[Path]) -> list[tuple[int, int]]:
    """(i, j) for every run j that is a fine-tuning run of run i (its data/finetune.json names run i as model.run)."""
    from sae_ooc.tasks.finetune_result import FinetuneMeta

    out = []
    for j, r in enumerate(runs):
        try:
            meta = FinetuneMeta.load_if(Path(r) / "data")
        except UserError:  # an unreadable finetune.json: not compared as a fine-tuning run
            meta = None
        src = meta.model_run if meta else None
        out += [(i, j) for i, p in enumerate(runs) if i != j and src and Path(src).resolve() == Path(p).resolve()]
    return out


def compare_finetune(pre: Path, ft: Path, seed: int = 0, batch: int = 1024, samples: int = 5, bootstrap: int = 200,
                     random_draws: int = 5, probe_steps: int = 300) -> dict:
    """The four measurements for the pretrained run `pre` and its fine-tuning run `ft` (a part whose inputs the runs
    lack, e.g. `pre` without its variables stage, is {"skipped": why})."""
    from sae_ooc.interventions.facts import Facts
    from sae_ooc.models.hooked import load_model, with_new_tokens
    from sae_ooc.models.source import new_entity_tokens
    from sae_ooc.tasks.data import load_task, split_tensors

    pre, ft = Path(pre), Path(ft)
    ds, vocab = load_task(ft / "data")
    if "pretrain_atomic" not in ds:
        raise UserError(f"{ft} is not a fine-tuning run (its data has no pretrain_atomic split); pass a run made with model.source: run")
    family = (load_yaml((ft / "config.yaml").read_text()) or {}).get("task", {}).get("family", "twohop")
    facts = Facts.from_dataset(ds, vocab, family)
    models = {"pretrained": load_model(pre / "model"), "finetuned": load_model(ft / "model")}
    added = new_entity_tokens(ft / "data")  # task.finetune.new_entities: the pretrained model in the fine-tuning run's ids
    if added:
        models["pretrained"] = with_new_tokens(models["pretrained"], *added).eval()
    old, new = split_tensors(ds["pretrain_atomic"], vocab), split_tensors(ds["atomic_test"], vocab)
    g = torch.Generator().manual_seed(seed)
    old = old.subset(torch.randperm(len(old), generator=g)[:N_OLD_FACTS].sort().values)
    pos = vocab.layout.span("r1")[-1] if "r1" in vocab.layout.roles else 1
    head = list(vocab.layout.span("head"))
    out = {"pretrained_run": str(pre), "finetuned_run": str(ft), "n_new_facts": len(new), "n_old_facts_traced": len(old),
           "tracing": fact_tracing(models, {"old": old, "new": new}, head, samples, seed)}
    out["bridge_probe"] = bridge_probe(models, split_tensors(ds["pretrain_atomic"], vocab), new, pos, probe_steps, seed)
    try:
        out["das"] = das_transfer(pre, models, facts, ds, vocab, batch, bootstrap, random_draws, seed, added)
    except _Missing as e:
        out["das"] = {"skipped": str(e)}
    try:
        out["sae_features"] = sae_shift(pre, models, ds, vocab, batch)
    except _Missing as e:
        out["sae_features"] = {"skipped": str(e)}
    return out


class _Missing(Exception):
    """A measurement's input is not in the runs: that part is skipped, with this reason."""


# causal tracing ---------------------------------------------------------------------------------------------------
def fact_tracing(models: dict, facts: dict, subject_pos: list[int], samples: int, seed: int) -> dict:
    """causal_trace of each fact set on each model that knows it: old facts on both, new facts on the fine-tuned one.
    Per case the full traces and, per kind, the layer of the largest effect at each position."""
    from sae_ooc.analyses.tracing import KINDS, causal_trace

    out = {}
    for model_name, fact_name in (("pretrained", "old"), ("finetuned", "old"), ("finetuned", "new")):
        st = facts[fact_name]
        if len(st) == 0:
            continue
        tr = causal_trace(models[model_name], st.tokens, st.answer, st.answer_pos, subject_pos, samples=samples, seed=seed)
        # positions after the prompt (an atomic prompt's padding) are left out of the summary
        tr["last_position"] = last = int(st.answer_pos.max())
        tr["peak_layer"] = {k: [int(np.argmax(col)) for col in np.array(tr[k]).T[: last + 1]] for k in KINDS}  # per position
        out[f"{fact_name}@{model_name}"] = tr
    return out


# the bridge probe -------------------------------------------------------------------------------------------------
def bridge_probe(models: dict, old, new, pos: int, steps: int, seed: int, fit_share: float = 0.8) -> dict:
    """Per residual hook (every hook_resid_pre and the last hook_resid_post): a probe of the bridge (the atomic fact's
    tail) at r1 fitted on a seeded `fit_share` of the old facts' prefixes in the pretrained model, scored on the other old
    prefixes and on the new facts' prefixes in each model. `chance`: guessing by the fit labels' frequencies."""
    from sae_ooc.analyses.probes import chance
    from sae_ooc.causal.isolation import fit_reader
    from sae_ooc.interventions.steer import residuals

    L = models["pretrained"].cfg.n_layers
    hooks = [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(old), generator=g)
    n_fit = int(round(fit_share * len(old)))
    fit, held = order[:n_fit], order[n_fit:]
    y_old, y_new = old.answer, new.answer
    states = {m: {"old": residuals(model, old.tokens, hooks, 4096), "new": residuals(model, new.tokens, hooks, 4096)}
              for m, model in models.items()}
    out = {"hooks": hooks, "position": pos, "n_fit": len(fit), "n_heldout_old": len(held), "n_new": len(new),
           "chance_old": chance(y_old[fit], y_old[held]), "chance_new": chance(y_old[fit], y_new), "acc": {}}
    for h in hooks:
        read = fit_reader(states["pretrained"]["old"][h][fit, pos], y_old[fit], steps, seed)
        out["acc"][h] = {f"{facts}@{m}": float((read(states[m][facts][h][rows, pos]) == y[rows]).float().mean()) if len(rows) else None
                         for m in models for facts, rows, y in (("old", held, y_old), ("new", torch.arange(len(new)), y_new))}
    return out


# DAS: the pretrained bridge subspace on the fine-tuned model ------------------------------------------------------
def bridge_node(pre: Path) -> tuple[str, int, torch.Tensor, list[list[int]]]:
    """(hook, position, basis [rank, d], held-out pairs) of the pretrained run's bridge@r1 circuit node."""
    from sae_ooc.causal.circuit import CIRCUIT_UNITS_FILE
    from sae_ooc.causal.result import VariablesResult
    from sae_ooc.io import load_tensors
    from sae_ooc.records import opt

    units = pre / "variables" / CIRCUIT_UNITS_FILE
    res = VariablesResult.load_if(pre / "variables")
    if res is None or not units.is_file():
        raise _Missing(f"{pre} has no variables stage output ({VariablesResult.FILE}, {units.name}); run `sae-ooc variables --run {pre}`")
    circuit = opt(res.circuit)
    node = (opt(circuit.nodes, {}) if circuit else {}).get("bridge@r1")
    W = load_tensors(units).get("bridge@r1")
    if node is None or W is None:
        raise _Missing(f"{pre}'s circuit of causal variables has no bridge@r1 node (status {opt(circuit.status) if circuit else None!r})")
    return node.hook, int(node.position), W.float(), res.heldout_pairs


def pairs_of(rows: list[list[int]]):
    """Pairs from [h, r1, r2, b, b', h', r1'] rows (the variables stage's held-out pairs' format)."""
    from sae_ooc.causal.pairs import Pairs

    t = torch.tensor(rows, dtype=torch.long).reshape(-1, 7)
    return Pairs(t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4], t[:, 5:7], torch.arange(len(t)))


def scored_pairs(model, facts, P, hook: str, pos: int, batch: int):
    """(Scored of the pairs whose base question the model answers right, how many pairs there were)."""
    from sae_ooc.causal.control import Scored
    from sae_ooc.interventions.prompts import matches, read_batched
    from sae_ooc.interventions.steer import residuals

    tok, apos = facts.tokens(P.prompts())
    d_tok, _ = facts.tokens(P.donor_prompts())
    clean = read_batched(model, tok, apos, facts.answer_len, batch)
    truth = facts.answer_ids(torch.tensor([facts.tail[(int(b), int(r2))] for b, r2 in zip(P.b, P.r2)], dtype=torch.long))
    ok = matches(clean.greedy, truth).nonzero().squeeze(1)
    cons = facts.answer_ids(torch.tensor([facts.tail[(int(b2), int(r2))] for b2, r2 in zip(P.b2, P.r2)], dtype=torch.long))
    x = residuals(model, tok[ok], [hook], batch)[hook][:, pos]
    xd = residuals(model, d_tok[ok], [hook], batch)[hook][:, pos]
    return Scored(tok[ok], apos[ok], clean[ok], cons[ok], x, xd, P.head[ok]), len(P)


def new_bridge_pairs(facts, ds, vocab, seed: int, old_donors: set[tuple[int, int]] = frozenset()):
    """One pair per new_old question (its first fact new, so its bridge b is a new fact's tail): b' uniform among the
    bridges that change the answer and have a donor prefix, the donor a new fact's prefix into b' (draw_pairs, every new
    prefix one group); with `old_donors` (old prefixes), donors among those instead (and the pairs left without one dropped)."""
    from sae_ooc.causal.pairs import HELD, draw_pairs
    from sae_ooc.causal.variables import two_hop_questions

    q = two_hop_questions(ds, vocab, ["new_old"])
    new = {(int(h), int(r)) for h, r in zip(*columns(ds["atomic_test"], "head", "r1"))}
    groups = {p: HELD for p in (new | set(old_donors))}
    P = draw_pairs(facts, q, torch.arange(len(q)), groups, HELD, 1, seed)
    if old_donors:
        keep = torch.tensor([(h, r) not in new for h, r in P.donor.tolist()], dtype=torch.bool)
        P = type(P)(*(getattr(P, f)[keep] for f in ("head", "r1", "r2", "b", "b2", "donor", "base_q")))
    return P, q


def das_transfer(pre: Path, models: dict, facts, ds, vocab, batch: int, bootstrap: int, random_draws: int, seed: int,
                 added: tuple[int, int] | None = None) -> dict:
    """node_iia of the pretrained bridge@r1 subspace: old held-out pairs on both models, new-bridge pairs on the fine-tuned
    one. `added`: (first id, count) of new entity tokens, which move the pretrained run's relation ids up."""
    from types import SimpleNamespace

    from sae_ooc.causal.circuit import node_iia

    hook, pos, W, held = bridge_node(pre)
    if added:
        held = [[i + added[1] if i >= added[0] else i for i in row] for row in held]
    P_new, _ = new_bridge_pairs(facts, ds, vocab, seed)
    old_prefixes = {(r[0], r[1]) for r in held} | {(r[5], r[6]) for r in held}  # the variables stage's held-out prefixes
    P_mixed, _ = new_bridge_pairs(facts, ds, vocab, seed, old_prefixes)
    cases = {"old@pretrained": ("pretrained", pairs_of(held)), "old@finetuned": ("finetuned", pairs_of(held)),
             "new@finetuned": ("finetuned", P_new), "new, old donors@finetuned": ("finetuned", P_mixed)}
    out = {"hook": hook, "position": pos, "rank": len(W), "measured_on": "held-out pairs: the pretrained run's variables "
           "stage held-out pairs (old bridges) and pairs of held-out new_old questions (new bridges); bases answered right",
           "cases": {}}
    for name, (m, P) in cases.items():
        S, n_pairs = scored_pairs(models[m], facts, P, hook, pos, batch)
        ctx = SimpleNamespace(model=models[m], cfg=SimpleNamespace(batch_size=batch, bootstrap=bootstrap, random_draws=random_draws))
        g = torch.Generator().manual_seed(seed)
        res = node_iia(ctx, S, hook, pos, W, g, seed) if len(S) else {}
        out["cases"][name] = {"model": m, "n_pairs": n_pairs, "n_correct_bases": len(S), **{k: res.get(k) for k in ("unit", "resid_patch", "random")}}
    return out


# the pretrained SAEs on the fine-tuned model ----------------------------------------------------------------------
def sae_shift(pre: Path, models: dict, ds, vocab, batch: int) -> dict:
    """Per SAE of the pretrained run: FVU on each model's activations, and per feature the change between the models on
    the same tokens (every prompt position of the old test_id questions and of the held-out questions over new facts)."""
    from sae_ooc.interventions.steer import residuals
    from sae_ooc.saes.features import label_text, load_feature_labels
    from sae_ooc.saes.store import load_saes, saved_hooks
    from sae_ooc.tasks.data import split_tensors

    if not saved_hooks(pre / "saes"):
        raise _Missing(f"{pre} has no trained SAEs; run `sae-ooc train-sae --run {pre}`")
    saes = load_saes(pre / "saes")
    labels = load_feature_labels(pre / "sae_eval")
    parts = {"old": split_tensors(ds["test_id"], vocab), "new": split_tensors(ds["test_ood_sys"], vocab)}
    out = {"n_prompts": {k: len(v) for k, v in parts.items()}, "hooks": {}}
    for hook, sae in saes.items():
        rows = {}
        for k, st in parts.items():
            mask = torch.arange(st.tokens.shape[1])[None, :] <= st.answer_pos[:, None]  # the prompt's positions
            rows[k] = {m: residuals(model, st.tokens, [hook], batch)[hook][mask] for m, model in models.items()}
        out["hooks"][hook] = feature_shift(sae, rows, labels.get(hook, {}), label_text)
    return out


@torch.no_grad()
def feature_shift(sae, rows: dict, labels: dict, label_text) -> dict:
    """rows: {prompt set: {"pretrained"/"finetuned": [n, d_in] activations of the same tokens}}."""
    from sae_ooc.compare.match import correlation_matrix
    from sae_ooc.saes.reconstruction import feature_acts

    res = {}
    for k, by in rows.items():
        x = {m: v.float() for m, v in by.items()}
        f = {m: feature_acts(sae, v).float().cpu() for m, v in x.items()}
        fvu = {m: float(((sae.decode(f[m].to(sae.device, sae.dtype)).float().cpu() - x[m]) ** 2).sum()
                        / ((x[m] - x[m].mean(0)) ** 2).sum().clamp(min=1e-12)) for m in x}
        fp, ff = f["pretrained"].numpy(), f["finetuned"].numpy()
        corr, live_p, live_f = correlation_matrix(fp, ff)
        live = live_p & live_f
        r = np.diag(corr)[live]
        mp, mf = fp.mean(0), ff.mean(0)
        fr_p, fr_f = (fp > 0).mean(0), (ff > 0).mean(0)
        top = np.argsort(-np.abs(mf - mp))[:TOP_FEATURES]
        res[k] = {"n_tokens": int(len(fp)), "fvu": fvu, "n_live_pretrained": int(live_p.sum()), "n_live_finetuned": int(live_f.sum()),
                  "n_live_both": int(live.sum()), "median_corr": float(np.median(r)) if len(r) else None,
                  "share_corr_below_0_9": float((r < 0.9).mean()) if len(r) else None,
                  "mean_abs_rate_change": float(np.abs(fr_f - fr_p).mean()),
                  "top_changed": [{"feature": int(i), "mean_pretrained": float(mp[i]), "mean_finetuned": float(mf[i]),
                                   "rate_pretrained": float(fr_p[i]), "rate_finetuned": float(fr_f[i]),
                                   "corr": float(corr[i, i]) if live[i] else None,
                                   "label": label_text(labels[i][0]) if labels.get(i) else None} for i in top]}
    return res
