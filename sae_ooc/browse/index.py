"""The index pages: the site's front page (every hook) and one per hook, the same sortable, filterable, paged table.

Rows come from `<hook>/rows-NNN.js` chunks written while the feature pages are (see assets.JS_TEXT), so neither the
writer nor the page holds more than a chunk's worth of HTML at a time.
"""

from __future__ import annotations

import html
import json

from sae_ooc.activations.cache import ROLES
from sae_ooc.saes.prefixes import VARIABLES
from sae_ooc.saes.dead import DEAD_ON
from sae_ooc.browse.render import head, num, pct, tail

esc = html.escape
HEADERS = ((0, "hook"), (1, "feature"), (2, "density"), (3, "mean act."), (4, "max act."), (5, "fires most at"), (6, "label (eval-sae)"),
           (9, "AUROC"), (10, "node effect"), (11, "effect at"), (12, "dead/dense"), (14, "circuits"))


def rows_js(hook: str, rows: list[list]) -> str:
    return f"BROWSE_ROWS({json.dumps(hook)}, {json.dumps(rows, separators=(',', ':'))});\n"


def _options(values, all_text: str = "all") -> str:
    return f'<option value="">{all_text}</option>' + "".join(f'<option value="{esc(v)}">{esc(t)}</option>' for v, t in values)


def index_html(title: str, up: str, hooks: list[str], chunks: list[str], summary: str, selected: str | None = None,
               positions=ROLES, variables=VARIABLES) -> str:
    """The table over `hooks` (rows loaded from `chunks`, paths from the site's root); `up`: the way to the root;
    `positions`, `variables`: the task's (a two-hop task has no r3 or bridge2 to filter by)."""
    hook_opts = _options([(h, h) for h in hooks]).replace(f'value="{esc(selected)}"', f'value="{esc(selected)}" selected') if selected else _options([(h, h) for h in hooks])
    var_opts = _options([("*", "any label"), ("-", "no label")] + [(v, v) for v in variables])
    filters = (f'<div id="filters"><label>hook <select id="f-hook">{hook_opts}</select></label>'
               f'<label>position <select id="f-pos">{_options([(r, r) for r in positions])}</select></label>'
               f'<label>variable <select id="f-var">{var_opts}</select></label>'
               '<label>label contains <input id="f-label" size="12"></label>'
               '<label>state <select id="f-state"><option value="">all</option><option value="alive">not dead</option>'
               '<option value="dead">dead</option><option value="dense">dense</option><option value="neither">neither</option></select></label>'
               '<label><input type="checkbox" id="f-circ"> in a circuit</label></div>')
    ths = "".join(f'<th data-col="{c}"{" class=" + chr(34) + "sorted asc" + chr(34) if c == 1 else ""}>{esc(t)}</th>' for c, t in HEADERS)
    return "".join([
        head(title, up), f"<h1>{esc(title)}</h1>\n{summary}\n",
        "<p class='note'>Position: where the feature fires most, or where its label is. Dead: " + esc(DEAD_ON) + "; dense: active on more "
        "than the dense threshold of the cached tokens. Click a column to sort; the table shows 100 rows a page. The address keeps the "
        "sort, the filters and the page, so the back button from a feature page returns to the same rows.</p>\n",
        f'<div id="browse-index" data-root="{up}" data-chunks="{esc(json.dumps(chunks))}">{filters}',
        '<div id="pager"><button id="prev">← previous</button><button id="next">next →</button><span id="status">loading…</span></div>',
        f'<table id="features"><thead><tr>{ths}</tr></thead><tbody></tbody></table></div>\n',
        tail(up)])


def hooks_table(summaries: list[dict], up: str = "") -> str:
    """One line per hook: its SAE's size, dead features (`DEAD_ON`), dense features in the cache, labelled features, eval-sae's
    explained variance."""
    rows = "".join(f"<tr><td><a href=\"{up}{esc(s['hook'])}/index.html\">{esc(s['hook'])}</a></td><td class='n'>{s['d_sae']}</td>"
                   f"<td class='n'>{s['n_dead']}</td><td class='n'>{s['n_dense']}</td><td class='n'>{s['n_labelled']}</td>"
                   f"<td class='n'>{num(s.get('explained_variance'), '.3f')}</td><td class='n'>{pct(s.get('mean_density'))}</td></tr>" for s in summaries)
    return (f"<table><tr><th>hook</th><th>features</th><th>dead ({esc(DEAD_ON)})</th><th>dense (cache)</th><th>labelled (eval-sae)</th>"
            f"<th>explained variance (eval-sae, held out)</th><th>mean density</th></tr>{rows}</table>")
