"""Stage `dynamics` (a command, not part of the default pipeline): how the A→C ability forms over training.

Over every checkpoint train saved (log-spaced, plus step 0) and `dynamics.dense_checkpoints` more replayed exactly
(`sae_ooc.models.replay`) across the window in which valid_id accuracy rises: accuracy per split (every example),
held-out-prefix bridge probes per layer at r1 and at the answer position (the layout's: r2 in the toy, `last` in a
natural task) beside shuffled labels, the logit-lens rank of the bridge, the resid_pre patching heatmap's peak, and the ground-truth alignment of small SAEs trained per checkpoint. The
rise is located on valid_id (it chose where to add checkpoints, with more wherever two consecutive checkpoints in the window
are more than `dynamics.dense_max_ratio` steps apart); test_id's rise is only reported beside it. Per checkpoint too,
whether the bridge at r1 is *used*: the interchange switch rate of a DAS subspace fitted on that checkpoint
(`sae_ooc.dynamics.control`, the variables stage's units) beside the residual patch and random subspaces, and at the
answer position, where the second hop reads it (`sae_ooc.dynamics.answer_control`: the variables stage's bridge@answer DAS).
The logit lens and the patching metric read one position's logits, so a multi-token name (bridge, answer) is
represented by its first token, as in the model-level analyses (`make_pairs(first_token=True)`).
Writes RUN/dynamics/: dynamics.json, dynamics.png/.svg and the replayed checkpoints (checkpoints/step_N/).
"""

from __future__ import annotations

import dataclasses
import shutil

import torch
from tqdm.auto import tqdm

from sae_ooc.activations.cache import ActivationCache, heldout_mask
from sae_ooc.circuits.pairs import make_pairs
from sae_ooc.causal.pairs import FIT, HELD
from sae_ooc.causal.variables import prefixes_at
from sae_ooc.dynamics.answer_control import answer_control
from sae_ooc.dynamics.control import USED, bridge_control, control_setup, first_used
from sae_ooc.dynamics.measures import bridge_probes, logit_lens, read_positions, resid_hooks, resid_patching
from sae_ooc.dynamics.result import Answers, Checkpoint, DynamicsResult, Readable
from sae_ooc.dynamics.saes import checkpoint_saes, default_sae_hooks
from sae_ooc.errors import UserError
from sae_ooc.models.evaluate import evaluate_splits
from sae_ooc.models.hooked import load_model, model_hash, saved_config
from sae_ooc.models.replay import accuracy_rise, dense_steps, fill_gaps, replay_checkpoints, saved_checkpoints
from sae_ooc.models.metrics import read_train_log
from sae_ooc.saes.prefixes import position_slices
from sae_ooc.tasks.data import SPLITS, first_tokens, load_task, split_tensors
from sae_ooc.threads import torch_threads
from sae_ooc.viz.dynamics_plots import plot_dynamics

RESULT_FILE = DynamicsResult.FILE
READABLE = 0.5  # a probe "reads" the bridge from the first step its held-out accuracy reaches this (and beats shuffled labels)


def _prompts(ds, vocab, n: int, seed: int):
    """A seeded sample of the test_id two-hop prompts: (tokens [n, layout.n_pos], bridge, answer), the bridge and
    answer as the first token of their names (the toy's: the entities' own tokens)."""
    st = split_tensors(ds["test_id"], vocab)
    two = (st.hop == vocab.layout.question_hop).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(seed)
    idx = two[torch.randperm(len(two), generator=g)[:n]].sort().values
    lay = vocab.layout
    if not bool((st.answer_pos[idx] == lay.answer_pos).all()):  # analysed prompts are aligned (the data stage checks it)
        raise RuntimeError(f"test_id two-hop prompts not read at the layout's answer position {lay.answer_pos}")
    return st.tokens[idx, : lay.n_pos], first_tokens(vocab, st.variable("bridge")[idx]), first_tokens(vocab, st.variable("answer")[idx])


def first_token_note(pairs) -> dict:
    """What the logit lens and patching read when names are several tokens: each name's first token; pairs whose two
    answers share it add 0 to both the clean and the corrupted logit difference (they dilute nothing once normalised)."""
    return {"bridge_and_answer": "first token of each entity name (the logit lens ranks it, the patching metric is the "
                                 "answer's first-token logit minus the corrupted answer's)",
            "n_patch_pairs_same_first_token": int((pairs.answer == pairs.answer_corrupt).sum())}


