"""The site's one CSS file and one JS file (no network, no library: they work from file://).

The index loads its rows from plain <script> files (`BROWSE_ROWS(hook, rows)`), one chunk after another, because
browsers refuse fetch() and XHR on file:// pages but not scripts; it shows one page of rows at a time, so tens of
thousands of features stay responsive. Feature pages need no script.
"""

CSS_TEXT = """body { font-family: "DejaVu Sans", Verdana, sans-serif; margin: 16px; max-width: 1200px; font-size: 14px; color: #111; }
h1 { font-size: 20px; margin: 6px 0; } h2 { font-size: 16px; margin: 18px 0 6px 0; border-bottom: 1px solid #ddd; }
nav { font-size: 13px; } nav a { margin-right: 4px; }
table { border-collapse: collapse; margin: 4px 0; } th, td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 13px; } .lab { font-size: 15px; } .state { color: #a33; margin-left: 8px; }
.prompt .tok { display: inline-block; padding: 0 4px; margin-right: 2px; border: 1px solid #ddd; border-radius: 3px; font-family: monospace; }
.prompt .tok.hi { background: #ffd24d; border-color: #c90; font-weight: bold; }
td.ok { color: #186a18; } td.bad { color: #b01010; } td.pos { color: #1f4e9c; } td.neg { color: #b01010; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
svg.hist .ax { font-size: 11px; fill: #333; }
#filters { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 8px 0; font-size: 13px; align-items: center; }
#features th { cursor: pointer; white-space: nowrap; } #features th.sorted::after { content: " ▾"; } #features th.sorted.asc::after { content: " ▴"; }
#pager button { margin-right: 6px; }
"""

JS_TEXT = r"""(function () {
  "use strict";
  var rows = [];
  window.BROWSE_ROWS = function (hook, chunk) { for (var i = 0; i < chunk.length; i++) rows.push([hook].concat(chunk[i])); };
  var box = document.getElementById("browse-index");
  if (!box) return;  // a feature page: nothing to do
  var PAGE = 100;
  var NUM = {1: 1, 2: 1, 3: 1, 4: 1, 9: 1, 10: 1, 12: 1, 13: 1, 14: 1};
  var root = box.getAttribute("data-root");
  var queue = JSON.parse(box.getAttribute("data-chunks"));
  var sortCol = 1, asc = true, page = 0, shown = [], loaded = 0;
  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = text; if (cls) e.className = cls; return e; }
  function pad(n) { var s = String(n); while (s.length < 5) s = "0" + s; return s; }
  function fmt(v, d) { return v === null || v === undefined || v === "" ? "–" : Number(v).toPrecision(d || 4); }
  function cmp(a, b) {
    var x = a[sortCol], y = b[sortCol];
    if (x === y) return a[1] - b[1];
    if (x === null || x === "") return 1;
    if (y === null || y === "") return -1;
    if (sortCol === 10) { x = Math.abs(x); y = Math.abs(y); }
    var r = NUM[sortCol] ? x - y : String(x).localeCompare(String(y));
    return asc ? r : -r;
  }
  function keep(r) {
    var hook = $("f-hook").value, pos = $("f-pos").value, v = $("f-var").value, lab = $("f-label").value.toLowerCase(), st = $("f-state").value;
    if (hook && r[0] !== hook) return false;
    if (pos && r[5] !== pos && r[8] !== pos) return false;
    if (v === "*" && !r[7]) return false;
    if (v === "-" && r[7]) return false;
    if (v && v !== "*" && v !== "-" && r[7] !== v) return false;
    if (lab && String(r[6]).toLowerCase().indexOf(lab) < 0) return false;
    if (st === "alive" && r[12]) return false;
    if (st === "dead" && !r[12]) return false;
    if (st === "dense" && !r[13]) return false;
    if (st === "neither" && (r[12] || r[13])) return false;
    if ($("f-circ").checked && !r[14]) return false;
    return true;
  }
  function refresh() { shown = rows.filter(keep); shown.sort(cmp); page = 0; draw(); }
  function draw() {
    var body = $("features").tBodies[0];
    body.replaceChildren();
    var n = shown.length, last = Math.max(0, Math.ceil(n / PAGE) - 1);
    page = Math.min(Math.max(page, 0), last);
    var part = shown.slice(page * PAGE, page * PAGE + PAGE);
    part.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", r[0]));
      var a = el("a", "#" + r[1]); a.href = root + r[0] + "/f" + pad(r[1]) + ".html";
      var td = el("td", undefined, "n"); td.appendChild(a); tr.appendChild(td);
      tr.appendChild(el("td", (100 * r[2]).toPrecision(3) + "%", "n"));
      tr.appendChild(el("td", fmt(r[3]), "n")); tr.appendChild(el("td", fmt(r[4]), "n"));
      tr.appendChild(el("td", r[5] || "–"));
      tr.appendChild(el("td", r[6] || "–"));
      tr.appendChild(el("td", fmt(r[9], 3), "n"));
      tr.appendChild(el("td", fmt(r[10]), "n")); tr.appendChild(el("td", r[11] || "–"));
      tr.appendChild(el("td", r[12] ? "dead" : (r[13] ? "dense" : "")));
      tr.appendChild(el("td", r[14] ? String(r[14]) : "", "n"));
      body.appendChild(tr);
    });
    $("status").textContent = n ? "features " + (page * PAGE + 1) + "–" + (page * PAGE + part.length) + " of " + n + " shown (" + rows.length + " loaded)" : "no feature matches (" + rows.length + " loaded)";
    $("prev").disabled = page === 0; $("next").disabled = page >= last;
  }
  document.querySelectorAll("#features th").forEach(function (th) {
    th.addEventListener("click", function () {
      var c = Number(th.getAttribute("data-col"));
      if (c === sortCol) asc = !asc; else { sortCol = c; asc = !(NUM[c] && c !== 1); }
      document.querySelectorAll("#features th").forEach(function (h) { h.className = ""; });
      th.className = "sorted" + (asc ? " asc" : "");
      shown.sort(cmp); page = 0; draw();
    });
  });
  ["f-hook", "f-pos", "f-var", "f-state", "f-circ"].forEach(function (id) { $(id).addEventListener("change", refresh); });
  $("f-label").addEventListener("input", refresh);
  $("prev").addEventListener("click", function () { page--; draw(); });
  $("next").addEventListener("click", function () { page++; draw(); });
  function next() {
    if (!queue.length) { box.setAttribute("data-loaded", String(rows.length)); refresh(); return; }
    var s = document.createElement("script");
    s.src = root + queue.shift();
    s.onload = next;
    s.onerror = function () { $("status").textContent = "could not load " + s.src; };
    document.body.appendChild(s);
    if (++loaded === 2) refresh();  // show the first chunk's rows while the rest load
  }
  next();
})();
"""
