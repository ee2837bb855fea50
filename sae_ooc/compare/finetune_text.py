"""compare.md's section for a pretrained run and its fine-tuning run (sae_ooc.compare.finetune)."""

from __future__ import annotations


def _f(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _tracing(tr: dict) -> list[str]:
    if not tr:
        return []
    first = next(iter(tr.values()))
    last = first["last_position"]
    at = first["roles"][last]
    lines = ["### Causal tracing of atomic facts: where old and new facts are stored", "",
             f"Indirect effect on p(tail) of restoring one state of the clean run after noising the head's embedding (ROME's causal "
             f"tracing: noise {first['noise_scale']} sd of the head embeddings, {first['samples']} draws; MLP and attention outputs "
             f"restored in a window of {first['window']} layers, the residual stream (resid_pre) one layer), per layer at the prompt's "
             f"last position ({at}, where the tail is predicted). ROME edits the layer of the largest MLP effect.", "",
             f"| facts@model | n | p(clean) | p(corrupted) | MLP by layer @{at} | attention by layer @{at} | resid_pre by layer @{at} | "
             f"MLP peak layer @{at} |", "|---|---|---|---|---|---|---|---|"]
    for name, t in tr.items():
        by_layer = lambda k: " ".join(f"{row[last]:.2f}" for row in t[k])  # noqa: E731
        lines.append(f"| {name} | {t['n_prompts']} | {t['p_clean']:.3f} | {t['p_corrupt']:.3f} | {by_layer('mlp')} | "
                     f"{by_layer('attn')} | {by_layer('resid')} | {t['peak_layer']['mlp'][last]} |")
    return lines + [""]


def _probe(bp: dict) -> list[str]:
    if not bp:
        return []
    cases = list(next(iter(bp["acc"].values())))
    lines = ["### The bridge probe of the pretrained model, on new bridges", "",
             f"A linear probe of the bridge entity at position {bp['position']}, fitted on the pretrained model's states of "
             f"{bp['n_fit']} old facts' prefixes (h, r1); scored on {bp['n_heldout_old']} other old prefixes (held out) and the "
             f"{bp['n_new']} new facts' prefixes, in each model. Chance (guessing by the fit labels): old {_f(bp['chance_old'])}, "
             f"new {_f(bp['chance_new'])}.", "",
             "| hook | " + " | ".join(cases) + " |", "|---|" + "---|" * len(cases)]
    for h, acc in bp["acc"].items():
        lines.append(f"| {h} | " + " | ".join(_f(acc[c]) for c in cases) + " |")
    return lines + [""]


def _das(d: dict) -> list[str]:
    head = ["### The pretrained bridge subspace (DAS) on new bridges", ""]
    if "skipped" in d:
        return head + [f"Not measured: {d['skipped']}.", ""]
    lines = head + [f"The pretrained run's DAS subspace of the bridge at r1 (its circuit node bridge@r1: {d['hook']}, position "
                    f"{d['position']}, rank {d['rank']}) interchanged from a donor question with another bridge b'; switch = the "
                    f"answer becomes t(b', r2). Beside the residual patch at that hook and position and random subspaces of the same "
                    f"rank. {d['measured_on']}.", "",
                    "| pairs@model | pairs | bases answered right | DAS subspace switch [95% CI] | residual patch | random subspace (sd) |",
                    "|---|---|---|---|---|---|"]
    for name, c in d["cases"].items():
        u, p, r = c.get("unit") or {}, c.get("resid_patch") or {}, c.get("random") or {}
        ci = u.get("ci95")
        cis = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        lines.append(f"| {name} | {c['n_pairs']} | {c['n_correct_bases']} | {_f(u.get('switch'))}{cis} | {_f(p.get('switch'))} | "
                     f"{_f(r.get('switch'))} ({_f(r.get('sd'))}) |")
    return lines + [""]


def _saes(s: dict) -> list[str]:
    head = ["### The pretrained SAEs on the fine-tuned model's activations", ""]
    if "skipped" in s:
        return head + [f"Not measured: {s['skipped']}.", ""]
    lines = head + [f"Each SAE of the pretrained run encodes both models' activations of the same tokens (every prompt position of "
                    f"{s['n_prompts']['old']} old two-hop questions (test_id) and of {s['n_prompts']['new']} held-out questions over new "
                    "facts). FVU on each model; per feature live on both, the correlation of its activations across the models on the "
                    "same tokens; the mean change of firing rate; and the features whose mean activation changes most.", "",
                    "| hook | prompts | FVU pretrained | FVU fine-tuned | live features (pre / ft) | median corr | share corr < 0.9 | mean abs rate change | most changed features (mean pre -> ft, label) |",
                    "|---|---|---|---|---|---|---|---|---|"]
    for hook, by in s["hooks"].items():
        for k, r in by.items():
            top = "; ".join(f"{t['feature']} ({t['mean_pretrained']:.2f} -> {t['mean_finetuned']:.2f}{', ' + t['label'] if t['label'] else ''})"
                            for t in r["top_changed"][:3])
            lines.append(f"| {hook} | {k} | {r['fvu']['pretrained']:.3f} | {r['fvu']['finetuned']:.3f} | {r['n_live_pretrained']} / "
                         f"{r['n_live_finetuned']} | {_f(r['median_corr'])} | {_f(r['share_corr_below_0_9'], '.2f')} | "
                         f"{r['mean_abs_rate_change']:.4f} | {top} |")
    return lines + [""]


def render_finetune(pairs: dict) -> list[str]:
    lines = []
    for name, res in pairs.items():
        lines += [f"## Fine-tuning: {name}", "",
                  f"`{res['finetuned_run']}` is a fine-tuning run of `{res['pretrained_run']}` ({res['n_new_facts']} new facts; "
                  f"{res['n_old_facts_traced']} old facts sampled for tracing). Every prompt is held out of what was fitted on it.", ""]
        lines += _tracing(res["tracing"]) + _probe(res["bridge_probe"]) + _das(res["das"]) + _saes(res["sae_features"])
    return lines
