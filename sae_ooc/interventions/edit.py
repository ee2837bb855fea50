"""Stage `edit`: edit one atomic fact (h, r1) -> b into b' with ROME's rank-one update of one layer's MLP W_out, at every
layer, and ask whether the model's other beliefs follow (belief consistency), and whether causal tracing predicts where
an edit works (Hase et al. 2023, "Does localization inform editing?").

`edit.n_edits` facts, each edited alone (`sae_ooc.interventions.rome`: the key at `edit.position`, its second moment from
the train prompts' keys, the value by gradient descent), are judged as `sae_ooc.interventions.editing` says; beside them
the same edits with the value's change pointing in a random direction of the same norm (the control), and the rates
before any edit. Causal tracing (`sae_ooc.analyses.tracing.trace_effects`) of each edited fact gives a per-(fact, layer) effect;
its Pearson and Spearman correlations with the edit's rewrite score and propagation carry 95% intervals from resampling
the facts.

On a natural-language task an atomic fact is asked as its first train template (a document the model was trained on;
with the default templates it is the two-hop question's own prefix, so the key is the same vector in both), the key is
the last token of `edit.position`'s span there, the value is optimised on the whole name b' (teacher forced), answers
are judged whole (sae_ooc.interventions.editing), and causal tracing corrupts every token of the head's name.

Outputs (RUN/edit/): edit.json (a `sae_ooc.interventions.edit_result.EditResult`: settings, by layer, controls, localization and correlations), edits.json (every fact's
numbers at every layer), edit_layers.png/.svg, localization.png/.svg.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from sae_ooc.analyses.tracing import trace_effects
from sae_ooc.errors import UserError
from sae_ooc.interventions.edit_result import BeforeEdit, EditLayer, EditResult, EditSettings, Localization
from sae_ooc.interventions.editing import (
    KINDS,
    build_eval_set,
    choose_edits,
    edited_answers,
    per_edit,
    row_outcomes,
)
from sae_ooc.interventions.facts import Facts, atomic_template, mean_ci, share
from sae_ooc.interventions.prompts import with_answers
from sae_ooc.interventions.rome import (
    RankOneEdits,
    key_second_moment,
    mlp_keys,
    optimise_values,
    rank_one,
)
from sae_ooc.io import write_json
from sae_ooc.models.hooked import load_model
from sae_ooc.records import OMIT
from sae_ooc.stats import pearson, spearman
from sae_ooc.tasks.counterfactuals import says
from sae_ooc.tasks.data import load_task, split_tensors
from sae_ooc.threads import torch_threads
from sae_ooc.viz.intervention_plots import plot_edit_layers, plot_localization

EDIT_FILE = EditResult.FILE
EDITS_FILE = "edits.json"


def layer_summary(es, out: dict, ctrl: dict) -> dict:
    """Pooled over every edit's prompts of a kind: shares with Wilson intervals, KL with a normal interval. Propagation
    also apart on the two-hop prompts held out of training (`propagation_heldout`: not a train example, so the new answer
    must be composed) and on trained two-hop facts (`propagation_trained`: the old answer was memorised as a whole)."""
    k = {name: es.kind == i for i, name in enumerate(KINDS)}
    prop = k["propagation"] & out["was_old"]
    r = {"efficacy": share(out["hit"][k["efficacy"]]), "propagation": share(out["hit"][prop]),
         "propagation_all_prompts": share(out["hit"][k["propagation"]]), "reverse": share(out["hit"][k["reverse"]]),
         "specificity_same_head": share(out["kept"][k["same_head"]]), "specificity_atomic": share(out["kept"][k["atomic"]]),
         "specificity_two_hop": share(out["kept"][k["two_hop"]]), "kl_same_head": mean_ci(out["kl"][k["same_head"]]),
         "kl_atomic": mean_ci(out["kl"][k["atomic"]]), "kl_two_hop": mean_ci(out["kl"][k["two_hop"]]),
         "p_new": mean_ci(out["p"][k["efficacy"]])}
    r["random_direction_control"] = {"efficacy": share(ctrl["hit"][k["efficacy"]]), "propagation": share(ctrl["hit"][prop]),
                                     "specificity_atomic": share(ctrl["kept"][k["atomic"]])}
    if es.trained is not None:
        held = prop & ~es.trained  # two-hop facts held out of training: the out-of-context rows
        r.update(propagation_heldout=share(out["hit"][held]), propagation_trained=share(out["hit"][prop & es.trained]))
        r["random_direction_control"]["propagation_heldout"] = share(ctrl["hit"][held])
    return r


def corr_with_ci(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict:
    """Pearson and Spearman over the finite (fact, layer) points of x, y [n_facts, n_layers], with 95% intervals from
    resampling facts (a fact's layers stay together: they are not independent)."""
    ok = np.isfinite(x) & np.isfinite(y)
    rng = np.random.default_rng(seed)
    out = {"n_points": int(ok.sum()), "n_facts": int(ok.any(1).sum())}
    for name, fn in (("pearson", pearson), ("spearman", spearman)):
        val = fn(x[ok], y[ok]) if ok.sum() >= 3 else float("nan")
        boots = []
        for _ in range(n_boot if np.isfinite(val) else 0):
            i = rng.integers(len(x), size=len(x))
            xb, yb, ob = x[i], y[i], ok[i]
            v = fn(xb[ob], yb[ob])
            if np.isfinite(v):
                boots.append(v)
        ci = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if boots else None
        out[name] = {"value": float(val) if np.isfinite(val) else None, "ci95": ci}
    within = [spearman(x[:, j][ok[:, j]], y[:, j][ok[:, j]]) for j in range(x.shape[1]) if ok[:, j].sum() >= 3]
    out["spearman_within_layer"] = [float(v) if np.isfinite(v) else None for v in within]
    return out


def run_edit(run, force: bool = False) -> dict:
    ecfg = run.cfg.edit
    with torch_threads(ecfg.threads):
        return _run_edit(run, ecfg)


def _run_edit(run, ecfg) -> dict:
    ds, vocab = load_task(run.data_dir)
    facts = Facts.from_dataset(ds, vocab, run.cfg.task.family, atomic_template(run.cfg.task))
    model = load_model(run.model_dir, run.device)
    for p in model.parameters():
        p.requires_grad_(False)
    n_layers = model.cfg.n_layers
    missing = [L for L in ecfg.layers if L >= n_layers]
    if missing:  # not dropped quietly: edit.layers [5] on a 2-layer model would edit nothing
        raise UserError(f"edit.layers {missing} not in this model, which has {n_layers} layer(s); use layers 0..{n_layers - 1} "
                        f"(e.g. --set edit.layers=[{n_layers - 1}]), or [] for every layer")
    layers = list(ecfg.layers or range(n_layers))
    edits = choose_edits(facts, model, ecfg.n_edits, ecfg.seed, ecfg.batch_size)
    # the key: the last token of edit.position's span in the edited facts' atomic prompts (the toy's (h, r): 0 or 1)
    key_pos = facts.prompter.atomic_position(ecfg.position, [(e["h"], e["r1"]) for e in edits])
    settings = {"n_edits": len(edits), "n_edits_asked": ecfg.n_edits, "layers": layers, "position": ecfg.position,
                "value_steps": ecfg.value_steps, "value_lr": ecfg.value_lr, "clamp_norm": ecfg.clamp_norm,
                "weight_decay": ecfg.weight_decay, "ridge": ecfg.ridge, "specificity_prompts": ecfg.specificity_prompts,
                "trace_samples": ecfg.trace_samples, "trace_noise": ecfg.trace_noise, "seed": ecfg.seed,
                "family": run.cfg.task.family}
    if facts.prompter.natural:
        settings["prompts"] = (f"atomic facts (and reverse facts) asked as the first train template {facts.prompter.template!r} "
                               f"(key at token {key_pos}, the last of {ecfg.position}); two-hop prompts: the task's two-hop question")
        atomic_len = {len(facts.prompter.render((e["h"], e["r1"]))) for e in edits}
        two_hop_len = {len(facts.prompter.two_hop(e["h"], e["r1"], e["r1"])) for e in edits}
        settings["positions"] = {"key": key_pos, "atomic_answer": max(atomic_len, default=0) - 1, "two_hop_answer": max(two_hop_len, default=0) - 1,
                                 # the key is the same vector in the two-hop question when both prompts agree up to it
                                 "two_hop_shares_key": all(facts.prompter.render((e["h"], e["r1"]))[: key_pos + 1]
                                                           == facts.prompter.two_hop(e["h"], e["r1"], e["r1"])[: key_pos + 1] for e in edits)}
        settings["answers"] = ("whole answers: efficacy / propagation / reverse = the greedy answer is exactly the target's name, "
                               "specificity = the greedy answer unchanged, p_new = the name's probability (teacher forced), "
                               "KL = next-token KL at the answer position (first answer token); causal tracing: p(whole name)")
    settings = EditSettings.from_json(settings)
    if not edits:
        EditResult(settings=settings, by_layer=[], localization=Localization(correlation={}),
                   note="no train atomic fact the model answers correctly").save(run.edit_dir)
        return {"n_edits": 0}
    es = build_eval_set(facts, model, edits, ecfg.specificity_prompts, ecfg.seed, ecfg.batch_size)
    tok, apos = facts.tokens([(e["h"], e["r1"]) for e in edits])
    target = facts.targets([e["b2"] for e in edits])
    tok_new = with_answers(tok, apos, target) if target.dim() == 2 else tok  # teacher forced along b' (multi-token)
    # the keys' second moment: every real position of a seeded sample of train prompts
    tr = split_tensors(ds["train"], vocab)
    g = torch.Generator().manual_seed(ecfg.seed + 1)
    tr = tr.subset(torch.randperm(len(tr), generator=g)[: ecfg.covariance_examples].sort().values)
    valid = torch.arange(tr.tokens.shape[1])[None] <= tr.answer_pos[:, None]
    train_keys = mlp_keys(model, tr.tokens, layers, ecfg.batch_size)
    by_layer, records = [], [[] for _ in edits]
    pre = row_outcomes(es, es.pre)
    gen = torch.Generator().manual_seed(ecfg.seed + 2)
    for L in tqdm(layers, desc="edit", leave=False):
        C = key_second_moment(train_keys[L], valid, ecfg.ridge)
        keys, values = optimise_values(model, tok_new, apos, key_pos, L, target, ecfg.value_steps, ecfg.value_lr, ecfg.clamp_norm,
                                       ecfg.weight_decay)
        W = model.blocks[L].mlp.W_out.detach()
        ed = rank_one(W, C, keys, values, L)
        out = row_outcomes(es, edited_answers(model, es, ed, ecfg.batch_size))
        rnd = torch.randn(ed.d.shape, generator=gen)
        ctrl_ed = RankOneEdits(L, ed.u, rnd * ed.d.norm(dim=-1, keepdim=True) / rnd.norm(dim=-1, keepdim=True))
        ctrl = row_outcomes(es, edited_answers(model, es, ctrl_ed, ecfg.batch_size))
        row = EditLayer.from_json({"layer": L, **layer_summary(es, out, ctrl), "value_change_norm": mean_ci(ed.d.norm(dim=-1)),
                                   "editable": int((ed.u.abs().sum(-1) > 0).sum())})
        by_layer.append(row)
        for e, rec in enumerate(per_edit(es, out, len(edits))):
            records[e].append({"layer": L, **rec})
    k = {name: es.kind == i for i, name in enumerate(KINDS)}
    before = BeforeEdit.from_json({"efficacy": share(pre["hit"][k["efficacy"]]),
                                   "propagation": share(pre["hit"][k["propagation"] & pre["was_old"]]),
                                   "reverse": share(pre["hit"][k["reverse"]]), "two_hop_correct_before": share(pre["was_old"][k["propagation"]])})
    localization = localize(model, facts, edits, tok, apos, layers, key_pos, records, ecfg)
    # a task whose inferred questions never read an atomic fact (the reversal family's one-fact questions) has no propagation
    note = OMIT if k["propagation"].any() else ("propagation not measured: no inferred question of the task reads an edited "
                                                "fact (its questions ask one fact)")
    EditResult(settings=settings, before_any_edit=before, by_layer=by_layer, localization=localization, note=note).save(run.edit_dir)
    name, rel = vocab.entity_name, vocab.relation_name
    write_json(run.edit_dir / EDITS_FILE, [{**e, "h_name": name(e["h"]), "r1_name": rel(e["r1"]), "b_name": name(e["b"]),
                                           "b2_name": name(e["b2"]), "by_layer": r} for e, r in zip(edits, records)])
    cf, _, inferred = says(run.cfg.task.family)
    plot_edit_layers(by_layer, run.edit_dir / "edit_layers", cf, inferred)
    plot_localization(localization.points, localization.correlation, run.edit_dir / "localization")
    return {"n_edits": len(edits), "layers": layers,
            "efficacy": {r.layer: r.efficacy.share for r in by_layer},
            "propagation": {r.layer: r.propagation.share for r in by_layer}}


def localize(model, facts: Facts, edits: list[dict], tok, apos, layers: list[int], key_pos: int, records: list[list[dict]], ecfg) -> Localization:
    """Causal tracing of the edited facts, and its correlation with each edit's success across facts and layers."""
    b = facts.targets([e["b"] for e in edits])
    p, head, rows = facts.prompter, 0, None
    if p.natural:  # noise on every token of the head's name, its std the std of the names' token embeddings
        head = list(p.atomic_with_spans(edits[0]["h"], edits[0]["r1"])[1]["head"])
        rows = sorted({t for e in range(facts.n_entities) for t in p.answer(e)})
    tr = trace_effects(model, with_answers(tok, apos, b) if b.dim() == 2 else tok, b, apos, facts.n_entities, key_pos, layers,
                       ecfg.trace_samples, ecfg.trace_noise, ecfg.seed, head_pos=head, embed_rows=rows)
    def grid(key):
        return np.array([[np.nan if r[key] is None else float(r[key]) for r in rec] for rec in records], dtype=float)

    rewrite, prop, eff = grid("rewrite"), grid("propagation"), grid("efficacy")
    mlp, resid = tr["mlp"].numpy().astype(float), tr["resid"].numpy().astype(float)
    corr = {"rewrite": corr_with_ci(mlp, rewrite, ecfg.bootstrap, ecfg.seed), "propagation": corr_with_ci(mlp, prop, ecfg.bootstrap, ecfg.seed),
            "rewrite_vs_resid_tracing": corr_with_ci(resid, rewrite, ecfg.bootstrap, ecfg.seed),
            "propagation_vs_resid_tracing": corr_with_ci(resid, prop, ecfg.bootstrap, ecfg.seed)}
    top = mlp.argmax(1)  # the layer causal tracing localizes each fact to
    rows = np.arange(len(edits))

    def at(x, j):
        v = x[rows, j]
        return float(np.nanmean(v)) if np.isfinite(v).any() else None

    traced = {"layer_counts": {str(layers[j]): int((top == j).sum()) for j in range(len(layers))},
              "efficacy_at_traced_layer": at(eff, top), "propagation_at_traced_layer": at(prop, top),
              "rewrite_at_traced_layer": at(rewrite, top), "efficacy_mean_over_layers": float(np.nanmean(eff)),
              "propagation_mean_over_layers": float(np.nanmean(prop)) if np.isfinite(prop).any() else None}
    return Localization.from_json({"p_clean": float(tr["p_clean"].mean()), "p_corrupt": float(tr["p_corrupt"].mean()),
            "mean_effect_by_layer": {"mlp": mlp.mean(0).tolist(), "resid": resid.mean(0).tolist()}, "traced_layer": traced,
            "correlation": corr,
            "points": {"layer": np.repeat(np.array(layers)[None], len(edits), 0).ravel().tolist(), "trace": mlp.ravel().tolist(),
                       "rewrite": rewrite.ravel().tolist(), "propagation": [None if not np.isfinite(v) else v for v in prop.ravel()]}})
