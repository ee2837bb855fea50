"""Report section 3, continued: the field's standard SAE metrics on the planted variables (eval-sae's
standard_metrics.json per hook: SAEBench's k-sparse probing and absorption, sae_lens.synthetic's matching)."""

from __future__ import annotations

from sae_ooc.records import opt
from sae_ooc.saes.standard_result import StandardMetrics
from sae_ooc.saes.store import hook_sort_key
from sae_ooc.report.doc import Doc, f3

SHOWN = ("bridge@r1", "r1@r1", "r2@r2", "answer@r2")  # the headline rows; every row is in standard_metrics.json


def standard_section(doc: Doc) -> None:
    ev = doc.run.sae_eval_dir
    dirs = sorted((p for p in ev.iterdir() if StandardMetrics.exists(p)), key=lambda p: hook_sort_key(p.name)) if ev.exists() else []
    if not dirs:
        return
    results = [StandardMetrics.load(p) for p in dirs]
    doc.add(
        "**Standard SAE metrics on the planted variables** (eval-sae, `standard_metrics.json` per hook). *k-sparse probing* "
        "follows SAEBench's sparse_probing eval: per value, a balanced one-vs-rest set, the k latents with the largest class-mean "
        "difference, an L2 logistic regression (C = 1); mean test accuracy over values, beside the same probe on the k most "
        "different raw dimensions and on all of them. *Absorption* follows SAEBench's absorption eval with a value in place of a "
        "first letter (probe, k-sparse main latents, absorption fraction and full-absorption rate); SAEBench evaluates it only when "
        "at least 20 values (here: min(20, values)) have a probe F1 > 0.6, else — . *MCC* and per-latent *precision / recall* are "
        "`sae_lens.synthetic`'s calculators with the values' class-mean directions as ground-truth features (decoder MCC) and the "
        "centred value indicators against the latents' activations (activation MCC); precision / recall averaged over the latents "
        "that fire. SAEBench's own entry points cannot run here: they build their data from text datasets with a tokenizer and an "
        "LLM. Fitted on selection prefixes, measured on held-out prefixes.", "",
        "| hook | variable | values | SAE top-1 / 2 / 5 | raw top-1 / 2 / 5 / all | absorption (full) | MCC decoder / activation "
        "| precision / recall (live latents) |",
        "|---|---|---|---|---|---|---|---|",
    )
    for res in results:
        hook = res.hook_name
        for key in SHOWN:
            var, pos = key.split("@")
            r = res.row(var, pos)
            if r is None:
                continue
            sp, ab, m = r.sparse_probing, r.absorption, r.matching
            on = f"{r.n_heldout} held-out prefixes"
            ks = [str(k) for k in res.settings.sparse_probing_k]
            top = " / ".join(f3(sp.sae_top_k.get(k)) for k in ks)
            k1 = sp.sae_top_k.get("1")
            if k1 is not None:
                top = " / ".join([doc.number(f"sparse_probing.{key}.{hook}.sae_top_1", k1, on)] + [f3(sp.sae_top_k.get(k)) for k in ks[1:]])
            raw = " / ".join([f3(sp.llm_top_k.get(k)) for k in ks] + [f3(sp.llm)])
            absorb = "—"
            if opt(ab.mean_absorption_fraction) is not None:
                absorb = (f"{doc.number(f'absorption.{key}.{hook}.mean_absorption_fraction', ab.mean_absorption_fraction, on)} "
                          f"({f3(opt(ab.mean_full_absorption))})")
            # the decoder MCC compares two things fitted on the selection prefixes (the SAE, the class means): in-sample
            mcc = (f"{doc.number(f'mcc.{key}.{hook}.decoder', m.mcc_decoder, 'SAE decoder vs class-mean directions of the selection prefixes', in_sample=True)} / "
                   f"{doc.number(f'mcc.{key}.{hook}.activation', m.mcc_activation, on)}")
            doc.add(f"| `{hook}` | {key} | {sp.n_classes} | {top} | {raw} | {absorb} | {mcc} | "
                    f"{f3(m.precision_live)} / {f3(m.recall_live)} |")
    doc.add("")
