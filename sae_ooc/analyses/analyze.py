"""Stage `analyze`: the classic mechanistic views of the trained model, each as RUN/analyze/<name>.{json,png,svg}.

Every analysis averages over one seeded sample of `analyze.n_prompts` held-out test_id two-hop prompts (with
corrupted partners from `circuits.pairs` for the contrastive ones), except `probes` (held-out prefixes of the
activation cache) and `back-patching` (every valid_id, test_id, test_ood_sys and test_unanswerable failure). `names` runs a subset: the
other analyses' files stay, and any of them computed on another model is removed (the JSON records the model hash).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sae_ooc.analyses.answers import answer_classes
from sae_ooc.analyses.attention import attention
from sae_ooc.analyses.back_patching import POSITIONS, all_patches, back_patch, summarise
from sae_ooc.analyses.common import Sample, sample_prompts
from sae_ooc.analyses.dla import dla
from sae_ooc.analyses.logit_lens import logit_lens
from sae_ooc.analyses.patching import patching
from sae_ooc.analyses.probes import answer_at_head, probe_settings, probes
from sae_ooc.analyses.result import AnalysisResult
from sae_ooc.analyses.tracing import causal_trace
from sae_ooc.activations.cache import ActivationCache, heldout_mask
from sae_ooc.io import read_json
from sae_ooc.models.hooked import load_model, model_hash
from sae_ooc.registry import Registry
from sae_ooc.saes.controls import control_activations, control_models
from sae_ooc.saes.prefixes import position_slices
from sae_ooc.tasks.counterfactuals import high_level
from sae_ooc.tasks.data import load_task, split_tensors
from sae_ooc.threads import torch_threads
from sae_ooc.viz import analysis_plots as plots

ANALYSES: Registry = Registry("analysis")


@dataclass
class Context:
    run: object
    model: object
    sample: Sample
    ds: object
    vocab: object

    @property
    def cfg(self):
        return self.run.cfg.analyze


@ANALYSES.register("attention")
def _attention(c: Context) -> dict:
    a = c.cfg
    return attention(c.model, c.sample.pairs, c.sample.names, a.metric, a.example_prompts, a.mover_min_attention, a.mover_min_effect,
                     a.batch_size, layout=c.sample.layout)


@ANALYSES.register("logit-lens")
def _logit_lens(c: Context) -> dict:
    return logit_lens(c.model, c.sample.pairs, c.sample.layout)


@ANALYSES.register("patching")
def _patching(c: Context) -> dict:
    return {**patching(c.model, c.sample.pairs, c.cfg.metric, c.cfg.batch_size), "roles": list(c.sample.layout.position_names)}


@ANALYSES.register("causal-tracing")
def _tracing(c: Context) -> dict:
    p, a = c.sample.pairs, c.cfg
    return causal_trace(c.model, p.clean, p.answer, p.answer_pos, list(c.sample.layout.span("head")), a.noise_scale, a.noise_samples, a.window,
                        a.seed, a.batch_size, layout=c.sample.layout)


@ANALYSES.register("dla")
def _dla(c: Context) -> dict:
    return dla(c.model, c.sample.pairs, c.sample.layout.answer_pos)


@ANALYSES.register("probes")
def _probes(c: Context) -> dict:
    run, a = c.run, c.cfg
    cache = ActivationCache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    held = heldout_mask(cache.tokens(), run.cfg.sae.eval_fraction, run.cfg.sae.seed)
    slices = position_slices(cache, held, a.probe_max_select, a.seed, c.vocab.layout.positions(run.cfg.sae_eval.positions))
    hooks = list(cache.hooks)
    controls = control_activations(run, slices, hooks, a.n_controls)
    with tqdm(total=len(hooks) * len(slices), desc="analyze: probes", unit="cell", dynamic_ncols=True, leave=False) as bar:
        out = probes(cache.read, hooks, slices, controls, probe_settings(a), progress=lambda: bar.update(1))
    out["split"] = f"held-out prefixes (sae.eval_fraction={run.cfg.sae.eval_fraction}, sae.seed={run.cfg.sae.seed}, as train-sae)"
    out["has_step0"] = bool(controls.get("step0"))
    directions = high_level(run.cfg.task.family, c.vocab).directions
    if directions is not None:  # the family asks whether an answer is carried at the head's position (reversal: a at b)
        if c.vocab.layout.render == "toy":
            out["answer_at_head"] = answer_at_head({"trained": [c.model], "random_model": control_models(run, a.n_controls)["random_model"]},
                                                   c.ds, c.vocab, directions(c.vocab), hooks, a.seed)
        else:
            out["answer_at_head"] = {"note": "not measured: the probe regresses onto answer tokens' unembeddings, one token per "
                                             "entity (the toy's render); a natural task's names are several tokens"}
    return out


@ANALYSES.register("back-patching")
def _back_patching(c: Context) -> dict:
    L = c.model.cfg.n_layers
    lay = c.vocab.layout  # the positions of POSITIONS the question has (the reversal family's: r1, its answer position)
    where = {p: lay.index(p) for p in POSITIONS if p in lay.roles or p in lay.position_names}
    patches = all_patches(L, where)
    res = {}
    for split in ("valid_id", "test_id", "test_ood_sys", "test_unanswerable"):
        t = split_tensors(c.ds[split], c.vocab)
        t = t.subset((t.hop == c.vocab.layout.question_hop).nonzero().squeeze(1))
        res[split] = back_patch(c.model, t.tokens, t.answer, t.answer_pos, patches, c.cfg.batch_size, where)[:2] if len(t) else None
    chosen = None
    if res["valid_id"] is not None and (~res["valid_id"][0]).any():
        base, fixed = res["valid_id"]
        rates = fixed[:, ~base].double().mean(1)
        # the patch fixing most valid_id failures: chosen there, scored on test_id / test_ood_sys / test_unanswerable; none if none fixes any
        chosen = int(rates.argmax()) if float(rates.max()) > 0 else None
    out = {"patches": [{"position": p, "src": s, "dst": d} for p, s, d in patches], "n_layers": L,
           "states": [f"resid_pre {s}" for s in range(L)] + ["final resid_post"],
           "chosen": None if chosen is None else {"index": chosen, "position": patches[chosen][0], "src": patches[chosen][1],
                                                  "dst": patches[chosen][2], "chosen_on": "valid_id failures"}}
    for split, r in res.items():
        out[split] = None if r is None else summarise(*r, patches, chosen)
    return out


@ANALYSES.register("answers")
def _answers(c: Context) -> dict:
    return answer_classes(c.model, c.ds, c.vocab, c.run.cfg.task.family, c.cfg.batch_size)


ANALYSES.check()  # every name of the one list (sae_ooc.registry.NAMES) is registered above


def _stale(run, names: list[str], mhash: str) -> None:
    """Remove the files of analyses not rerun now that were computed on another model."""
    for name in ANALYSES.names():
        path = run.analyze_dir / f"{name}.json"
        if name in names or not path.is_file():
            continue
        try:
            old = read_json(path).get("model_hash")
        except ValueError:
            old = None
        if old != mhash:
            for ext in ("json", "png", "svg"):
                (run.analyze_dir / f"{name}.{ext}").unlink(missing_ok=True)


def run_analyze(run, force: bool = False, names: str = "all") -> dict:
    """Run the analyses `names` ("all" or comma-separated names) into RUN/analyze/."""
    chosen = list(ANALYSES.names()) if names in ("all", "", None) else [n.strip() for n in str(names).split(",") if n.strip()]
    for n in chosen:
        ANALYSES.get(n)
    a = run.cfg.analyze
    ds, vocab = load_task(run.data_dir)
    model = load_model(run.model_dir, device=run.device)
    mhash = model_hash(run.model_dir)
    sample = sample_prompts(ds, vocab, a.n_prompts, a.seed)
    ctx = Context(run, model, sample, ds, vocab)
    run.analyze_dir.mkdir(parents=True, exist_ok=True)
    _stale(run, chosen, mhash)
    seconds, plot_seconds = {}, {}
    for name in tqdm(chosen, desc="analyze", unit="analysis", dynamic_ncols=True):
        t0 = time.perf_counter()
        torch.manual_seed(a.seed)
        with torch_threads(a.threads):
            result = ANALYSES.get(name)(ctx)
        seconds[name] = round(time.perf_counter() - t0, 2)
        result = AnalysisResult.named(name).from_json({"analysis": name, "model_hash": mhash, "prompts": sample.describe(),
                                                       "n_sample": sample.n, "seed": a.seed, "seconds": seconds[name], **result})
        result.save(run.analyze_dir)
        t0 = time.perf_counter()
        plots.PLOTS[name](result, run.analyze_dir / name, f"{run.cfg.name}")
        plot_seconds[name] = round(time.perf_counter() - t0, 2)
    return {"analyses": chosen, "n_prompts": sample.n, "seconds": seconds, "plot_seconds": plot_seconds}

