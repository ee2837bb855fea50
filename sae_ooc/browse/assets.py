"""The site's one CSS file and one JS file (no network, no library: they work from file://).

The index loads its rows from plain <script> files (`BROWSE_ROWS(hook, rows)`), one chunk after another, because
browsers refuse fetch() and XHR on file:// pages but not scripts; it shows one page of rows at a time, so tens of
thousands of features stay responsive. Feature pages need no script.

The table's state (sort column and direction, every filter, the page) lives in the address's fragment
(`index.html#sort=10&dir=desc&state=alive&page=3`): it is written on every change (history.replaceState, so the
back button is not filled with one entry per click) and read when the page opens, so coming back from a feature
page, or opening a saved link, shows the same rows.
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
  var sortCol = 1, asc = true, page = 0, shown = [], loaded = 0, ready = false, wantPage = 0;
  var FILTERS = {hook: "f-hook", pos: "f-pos", "var": "f-var", label: "f-label", state: "f-state"};
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
  function saveState() {  // into the fragment, without a history entry per change
    if (!ready) return;  // while rows load, the page asked for may not exist yet: keep the address as it came
    var q = new URLSearchParams();
    q.set("sort", String(sortCol)); q.set("dir", asc ? "asc" : "desc");
    Object.keys(FILTERS).forEach(function (k) { var v = $(FILTERS[k]).value; if (v) q.set(k, v); });
    if ($("f-circ").checked) q.set("circ", "1");
    if (page) q.set("page", String(page + 1));
    var h = "#" + q.toString();
    if (location.hash === h) return;
    try { history.replaceState(null, "", h); } catch (e) { location.replace(h); }
  }
  function sortMark() {
    document.querySelectorAll("#features th").forEach(function (h) {
      h.className = Number(h.getAttribute("data-col")) === sortCol ? "sorted" + (asc ? " asc" : "") : "";
    });
  }
  function loadState() {  // from the fragment; unknown values are ignored
    var q = new URLSearchParams(location.hash.replace(/^#/, ""));
    var c = Number(q.get("sort"));
    if (q.has("sort") && document.querySelector('#features th[data-col="' + c + '"]')) sortCol = c;
    if (q.has("dir")) asc = q.get("dir") !== "desc";
    Object.keys(FILTERS).forEach(function (k) {
      var e = $(FILTERS[k]), v = q.get(k) || "";
      if (e.tagName === "SELECT" && !Array.prototype.some.call(e.options, function (o) { return o.value === v; })) return;
      e.value = v;
    });
    $("f-circ").checked = q.get("circ") === "1";
    wantPage = Math.max(0, (parseInt(q.get("page"), 10) || 1) - 1);
    sortMark();
  }
  function refresh(keepPage) {
    if (!keepPage) wantPage = 0;
    shown = rows.filter(keep); shown.sort(cmp); page = wantPage; draw();
  }
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
    saveState();
  }
  document.querySelectorAll("#features th").forEach(function (th) {
    th.addEventListener("click", function () {
      var c = Number(th.getAttribute("data-col"));
      if (c === sortCol) asc = !asc; else { sortCol = c; asc = !(NUM[c] && c !== 1); }
      sortMark();
      shown.sort(cmp); page = wantPage = 0; draw();
    });
  });
  ["f-hook", "f-pos", "f-var", "f-state", "f-circ"].forEach(function (id) { $(id).addEventListener("change", function () { refresh(false); }); });
  $("f-label").addEventListener("input", function () { refresh(false); });
  window.addEventListener("hashchange", function () { loadState(); if (ready) refresh(true); });  // an address typed or pasted
  loadState();
  $("prev").addEventListener("click", function () { wantPage = --page; draw(); });
  $("next").addEventListener("click", function () { wantPage = ++page; draw(); });
  function next() {
    if (!queue.length) { ready = true; refresh(true); box.setAttribute("data-loaded", String(rows.length)); return; }
    var s = document.createElement("script");
    s.src = root + queue.shift();
    s.onload = next;
    s.onerror = function () { $("status").textContent = "could not load " + s.src; };
    document.body.appendChild(s);
    if (++loaded === 2) refresh(true);  // show the first chunk's rows while the rest load
  }
  next();
})();
"""
