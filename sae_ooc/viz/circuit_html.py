"""circuit.html: one self-contained page (no network access: inline SVG, CSS and JS) with the circuit diagram.

The SVG draws the same layered layout as the PNG (sae_ooc.viz.diagram.plan_diagram), laid out for an 11 px
font within 1340 px, and scales down with the window (width 100%, viewBox), so a 1400 px window needs no
horizontal scroll. Hovering a node shows its top activations and promoted answers. A one-prompt circuit's page
names the prompt and its answer, and its effects are that prompt's, not means.
"""

from __future__ import annotations

import html
import json

from sae_ooc.viz.diagram import (
    LINESPACING,
    METRIC,
    NEG,
    POS,
    edge_width,
    fill,
    node_style,
    plan_diagram,
)
from sae_ooc.viz.node_labels import effect_name, heading, plural, score_text, sink_id

FONT_PX = 11.0
MAX_WIDTH_PX = 1340.0  # a 1400 px window less the page margins and a scroll bar


def _json_for_script(obj) -> str:
    """JSON that cannot end a <script> element or open markup inside it."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _svg(circuit: dict, nodes: list[dict], edges: list[dict], links: dict[str, str] | None = None, deferred: bool = False) -> str:
    plan = plan_diagram(circuit, nodes, edges, FONT_PX, MAX_WIDTH_PX)
    lay, fs, esc = plan.layout, FONT_PX, html.escape
    m = fs / 2
    ox, oy = m + plan.row_label_width + fs, 2 * fs  # node area origin; column headings below it
    W, H = ox + lay.width + m, lay.height + oy + m

    def Y(y: float) -> float:  # the layout's y grows upward, SVG's downward
        return H - oy - y

    emax = max((abs(n["effect"]) for n in nodes), default=0.0)
    wmax = max((abs(e["weight"]) for e in edges), default=0.0)
    svg = [f'<svg id="circuit" viewBox="0 0 {W:.0f} {H:.0f}" style="max-width: {W:.0f}px" role="img" aria-label="circuit diagram">']
    for (c0, c1), role in zip(lay.cols, circuit["metadata"]["positions"]):
        svg.append(f'<rect x="{ox + c0 - fs / 2:.1f}" y="{Y(lay.height):.1f}" width="{c1 - c0 + fs:.1f}" height="{lay.height + 0.3 * fs:.1f}" fill="#f3f3f3"/>'
                   f'<text x="{ox + (c0 + c1) / 2:.1f}" y="{H - m:.1f}" text-anchor="middle" class="axis" font-weight="bold">{esc(role)}</text>')
    for (r0, r1), name in zip(lay.rows, plan.row_names):
        svg.append(f'<text x="{ox - fs:.1f}" y="{Y((r0 + r1) / 2):.1f}" text-anchor="end" dominant-baseline="central" class="axis">{esc(name)}</text>')
    box = {i: (ox + b.x, Y(b.top), b.w, b.h) for i, b in lay.boxes.items()}  # SVG: x, top, w, h
    for e in sorted(edges, key=lambda e: abs(e["weight"])):
        (sx, sy, sw, _), (tx, ty, tw, th) = box[e["source"]], box[e["target"]]
        svg.append(f'<line x1="{sx + sw / 2:.1f}" y1="{sy:.1f}" x2="{tx + tw / 2:.1f}" y2="{ty + th:.1f}" stroke="{NEG if e["weight"] < 0 else POS}" '
                   f'stroke-opacity="0.55" stroke-width="{edge_width(e["weight"], wmax):.2f}"><title>{esc(e["source"])} → {esc(e["target"])}: '
                   f'{e["weight"]:.4g}</title></line>')
    lh = fs * LINESPACING
    for n in nodes:
        x, y, w, h = box[n["id"]]
        ls, lw, rounded, _ = node_style(n["type"])
        dash = {"--": ' stroke-dasharray="4 3"', ":": ' stroke-dasharray="1.5 2"', "-.": ' stroke-dasharray="5 2 1.5 2"'}.get(ls, "")
        lines = plan.text[n["id"]].split("\n")
        spans = "".join(f'<tspan x="{x + w / 2:.1f}" dy="{0 if k == 0 else lh:.1f}">{esc(s)}</tspan>' for k, s in enumerate(lines))
        href = (links or {}).get(n["id"])
        # a deferred link (data-href) gets its href only once the page's script has found the feature browser
        svg.append((f'<a {"data-href" if deferred else "href"}="{esc(href)}">' if href else "") +
                   f'<g class="node" data-id="{esc(n["id"])}"><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{fs / 2 if rounded else 0:.1f}" '
                   f'fill="{fill(n["effect"], emax)}" stroke="black" stroke-width="{lw}"'
                   f'{dash}/>'
                   f'<text y="{y + h / 2 - (len(lines) - 1) * lh / 2:.1f}" text-anchor="middle" dominant-baseline="central" class="lab">{spans}</text></g>'
                   + ("</a>" if href else ""))
    sx, sy, d, _ = box[sink_id(circuit)]
    sl = lay.sink_label
    svg.append(f'<g class="node" data-id="{sink_id(circuit)}"><polygon points="{sx + d / 2:.1f},{sy:.1f} {sx + d:.1f},{sy + d / 2:.1f} {sx + d / 2:.1f},{sy + d:.1f} '
               f'{sx:.1f},{sy + d / 2:.1f}" fill="{METRIC}" stroke="black"/>'
               f'<text x="{ox + sl.x:.1f}" y="{Y(sl.cy):.1f}" dominant-baseline="central" class="lab">{esc(plan.sink_text)}</text></g>')
    svg.append("</svg>")
    return "\n".join(svg)


def _legend(wmax: float, types: list[str] = ()) -> str:
    """The legend as HTML (CSS swatches, so the page's only SVG is the diagram)."""
    def box(style: str) -> str:
        return f'<i class="sw" style="{style}"></i>'

    def line(color: str, width: float) -> str:
        return box(f"height: {width:.1f}px; border: none; background: {color}")

    items = [(box(f"background: {fill(-1, 2)}; border-radius: 4px"), "node effect &lt; 0: patching it lowers the metric (carries the clean answer)"),
             (box(f"background: {fill(1, 2)}; border-radius: 4px"), "node effect &gt; 0: raises it; darker: larger |effect|"),
             (box("border-style: dashed"), "SAE error node (dashed square)")]
    for t in sorted(set(types) - {"feature", "error"}):  # each its own border, as drawn
        ls, lw, rounded, words = node_style(t)
        css = {"--": "dashed", ":": "dotted"}.get(ls, "solid")
        items.append((box(f"border: {lw:g}px {css} black; border-radius: {4 if rounded else 0}px"), f"{t} node ({words})"))
    items += [(box(f"width: 10px; height: 10px; background: {METRIC}; transform: rotate(45deg)"), "metric"),
              (line(NEG, 3), "edge weight &lt; 0: patching the edge lowers the metric"), (line(POS, 3), "edge weight &gt; 0: raises it")]
    if wmax > 0:
        items += [(line("grey", edge_width(w, wmax)), f"|edge weight| {w:.3g}") for w in (wmax, wmax / 2, wmax / 10)]
    return '<div class="legend">' + "".join(f"<span>{s} {t}</span>" for s, t in items) + "</div>"


def to_html(circuit: dict, nodes: list[dict], edges: list[dict], unlinked: int = 0, links: dict[str, str] | None = None,
            site_check: str | None = None) -> str:
    """The page; `links`: node id -> URL its box links to (the feature browser's pages, `sae-ooc browse`); `unlinked`:
    how many drawn nodes have no drawn edge. With `site_check` (the site's script, relative to the page) the links
    are live only if that file loads: the site may be written after this page, or not at all where the page is copied."""
    meta = circuit["metadata"]
    info = {n["id"]: {k: n.get(k) for k in ("id", "hook", "role", "type", "feature", "effect", "effect_std", "rank", "label", "description",
                                              "top_activations", "promoted")} for n in nodes}
    info[sink_id(circuit)] = {"id": sink_id(circuit), "description": meta["sink"]["description"], "type": "metric"}
    types = sorted({n["type"] for n in nodes})
    summary = (f"method {meta['method']}, metric {meta['sink']['description']}, {plural(int(meta['n_pairs']), 'pair')}"
               + (f", ablation {meta['ablation']}" if meta.get("ablation") else "") + f"; {score_text(circuit)}; "
               + ", ".join(plural(sum(n['type'] == t for n in nodes), f"{t} node") for t in types)
               + f" and {plural(len(edges), 'edge')} drawn"
               + (f"; {plural(unlinked, 'node')} of these without an edge at or above the drawing threshold" if unlinked else ""))
    wmax = max((abs(e["weight"]) for e in edges), default=0.0)
    return _HTML.format(title=html.escape(f"sae_ooc {heading(meta)}"), summary=html.escape(summary), legend=_legend(wmax, types),
                        effect=html.escape(effect_name(meta)), svg=_svg(circuit, nodes, edges, links, deferred=site_check is not None),
                        data=_json_for_script({"effect_name": effect_name(meta), "nodes": info}),
                        links_note=_links_note(links, site_check), site_script=_site_script(site_check) if links else "")


def _links_note(links: dict | None, site_check: str | None) -> str:
    if not links:
        return ""
    if site_check is None:
        return "; click a feature node for its page in the feature browser"
    return ('<span id="links-note">; feature nodes link to their pages in the feature browser once `sae-ooc browse` has written it '
            f'({html.escape(site_check.rsplit("/assets/", 1)[0])}/, beside this page)</span>')


def _site_script(site_check: str | None) -> str:
    """Turn the deferred links on if the feature browser's script loads (a <script> element: file:// pages may not fetch)."""
    if site_check is None:
        return ""
    return ("<script>(function () {\n  var s = document.createElement(\"script\"), note = document.getElementById(\"links-note\");\n"
            "  s.onload = function () {\n"
            "    document.querySelectorAll(\"a[data-href]\").forEach(function (a) { a.setAttribute(\"href\", a.getAttribute(\"data-href\")); });\n"
            "    document.body.setAttribute(\"data-site\", \"found\");\n"
            "    note.textContent = \"; click a feature node for its page in the feature browser\";\n  };\n"
            "  s.onerror = function () {\n    document.body.setAttribute(\"data-site\", \"missing\");\n"
            "    note.textContent = \"; no feature browser beside this page (`sae-ooc browse` writes RUN/browse/), so the nodes link nowhere\";\n  };\n"
            f"  s.src = {_json_for_script(site_check)};\n  document.body.appendChild(s);\n}})();</script>")


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
h3 {{ margin: 0 0 6px 0; overflow-wrap: anywhere; }}
p {{ margin: 4px 0; overflow-wrap: anywhere; }}
#circuit {{ display: block; width: 100%; height: auto; margin-top: 6px; }}
.axis {{ font-size: 11px; fill: #333; font-family: "DejaVu Sans", Verdana, sans-serif; }}
.lab {{ font-size: 11px; fill: #000; pointer-events: none; font-family: "DejaVu Sans", Verdana, sans-serif; }}
.node {{ cursor: pointer; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 4px 18px; font-size: 12px; margin: 6px 0; }}
.legend span {{ display: inline-flex; align-items: center; gap: 6px; }}
.sw {{ display: inline-block; width: 28px; height: 12px; border: 1px solid #000; }}
#tip {{ position: fixed; display: none; max-width: 420px; background: #fffff0; border: 1px solid #888; padding: 8px;
        font-size: 12px; box-shadow: 2px 2px 6px rgba(0,0,0,.3); pointer-events: none; }}
#tip table {{ border-collapse: collapse; }} #tip td {{ padding: 0 6px; }}
</style></head>
<body>
<h3>{title}</h3>
<p>{summary}. Each box: hook, feature and the position it is measured at; its label or description; its {effect}.
Edges run upward from a node to a later one. Hover a node for its top activations and promoted answers{links_note}.</p>
{legend}
{svg}
<div id="tip"></div>
<script type="application/json" id="nodedata">{data}</script>
<script>
(function () {{
  var all = JSON.parse(document.getElementById("nodedata").textContent);
  var data = all.nodes;
  var tip = document.getElementById("tip");
  function el(tag, text) {{ var e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; }}
  function show(d, ev) {{
    tip.replaceChildren();
    tip.appendChild(el("b", d.id));
    if (d.description) tip.appendChild(el("div", d.description));
    if (d.effect !== undefined && d.effect !== null) tip.appendChild(el("div", all.effect_name + " " + d.effect.toPrecision(4) + (d.rank ? " (rank " + d.rank + ")" : "")));
    if (d.top_activations && d.top_activations.length) {{
      tip.appendChild(el("div", "top activations:"));
      var t = el("table");
      d.top_activations.forEach(function (a) {{
        var r = el("tr"); r.appendChild(el("td", a.prompt)); r.appendChild(el("td", "@" + a.role)); r.appendChild(el("td", a.activation.toFixed(3))); t.appendChild(r);
      }});
      tip.appendChild(t);
    }}
    if (d.promoted && d.promoted.length) tip.appendChild(el("div", "promotes: " + d.promoted.map(function (p) {{ return p.token + " (" + p.score.toFixed(2) + ")"; }}).join(", ")));
    tip.style.display = "block";
    var x = ev.clientX + 14, y = ev.clientY + 14;
    if (x + tip.offsetWidth > window.innerWidth) x = Math.max(0, ev.clientX - 14 - tip.offsetWidth);  // keep it on screen
    if (y + tip.offsetHeight > window.innerHeight) y = Math.max(0, ev.clientY - 14 - tip.offsetHeight);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }}
  document.querySelectorAll(".node").forEach(function (g) {{
    g.addEventListener("mousemove", function (ev) {{ var d = data[g.getAttribute("data-id")]; if (d) show(d, ev); }});
    g.addEventListener("mouseleave", function () {{ tip.style.display = "none"; }});
  }});
}})();
</script>
{site_script}
</body></html>
"""