def first_readable(points: list[Checkpoint], hooks: list[str]) -> Readable | None:
    """The earliest (step, hook, position) at which a bridge probe reads the bridge: held-out accuracy >= READABLE and the
    lower end of its 95% interval above both controls, the shuffled-label probe and the same probe on the step-0
    initialisation (at r2 a held-out prefix may share its (head, r1) with selection prefixes, which a random model encodes)."""
    init = next((p for p in points if p.step == 0), None)
    for p in points:
        for h in hooks:
            for pos, r in p.probes.get(h, {}).items():
                ci = r.heldout_ci95
                at_init = init.probes.get(h, {}).get(pos) if init and p is not init else None
                ctrl = [r.shuffled_acc] + ([at_init.heldout_acc if at_init else None] if init and p is not init else [])
                worst = max((c for c in ctrl if c is not None), default=0.0)
                if r.heldout_acc is not None and r.heldout_acc >= READABLE and ci is not None and ci[0] > worst and p is not init:
                    return Readable(step=p.step, hook=h, position=pos, heldout_acc=r.heldout_acc)
    return None


def _check_inputs(run, sae_hooks: list[str], das_hooks: list[str] = ()) -> None:
    """Refuse at once, not after minutes of replay: a run without the step-0 checkpoint (train.n_checkpoints 0), and
    dynamics.sae_hooks or dynamics.das_hooks the model does not have."""
    if 0 not in saved_checkpoints(run.model_dir):
        raise UserError(f"{run.model_dir / 'checkpoints'} has no step_0 checkpoint (train.n_checkpoints was 0): dynamics needs the "
                        f"log-spaced checkpoints; retrain with `sae-ooc train --force --run {run.root} --set train.n_checkpoints=12`")
    model = load_model(run.model_dir)  # the final model: the same hook names as every checkpoint
    bad = [h for h in sae_hooks if h not in model.hook_dict]
    if bad:
        resid = [h for h in model.hook_dict if "resid" in h]
        raise UserError(f"dynamics.sae_hooks: {', '.join(bad)} not in this {model.cfg.n_layers}-layer model; use hooks such as "
                        f"{', '.join(resid)} (e.g. --set dynamics.sae_hooks=[{resid[-1]}]), or [] for blocks.L.hook_resid_pre, L >= 1")
    bad = [h for h in das_hooks if h not in model.hook_dict]
    if bad:
        resid = [h for h in model.hook_dict if h.endswith(("hook_resid_pre", "hook_resid_post"))]
        raise UserError(f"dynamics.das_hooks: {', '.join(bad)} not in this {model.cfg.n_layers}-layer model; use some of "
                        f"{', '.join(resid)} (e.g. --set dynamics.das_hooks=[{resid[-2]}]), or [] for blocks.L.hook_resid_pre, L >= 1")


