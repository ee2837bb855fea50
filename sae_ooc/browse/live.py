"""The front page's prompt box: type a prompt, see what `sae-ooc query --json` returns, drawn as tables.

It asks `sae-ooc serve`'s API (`api/query`, beside the site's root) for the numbers; opened from disk (file://) or from
a plain file server, there is no API, and the box says that the server is needed, while the rest of the site works as
before. Its own script file (assets/serve.js), so that the site's browse.js stays the index table's alone. Every text
from the API is written with textContent, never as HTML.
"""

from __future__ import annotations

import json

from sae_ooc.browse.paths import SERVE_JS

NEEDS_SERVER = "The prompt box needs the server: run `sae-ooc serve --run RUN` and open the address it prints."


def box_html(up: str = "") -> str:
    """The box and its script, for the front page (`up`: the way to the site's root)."""
    return (f'<div id="live-query" data-root="{up}"><h2>Ask the model (live, needs <code>sae-ooc serve</code>)</h2>'
            '<form id="lq-form"><label>prompt <input id="lq-prompt" size="40" maxlength="500" '
            'placeholder="e.g. e12 r3 r7, or text for a natural task"></label> '
            '<label>target <input id="lq-target" size="12" placeholder="top answer"></label> '
            '<button id="lq-go" type="submit">query</button></form>'
            f'<p id="lq-status" class="note">{NEEDS_SERVER}</p><div id="lq-out"></div></div>\n'
            f'<script src="{up}{SERVE_JS}"></script>\n')


JS_TEXT = r"""(function () {
  "use strict";
  var box = document.getElementById("live-query");
  if (!box) return;
  var root = box.getAttribute("data-root") || "";
  var NEEDS = %NEEDS%;
  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = text; if (cls) e.className = cls; return e; }
  function pad(n) { var s = String(n); while (s.length < 5) s = "0" + s; return s; }
  function f3(x) { return Number(x).toFixed(3); }
  function signed(x) { return (x >= 0 ? "+" : "") + f3(x); }
  function status(text, bad) { var s = $("lq-status"); s.textContent = text; s.className = bad ? "note lq-error" : "note"; }
  function row(cells, head) {
    var tr = el("tr");
    cells.forEach(function (c) { var td = el(head ? "th" : "td"); if (c instanceof Node) td.appendChild(c); else td.textContent = c; tr.appendChild(td); });
    return tr;
  }
  function featureLink(it) {  // the feature's page when `sae-ooc browse` wrote it (the API names it in "page")
    var a = el(it.page ? "a" : "span", "#" + it.feature, "lq-feature");
    if (it.page) a.href = root + it.hook + "/f" + pad(it.feature) + ".html";
    a.setAttribute("data-hook", it.hook); a.setAttribute("data-feature", String(it.feature));
    a.setAttribute("data-position", String(it.position)); a.setAttribute("data-attribution", String(it.attribution));
    a.title = (it.description || "") + " (attr " + signed(it.attribution) + ", act " + f3(it.activation) + ")";
    return a;
  }
  function draw(res) {
    var out = $("lq-out");
    out.replaceChildren();
    var p = el("p", undefined, "prompt");
    res.tokens.forEach(function (t, i) { var s = el("span", t, "tok"); s.title = res.roles[i]; p.appendChild(s); });
    out.appendChild(p);
    var t = res.truth;
    out.appendChild(el("p", t === null ? "not a fact of the task: no ground truth" :
      "truth: answer " + t.answer + " (model: rank " + t.answer_model.rank + ", p " + f3(t.answer_model.prob) + ")" +
      (t.bridge !== null ? ", bridge " + t.bridge + " (model: rank " + t.bridge_model.rank + ", p " + f3(t.bridge_model.prob) + ")" : "") +
      "; a " + t.split + " fact", "lq-truth"));
    var answers = el("table"); answers.id = "lq-answers";
    answers.appendChild(row(["model's answer", "probability"], true));
    res.answers.forEach(function (a) { var tr = row([a.token, f3(a.prob)]); tr.setAttribute("data-token", a.token); answers.appendChild(tr); });
    out.appendChild(answers);
    var tgt = el("p", "features by attribution to logit(" + res.target + "), " + res.target_source + " (p " + f3(res.target_prob) +
      "): attr = activation × gradient, what the feature adds to that logit to first order, on this prompt only", "note");
    tgt.id = "lq-target-line"; tgt.setAttribute("data-target", res.target);
    out.appendChild(tgt);
    var hooks = el("table"); hooks.id = "lq-hooks";
    hooks.appendChild(row(["hook", "attr of its features", "of its SAE error", "features that move the answer most (position, token, feature, attr, description)"], true));
    res.per_hook.forEach(function (h) {
      var list = el("div");
      h.features.forEach(function (it) {
        var line = el("div", undefined, "lq-item");
        line.appendChild(document.createTextNode("pos:" + it.role + " " + it.token + " "));
        line.appendChild(featureLink(it));
        line.appendChild(document.createTextNode(" " + signed(it.attribution) + " " + (it.description || "")));
        list.appendChild(line);
      });
      if (!h.features.length) list.textContent = "no active feature here reaches the answer";
      var tr = row([h.hook, signed(h.feature_attribution), signed(h.error_attribution), list]);
      tr.setAttribute("data-hook", h.hook); hooks.appendChild(tr);
    });
    out.appendChild(hooks);
    out.appendChild(el("h3", "per hook and position: the features with the largest |attribution|"));
    var pos = el("table"); pos.id = "lq-positions";
    pos.appendChild(row(["hook", "position", "token", "active", "features (attr)", "SAE error attr"], true));
    (res.hooks || []).forEach(function (r) {
      var cell = el("span");
      r.by_attribution.forEach(function (it) { cell.appendChild(featureLink(it)); cell.appendChild(document.createTextNode(" " + signed(it.attribution) + "  ")); });
      pos.appendChild(row([r.hook, "pos:" + r.role, r.token, String(r.n_active), cell, signed(r.error_attribution)]));
    });
    out.appendChild(pos);
    out.setAttribute("data-prompt", res.prompt);
  }
  if (location.protocol === "file:") {  // no server: say so, and leave the box inert
    status(NEEDS, false);
    ["lq-prompt", "lq-target", "lq-go"].forEach(function (id) { $(id).disabled = true; });
    return;
  }
  status("Type a prompt and press query.", false);
  var asked = 0;
  $("lq-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var q = "prompt=" + encodeURIComponent($("lq-prompt").value), target = $("lq-target").value.trim();
    if (target) q += "&target=" + encodeURIComponent(target);
    var mine = ++asked;
    status("asking the model…", false);
    $("lq-out").removeAttribute("data-prompt");
    fetch(root + "api/query?" + q).then(function (r) {
      return r.json().then(function (body) { return {ok: r.ok, body: body}; }, function () { throw new Error("HTTP " + r.status); });
    }).then(function (r) {
      if (mine !== asked) return;  // a later question was asked meanwhile
      if (!r.ok) { status(r.body.error || "the server refused the query", true); $("lq-out").replaceChildren(); return; }
      draw(r.body); status("", false);
    }).catch(function (e) {
      if (mine !== asked) return;
      status(NEEDS + " (" + e.message + ")", true);
    });
  });
})();
""".replace("%NEEDS%", json.dumps(NEEDS_SERVER))
