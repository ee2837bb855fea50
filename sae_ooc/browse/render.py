"""A feature's page: plain HTML (numbers written into it, histograms as inline SVG) that needs no script to read.

Every link is relative (to the site's shared CSS/JS, the hook's index, neighbouring features, the circuit pages,
the feature's JSON), so the site opens from disk anywhere it is copied.
"""

from __future__ import annotations

import html

from sae_ooc.saes.dead import DEAD_ON
from sae_ooc.browse.feature_record import Example, FeatureRecord, LogitTable
from sae_ooc.browse.paths import CIRCUITS, CSS, JS, feature_json, feature_page

esc = html.escape
CIRCUIT_TITLES = {"circuit": "aggregate feature circuit", "prompt_circuit": "example pair's pruned circuit",
                  "variable_circuit": "circuit of variable nodes"}


def num(x, spec: str = ".4g") -> str:
    return "–" if x is None else format(x, spec)


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def head(title: str, up: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><link rel="stylesheet" href="{up}{CSS}"></head>\n<body>\n')


def tail(up: str) -> str:
    return f'<script src="{up}{JS}"></script>\n</body></html>\n'


def bars_svg(heights: list[int], lo: float, hi: float, label: str, colour: str = "#4a78b5", w: int = 420, h: int = 120) -> str:
    """A histogram as inline SVG: bars of `heights` spanning [lo, hi], with the axis ends written under it."""
    top = max(heights, default=0) or 1
    n = max(len(heights), 1)
    bw = w / n
    rects = "".join(f'<rect x="{i * bw:.1f}" y="{h - hgt / top * h:.1f}" width="{max(bw - 1, 0.5):.1f}" height="{hgt / top * h:.1f}" fill="{colour}">'
                    f"<title>{hgt}</title></rect>" for i, hgt in enumerate(heights) if hgt)
    return (f'<svg class="hist" viewBox="0 -4 {w} {h + 22}" width="{w}" height="{h + 26}" role="img" aria-label="{esc(label)}">{rects}'
            f'<line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#333"/>'
            f'<text x="0" y="{h + 16}" class="ax">{num(lo)}</text><text x="{w}" y="{h + 16}" text-anchor="end" class="ax">{num(hi)}</text>'
            f'<text x="{w / 2}" y="{h + 16}" text-anchor="middle" class="ax">{esc(label)}</text></svg>')


def prompt_html(ex: Example) -> str:
    vals = ex.values or [None] * len(ex.tokens)
    toks = "".join(f'<span class="tok{" hi" if i == ex.position else ""}" title="activation {num(v)}">{esc(t)}</span>'
                   for i, (t, v) in enumerate(zip(ex.tokens, vals)))
    return f'<span class="prompt">{toks}</span>'


def examples_table(rows: list[Example], empty: str) -> str:
    if not rows:
        return f"<p class='note'>{esc(empty)}</p>"
    body = "".join(f"<tr><td class='n'>{ex.activation:.4g}</td><td>{prompt_html(ex)}</td><td>{esc(ex.answer or '–')}</td>"
                   f"<td class='{'ok' if ex.model_answer == ex.answer else 'bad'}'>{esc(ex.model_answer)} ({ex.model_prob:.2f})</td>"
                   f"<td>{esc(ex.split)}</td></tr>" for ex in rows)
    return ("<table class='ex'><tr><th>activation</th><th>prompt (the highlighted token is where it fires)</th><th>true answer</th>"
            f"<th>model's answer (p)</th><th>split</th></tr>{body}</table>")


def _logits(lg: LogitTable | None) -> str:
    if lg is None:
        return "<p class='note'>This hook has no linear route to the logits.</p>"
    rows = "".join(f"<tr><td>{esc(a)}</td><td class='n pos'>{b:+.3f}</td><td>{esc(c)}</td><td class='n neg'>{d:+.3f}</td></tr>"
                   for a, b, c, d in zip(lg.pos_str, lg.pos_values, lg.neg_str, lg.neg_values))
    w = (lg.hist_values[1] - lg.hist_values[0]) if len(lg.hist_values) > 1 else 0.0
    lo, hi = lg.hist_values[0] - w / 2, lg.hist_values[-1] + w / 2
    return (f"<div class='row'><table class='lg'><tr><th>promoted</th><th>logit</th><th>suppressed</th><th>logit</th></tr>{rows}</table>"
            f"{bars_svg(lg.hist_heights, lo, hi, 'effect on every token of the vocabulary', '#888')}</div>")


def _ground_truth(rec: FeatureRecord) -> str:
    out = []
    if rec.labels:
        out.append("<ul>" + "".join(f"<li><b>{esc(lab.text)}</b>: held-out AUROC {num(lab.auroc, '.3f')}, precision "
                                    f"{num(lab.precision, '.3f')}</li>" for lab in rec.labels) + "</ul>")
    else:
        out.append("<p class='note'>No label: eval-sae found no value of a task variable that this feature detects "
                   "(held-out AUROC and precision above its thresholds).</p>")
    if rec.alignment:
        rows = "".join(f"<tr><td>{esc(a.variable)}</td><td>{esc(a.position)}</td><td>{esc(str(a.value))}</td><td class='n'>{num(a.auroc, '.3f')}</td>"
                       f"<td class='n'>{num(a.auroc_probe, '.3f')}</td><td class='n'>{num(a.shuffled_mean_auroc, '.3f')}</td></tr>"
                       for a in rec.alignment)
        out.append("<p>Values of which eval-sae chose this feature (on selection prefixes) as the best single detector, scored on held-out "
                   "prefixes:</p><table><tr><th>variable</th><th>position</th><th>value</th><th>feature AUROC</th><th>probe AUROC</th>"
                   f"<th>shuffled-label search (control, mean over values)</th></tr>{rows}</table>")
    return "".join(out)


def _circuits(rec: FeatureRecord, up: str, available: set[str]) -> str:
    items = []
    for a in rec.circuits:
        name = CIRCUIT_TITLES.get(a.circuit, a.circuit)
        where = f'<a href="{up}{CIRCUITS}/{a.circuit}.html">{esc(name)}</a>' if a.circuit in available else esc(name)
        hidden = "" if a.drawn else " (not drawn: left out by the export options max_nodes or min_abs_effect)"
        items.append(f"<li>{where}: node <code>{esc(a.id)}</code> at {esc(str(a.role))}, effect {num(a.effect)}"
                     f"{', rank ' + str(a.rank) if a.rank else ''}{hidden}</li>")
    for g in rec.variable_nodes:
        link = f'<a href="{up}{CIRCUITS}/variable_circuit.html">circuit of variable nodes</a>' if "variable_circuit" in available else "circuit of variable nodes"
        items.append(f"<li>{link}: member of the node <code>{esc(g)}</code></li>")
    return "<ul>" + "".join(items) + "</ul>" if items else "<p class='note'>In none of the run's circuits.</p>"


def feature_html(rec: FeatureRecord, d_sae: int, available: set[str]) -> str:
    """The page of one feature; `available`: the circuit pages the site has."""
    hook, f = rec.hook, rec.feature
    up = "../"
    nav = [f'<a href="{up}index.html">all hooks</a>', '<a href="index.html">index of this hook</a>']
    if f > 0:
        nav.append(f'<a href="{up}{feature_page(hook, f - 1)}" rel="prev">← #{f - 1}</a>')
    if f + 1 < d_sae:
        nav.append(f'<a href="{up}{feature_page(hook, f + 1)}" rel="next">#{f + 1} →</a>')
    nav.append(f'<a href="{up}{feature_json(hook, f)}">JSON</a>')
    label = rec.labels[0].text if rec.labels else "no label"
    state = f"dead ({DEAD_ON})" if rec.dead else ("dense" if rec.dense else "")
    h = rec.heldout_histogram
    eff = rec.node_effects
    eff_html = ("<p class='note'>Attribution has not run.</p>" if eff is None else
                f"<p>Mean effect on the {esc(str(rec.effects_metric))} ({esc(str(rec.effects_method))} patching) of this feature at each position: "
                + ", ".join(f"{esc(e.position)} <b>{num(e.effect)}</b>" for e in eff) + "</p>")
    pos_rows = "".join(f"<tr><td>{esc(p.position)}</td><td class='n'>{p.n_tokens}</td><td class='n'>{pct(p.frac_nonzero)}</td>"
                       f"<td class='n'>{num(p.mean_activation)}</td></tr>" for p in rec.by_position)
    return "".join([
        head(f"{hook} #{f}: {label}", up), f"<nav>{' · '.join(nav)}</nav>\n",
        f"<h1>{esc(hook)} · feature {f}</h1><p class='lab'>{esc(label)} <span class='state'>{esc(state)}</span></p>\n",
        "<table class='stats' id='stats'>",
        f"<tr><th>density (frac_nonzero)</th><td id='density'>{rec.frac_nonzero:.6f}</td><td>active on {rec.n_active} of the {rec.n_tokens} "
        "cached tokens (every split and position; a repeated prompt counts each time)</td></tr>",
        f"<tr><th>mean activation</th><td id='mean'>{rec.mean_activation:.6f}</td><td>over the tokens where it is active "
        f"(over every token: {rec.mean_activation_all_tokens:.6f})</td></tr>",
        f"<tr><th>max activation</th><td id='max'>{rec.max_activation:.6f}</td><td>over the cache</td></tr></table>\n",
        f"<h2>By position</h2><table><tr><th>position</th><th>tokens</th><th>density</th><th>mean activation (active)</th></tr>{pos_rows}</table>\n",
        f"<h2>Activation histogram, held-out prefixes</h2><p>Active on {h.n_active} of the {h.n_prefixes} distinct prefixes the SAE was "
        "not trained on (one row per prefix); the bars count its nonzero activations.</p>",
        bars_svg(h.bar_heights, 0.0, h.max, "activation"), "\n",
        "<h2>Top activations</h2><p class='note'>Largest activations over distinct prefixes of the cache (a prefix fixes the activation "
        "at its last token, so each shows once, with one prompt that contains it).</p>",
        examples_table(rec.top_activations, "Never active."), "\n",
        "<h2>Random sample of its activations</h2>", examples_table(rec.random_activations, "Never active."), "\n",
        "<h2>Logit effects</h2><p class='note'>Decoder direction carried to the residual stream, centred and scaled like the final "
        "LayerNorm on average, times W_U: the logit change per unit activation along the direct path.</p>", _logits(rec.logits), "\n",
        "<h2>Ground truth (eval-sae, held-out prefixes)</h2>", _ground_truth(rec), "\n",
        "<h2>Node effect (attribution)</h2>", eff_html, "\n",
        "<h2>Circuits</h2>", _circuits(rec, up, available), "\n",
        tail(up)])