def run_dynamics(run, force: bool = False) -> dict:
    dc = run.cfg.dynamics
    ecfg = dataclasses.replace(run.cfg.sae_eval, n_controls=dc.n_controls)
    out_dir = run.dynamics_dir
    ck_root = out_dir / "checkpoints"
    saved = saved_config(run.model_dir)  # the trained model's own: a pretrained source's layers are its checkpoint's
    n_layers = saved.n_layers if saved is not None else run.cfg.model.n_layers
    sae_hooks = list(dc.sae_hooks) or default_sae_hooks(n_layers)
    das_hooks = (list(dc.das_hooks) or default_sae_hooks(n_layers)) if dc.das_rank > 0 else []
    _check_inputs(run, sae_hooks, das_hooks)  # before --force deletes the last results
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    rows = read_train_log(run.model_dir) or []
    rise = {s: accuracy_rise(rows, s, dc.rise_low, dc.rise_high) for s in ("valid_id", "test_id")}
    saved = saved_checkpoints(run.model_dir)
    r = rise["valid_id"]
    extra = dense_steps(r["start"], r["end"], dc.dense_checkpoints, set(saved)) if r["found"] else []
    extra += fill_gaps([*saved, *extra], r["start"], r["end"], dc.dense_max_ratio) if r["found"] else []
    if ck_root.exists():  # replayed steps no longer asked for (another config) go
        for d in ck_root.glob("step_*"):
            if int(d.name.split("_")[1]) not in extra:
                shutil.rmtree(d)
    replayed = replay_checkpoints(run, extra, ck_root) if extra else {}
    ckpts = sorted([(s, d, "saved") for s, d in saved.items()] + [(s, d, "replayed") for s, d in replayed.items()])

    ds, vocab = load_task(run.data_dir)
    tensors = {s: split_tensors(ds[s], vocab) for s in SPLITS}
    cache = ActivationCache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    held = heldout_mask(cache.tokens(), run.cfg.sae.eval_fraction, run.cfg.sae.seed)  # = train-sae's split
    lay = vocab.layout
    positions = read_positions(lay)  # r1 and the answer position, by the layout's names
    slices = [sl for sl in position_slices(cache, held, ecfg.max_select_tokens, ecfg.seed) if sl.pos in positions]
    tokens, bridge, answer = _prompts(ds, vocab, dc.n_prompts, dc.seed)
    pairs = make_pairs(ds, vocab, "test_id", dc.patch_pairs, dc.seed, first_token=True)  # one position's logits: first tokens
    hooks = resid_hooks(n_layers)
    if das_hooks:  # the variables stage's pairs, on the prefixes train-sae holds out at r1
        setup = control_setup(ds, vocab, run.cfg.task, run.cfg.causal, prefixes_at(cache.tokens(), held, lay.index("r1")),
                              dc.das_steps, dc.das_fit_pairs, keep_valid=True)  # fit-valid: bridge@answer's patch gate

    points = []
    with torch_threads(run.cfg.sae.threads):
        for step, d, source in tqdm(ckpts, desc="dynamics: checkpoints", unit="ckpt", dynamic_ncols=True):
            model = load_model(d, device=run.device)
            p = {"step": step, "source": source,
                 "accuracy": {s.removesuffix("_acc"): v for s, v in evaluate_splits(model, tensors, device=run.device).items() if s.endswith("_acc")},
                 "probes": bridge_probes(model, slices, hooks, ecfg, positions),
                 "logit_lens": logit_lens(model, tokens, bridge, answer, positions),
                 "patching": resid_patching(model, pairs, positions, lay.position_names, lay.span("head"))}
            if das_hooks:
                p["control"] = bridge_control(model, setup, das_hooks, dc.das_rank, dc.n_controls)
                p["control_answer"] = answer_control(model, setup, dc.das_rank)
            if dc.sae_training_tokens > 0:
                p["saes"] = checkpoint_saes(run, model, d, out_dir / ".work", sae_hooks, held, slices, cache.n_tokens, ds, vocab, ecfg, positions)
            points.append(Checkpoint.from_json(p))

    composition = rise["test_id"].get("moment")
    readable = first_readable(points, hooks)
    answers = Answers(composition_step_test_id=composition, rise_step_valid_id=r.get("moment"), bridge_first_readable=readable,
                      bridge_readable_before_composition=None if readable is None or composition is None else readable.step < composition)
    if das_hooks:  # used: the DAS interchange switches answers (>= USED of its final rate), not only a probe reads it
        answers.bridge_first_used = first_used(points, das_hooks)
        a_hooks = sorted({h for p in points for h in (p.control_answer or {})})
        answers.bridge_first_used_answer = first_used(points, a_hooks, key="control_answer")
    result = {"rise": rise, "readable_threshold": READABLE, "hooks": hooks, "sae_hooks": sae_hooks if dc.sae_training_tokens > 0 else [],
              "n_checkpoints": {"saved": len(saved), "replayed": len(replayed)}, "answers": answers,
              "n_prompts_logit_lens": int(tokens.shape[0]), "n_patch_pairs": len(pairs), "checkpoints": points}
    if das_hooks:
        P = setup.ctx.pairs
        result["control"] = {"hooks": das_hooks, "position": lay.position_names[lay.index("r1")], "rank": dc.das_rank,
                             "das_steps": dc.das_steps, "n_fit_pairs": len(P[FIT]), "n_heldout_pairs": len(P[HELD]),
                             "n_random": dc.n_controls, "used_threshold": USED,
                             "measured_on": "held-out (h, r1) prefixes' interchange pairs (train-sae's held-out prefixes); "
                                            "DAS fitted per checkpoint on the fit prefixes' pairs",
                             # control_answer: the same pairs, the bridge@answer unit (sae_ooc.dynamics.answer_control)
                             "answer_position": lay.position_names[int(setup.ctx.q_pos[0])] if len(setup.ctx.q_pos) else None,
                             "patch_min": run.cfg.causal.circuit_patch_min}
    if lay.answer_len > 1:  # said only where it matters, so the toy's result is unchanged
        result["targets"] = first_token_note(pairs)
    result = DynamicsResult.from_json(result)
    result.save(out_dir)
    plot_dynamics(result, out_dir / "dynamics")
    return {"n_checkpoints": len(points), "replayed": len(replayed), **answers.to_json()}
