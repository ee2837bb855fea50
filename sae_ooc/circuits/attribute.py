"""Stage `attribute`: rank every SAE node by its patching effect on the A→C answer.

Clean/corrupted prompt pairs (`sae_ooc.circuits.pairs`) differ in the head entity, so in the bridge and the
answer (t2 vs t2'). The metric is logit(t2) - logit(t2') at the answer position (or log p(t2), or
cross-entropy). The model runs with every SAE spliced in with its error term (`sae_ooc.circuits.spliced`), so
every feature and every error term at every (hook, position) is a node, and its effect is
m(clean run with that node set to its corrupted value) - m(clean run), by `attribution.method` (one of the
methods registered in `sae_ooc.circuits.methods`).

Outputs (RUN/attribution/):
  node_effects.safetensors, node_effects.json  the effects (`sae_ooc.circuits.effects`).
  validation.json (+ validation.png/.svg) with validate=True: every other method against exact patching, per
                                           pair and never on the nodes it patched exactly itself, with its
                                           speed against batched exact patching timed alongside
                                           (`sae_ooc.circuits.validation`).
"""

from __future__ import annotations

import time

from sae_ooc.circuits.attribute_result import AttributionValidation, NodeEffectsSummary
from sae_ooc.circuits.effects import (
    EFFECTS_FILE,
    NodeEffects,
    effects_summary,
    save_node_effects,
)
from sae_ooc.circuits.methods import node_effects, pair_metrics
from sae_ooc.circuits.pairs import make_pairs
from sae_ooc.circuits.spliced import load_spliced
from sae_ooc.circuits.validation import VALIDATION_FILE, validate_methods
from sae_ooc.tasks.data import load_task
from sae_ooc.threads import torch_threads
from sae_ooc.viz.circuit_plots import plot_validation

VALIDATION_FILES = (VALIDATION_FILE, "validation.png", "validation.svg")


def run_attribute(run, force: bool = False, validate: bool = True) -> dict:
    """Stage `attribute`: node effects of every node on `attribution.n_pairs` pairs, and with `validate` the
    approximations checked against exact patching on the first `attribution.validate_pairs` of them."""
    with torch_threads(run.cfg.attribution.threads):
        return _attribute(run, validate)


def _attribute(run, validate: bool) -> dict:
    a = run.cfg.attribution
    out = run.attribution_dir
    sp = load_spliced(run)
    ds, vocab = load_task(run.data_dir)
    pairs = make_pairs(ds, vocab, a.split, a.n_pairs, a.seed, sp.model, a.only_correct, sp.device)
    t0 = time.perf_counter()
    per_prompt = node_effects(sp, pairs, a.method, a.metric, a.batch_size, a.ig_steps, a.exact_batch_size, verify_top=a.verify_top)
    seconds = time.perf_counter() - t0
    m_clean, m_corrupt = pair_metrics(sp, pairs, a.metric)
    ne = NodeEffects(sp.hooks, sp.d_sae, a.method, a.metric, per_prompt, pairs, m_clean, m_corrupt, sp.position_names)
    save_node_effects(out / EFFECTS_FILE, ne)
    summary = NodeEffectsSummary.from_json({**effects_summary(ne, vocab, a.top_json), "seconds": seconds})
    summary.save(out)
    info = {"method": a.method, "n_pairs": len(pairs), "seconds": round(seconds, 3),
            "metric_clean": summary.metric_clean_mean, "total_effect": summary.total_effect_mean}
    if validate:
        sample = pairs.subset(slice(0, a.validate_pairs))
        report, flat = validate_methods(sp, sample, a.metric, a.ig_steps, a.exact_batch_size, a.batch_size, a.trust_spearman,
                                        a.trust_recall, verify_top=a.verify_top)
        report = AttributionValidation.from_json(report)
        plot_validation(flat, report, out / "validation")
        report.save(out)
        info["validation"] = {m: {k: getattr(r, k) for k in ("recall_top50", "spearman_not_exact", "trusted", "speedup_vs_batched_exact")}
                              for m, r in report.methods.items()}
    else:  # what the stage leaves must match how it ran: no validation from an earlier run
        for name in VALIDATION_FILES:
            (out / name).unlink(missing_ok=True)
    return info
