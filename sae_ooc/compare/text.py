"""compare.md: the headline table, whether the mechanism is the same, SAE feature matching, the figures."""

from __future__ import annotations

from sae_ooc.compare.finetune_text import render_finetune
from sae_ooc.compare.table import markdown


def _yes(v) -> str:
    return {True: "same in every run", False: "**differs between runs**", None: "not measured in every run"}[v]


def _mechanism(m: dict, labels: list[str]) -> list[str]:
    lines = ["## Is the mechanism the same?", "",
             "| run | bridge carried (best held-out probe) | bridge used (resid_pre patching peak, head left out) | variable circuit |",
             "|---|---|---|---|"]
    for lab, c, u, s in zip(labels, m["bridge_carried"], m["bridge_used"], m["variable_circuit"]):
        cs = f"{c['hook']} @ {c['position']} ({c['acc']:.2f})" if c else "n/a"
        us = f"layer {u['layer']} @ {u['position']} ({u['effect']:.2f})" if u else "n/a"
        ss = f"{len(s['nodes'])} nodes, {len(s['edges'])} edges: {', '.join(s['nodes'])}" if s else "n/a"
        lines.append(f"| {lab} | {cs} | {us} | {ss} |")
    lines += ["", f"- Where the bridge is carried: {_yes(m['bridge_carried_same'])}.",
              f"- Where it is used: {_yes(m['bridge_used_same'])}.",
              f"- The variable circuit (nodes and edges): {_yes(m['variable_circuit_same'])}"
              + (f"; node Jaccard per pair: {', '.join(f'{k} {v:.2f}' for k, v in m['variable_circuit_node_jaccard'].items() if v is not None)}."
                 if m["variable_circuit_node_jaccard"] else "."), ""]
    return lines


def _saes(saes: dict) -> list[str]:
    if not saes:
        return ["## SAE features matched across runs", "", "Not computed (--no-sae-match).", ""]
    lines = ["## SAE features matched across runs", "",
             "Decoder cosine: one-to-one matching (Hungarian, scipy's linear_sum_assignment) of decoder directions, beside a "
             "random Gaussian decoder of the same shape. Directions are in each model's own residual basis: across separately "
             "trained models the activation correlation (each run's SAE on its own model, the same token rows) is the measure.", "",
             "| pair | hook | d_sae | decoder mean cos (random) | frac cos > 0.9 | activation corr: matched mean (rows shuffled) | decoder-matched mean |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    for pair, res in saes.items():
        notes.append(f"- {pair}: activation correlation {res['activation_correlation']}.")
        for hook, h in res["hooks"].items():
            a = h.get("activations", {})
            f = lambda k: f"{a[k]:.3f}" if k in a else "n/a"  # noqa: E731
            d = h["decoder"]
            dec = (f"{d['mean_cos']:.3f} ({h['decoder_random_baseline']:.3f}) | {d['frac_above_0.9']:.2f}" if isinstance(d, dict)
                   else f"{d} | n/a")
            lines.append(f"| {pair} | {hook} | {h['d_sae'][0]}/{h['d_sae'][1]} | {dec} | {f('mean_corr')} ({f('shuffled_rows_mean_corr')}) "
                         f"| {f('decoder_matched_mean_corr')} |")
    return lines + [""] + notes + [""]


def render(result: dict) -> str:
    labels = result["labels"]
    lines = [f"# Comparison of {len(labels)} runs", ""]
    lines += [f"- {lab}: `{run}`" for lab, run in zip(labels, result["runs"])] + ["", "## Headline numbers", ""]
    lines += markdown(result["table"], labels) + [""]
    lines += _mechanism(result["mechanism"], labels)
    lines += _saes(result["sae_matching"])
    lines += render_finetune(result.get("finetune") or {})
    lines += ["## Figures", ""] + [f"![{k}]({k}.png)" for k in result["figures"]] + [""]
    return "\n".join(lines)
