"""configs/small.yaml built for the mechanism tests, and the numbers those tests assert on.

`build_small_run`: data -> train (to the valid_id stop) -> harvest -> train-sae (one SAE, blocks.1.hook_resid_pre) ->
the SAE's feature labels, which is what the steer stage reads. The labels come from eval-sae's own per-SAE function
(`saes.eval_sae.evaluate_sae`, without its task metrics) and eval-sae is recorded as done: the stage's summary
heatmaps cost more than everything else here, and tests/test_sae.py covers the stage itself.

The measurement functions each read one mechanism-level claim off a run with the library's own code (the analyze
stage's probes and patching, the steer stage), so tests/test_mechanism_small.py can assert them on the composing
model and show the same assertions fail on models that do not compose.
"""

from __future__ import annotations

from pathlib import Path

import torch

from circuit_fixtures import mark_stages
from sae_ooc.activations.cache import ActivationCache
from sae_ooc.analyses.common import sample_prompts
from sae_ooc.analyses.analyze import ANALYSES, Context
from sae_ooc.config import load_config
from sae_ooc.io import read_json, write_json
from sae_ooc.models.hooked import load_model, model_hash
from sae_ooc.pipeline import run as run_pipeline
from sae_ooc.pipeline import run_stage
from sae_ooc.rundir import RunDir
from sae_ooc.saes.controls import control_activations
from sae_ooc.saes.eval_sae import evaluate_sae, heldout_from_disk
from sae_ooc.saes.prefixes import position_slices
from sae_ooc.saes.store import eval_metrics_path, load_saes
from sae_ooc.tasks.data import load_task

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "configs" / "small.yaml"


def label_features(run: RunDir) -> None:
    """eval-sae's feature labels (and alignment, reconstruction) for every SAE of the run, without its task metrics
    and summary figures; eval-sae recorded as done so that steer runs on them."""
    cache = ActivationCache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    saes = load_saes(run.saes_dir, device=run.device, hook_names=list(run.cfg.sae.hooks or cache.hooks))
    heldout = heldout_from_disk(run.saes_dir, cache)
    _, vocab = load_task(run.data_dir)
    ecfg = run.cfg.sae_eval
    slices = position_slices(cache, heldout, ecfg.max_select_tokens, ecfg.seed, vocab.layout.positions(ecfg.positions))
    controls = control_activations(run, slices, list(saes), ecfg.n_controls)
    for h, sae in saes.items():
        res = evaluate_sae(sae, cache, h, heldout, slices, ecfg, None, vocab.planted_names, controls)
        write_json(eval_metrics_path(run.sae_eval_dir, h), {"hook_name": h, **res})
    mark_stages(run, ["eval-sae"])


def build_small_run(root: Path, overrides=(), config: Path = SMALL) -> RunDir:
    run = RunDir(root, load_config(config, list(overrides)))
    stages = ["data", "train", "harvest", "train-sae"]
    results = run_pipeline(run, stages=stages)
    assert [r.name for r in results if r.finished] == stages
    label_features(run)
    return run


# --- the mechanism-level numbers -----------------------------------------------------------------------------------


def accuracy(run: RunDir) -> dict:
    """The train stage's final accuracies and majority-answer rates per split, and whether it stopped early on valid_id."""
    m = read_json(run.model_dir / "final_metrics.json")
    return {"acc": m["accuracy"], "majority": m["majority_rate"], "stopped_on": m["stop_split"] if m["stopped_early"] else None}


def _context(run: RunDir) -> Context:
    ds, vocab = load_task(run.data_dir)
    a = run.cfg.analyze
    return Context(run, load_model(run.model_dir, device=run.device), sample_prompts(ds, vocab, a.n_prompts, a.seed), ds, vocab)


def analysis(run: RunDir, name: str, ctx: Context | None = None) -> dict:
    """The analyze stage's result for one analysis (as written to RUN/analyze/<name>.json, without its figure)."""
    torch.manual_seed(run.cfg.analyze.seed)  # as run_analyze seeds each analysis
    return ANALYSES.get(name)(ctx or _context(run))


def bridge_probe_at_r1(run: RunDir) -> dict:
    """{hook: (held-out accuracy, best control's accuracy, above_controls)} of the bridge probe at r1."""
    p = analysis(run, "probes")
    j = p["positions"].index("r1")
    b = p["bridge"]
    return {h: (b["heldout_acc"][i][j], b["control_max_acc"][i][j], b["above_controls"][i][j]) for i, h in enumerate(p["hooks"])}


def patching_at_r1(run: RunDir) -> dict:
    """Activation patching of resid_pre at r1, clean -> corrupted: the clean and corrupted logit differences and the
    share of their gap recovered, per layer."""
    p = analysis(run, "patching")
    j = p["roles"].index("r1")
    return {"clean": p["clean"], "corrupt": p["corrupt"], "recovered": [row[j] for row in p["resid_pre"]["normalised"]]}


def steer_at_r1(run: RunDir, hook: str = "blocks.1.hook_resid_pre") -> dict:
    """The steer stage at (hook, r1): prompts steered and the share answering t(b', r2) under the residual patch from a
    bridge-b' donor, its same-bridge control, and the random-feature control (mean and max over draws)."""
    run_stage(run, "steer")
    s = read_json(run.steer_dir / "steer.json")
    row = next((r for r in s["rows"] if r["hook"] == hook and r["position"] == "r1"), None)
    if row is None:
        return {"n_prompts": 0}
    m = row["methods"]
    out = {"n_prompts": row["n_prompts"], "resid_patch": m["resid_patch"]["consistent"]["share"],
           "resid_patch_same_bridge": m["resid_patch_same_bridge"]["consistent"]["share"]}
    if "random" in m:
        out["random_mean"], out["random_max"] = m["random"]["consistent"]["mean"], m["random"]["consistent"]["max"]
    return out


def variable_at(run: RunDir, name: str, hook: str = "blocks.1.hook_resid_pre", **causal) -> dict:
    """Stage variables' row of planted variable `name` at (hook, its position), measured by the library's own functions
    (sae_ooc.causal.planted) on the run's questions, with the `causal` settings overridden by `causal`: {unit: switch}."""
    import dataclasses
    from types import SimpleNamespace

    from sae_ooc.causal.variables import heldout_rows, two_hop_questions
    from sae_ooc.causal.planted import SPECS, heldout_keys, position_of, prefix_roles, variable_pairs, variable_row
    from sae_ooc.interventions.facts import Facts, atomic_template
    from sae_ooc.interventions.prompts import matches, read_batched
    from sae_ooc.interventions.steer import residuals

    ds, vocab = load_task(run.data_dir)
    cfg = dataclasses.replace(run.cfg.causal, **causal)
    facts = Facts.from_dataset(ds, vocab, run.cfg.task.family, atomic_template(run.cfg.task))
    model = load_model(run.model_dir, device=run.device).eval()
    q = two_hop_questions(ds, vocab, list(dict.fromkeys(cfg.fit_splits + cfg.heldout_splits)))
    q_tok, q_pos = facts.tokens(list(zip(q.head.tolist(), q.r1.tolist(), q.r2.tolist())))
    clean = read_batched(model, q_tok, q_pos, facts.answer_len, cfg.batch_size)
    ok = matches(clean.greedy, facts.answer_ids(q.answer))
    in_fit = torch.tensor([s in cfg.fit_splits for s in q.split])
    in_held = torch.tensor([s in cfg.heldout_splits for s in q.split])
    ctx = SimpleNamespace(model=model, facts=facts, cfg=cfg, q=q, q_tok=q_tok, q_pos=q_pos, clean=clean)
    layout = vocab.layout
    pos = position_of(layout, SPECS[name].role)
    tok, held = heldout_rows(run)
    vp = variable_pairs(ctx, name, layout, heldout_keys(tok, held, pos, prefix_roles(layout, pos)), in_fit & ok, in_held & ok,
                        (in_fit | in_held) & ok)
    sae = load_saes(run.saes_dir, run.device, [hook]).get(hook) if (run.saes_dir / hook).exists() else None
    row = variable_row(ctx, vp, sae, hook, residuals(model, q_tok, [hook], cfg.batch_size)[hook], {}, {}, cfg.seed)
    return {"n": row.n_heldout, **{u: v["switch"] for u, v in row.units.items()}}
