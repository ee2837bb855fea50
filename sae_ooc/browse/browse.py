"""Stage `browse`: RUN/browse/, a static site with one page per SAE feature (see sae_ooc.browse).

    browse/index.html                 every hook's features in one sortable, filterable, paged table
    browse/<hook>/index.html          the same table for one hook; rows-NNN.js: its rows, in chunks
    browse/<hook>/fNNNNN.html|.json   one feature: page, and its data (SAE-dashboard field names + "sae_ooc")
    browse/<hook>/neuronpedia/batch-N.json  SAE-dashboard's Neuronpedia batch format
    browse/circuits/*.html            the run's circuit diagrams, whose feature nodes link to the feature pages
    browse/assets/browse.{css,js}     the one style sheet and the one script; serve.js: the front page's prompt box (live.py)
    browse/browse.json                what the site was built from; feature_page.png: a screenshot of one page (headless Chromium)

Per hook, one batched pass over the activation cache gives every feature's numbers (collect.py); then features are
written CHUNK at a time (page, JSON, index rows, a Neuronpedia batch), so memory stays bounded by the chunk and by
O(k × d_sae) running statistics, whatever the SAE's width. The site is built in a temporary folder beside its
destination and moved into place at the end: nothing half-written is ever at the final path.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sae_ooc.errors import UserError
from sae_ooc.io import write_json, write_text
from sae_ooc.records import opt
from sae_ooc.saes.features import direct_logits
from sae_ooc.saes.store import load_saes
from sae_ooc.browse import assets, dashboard, index, live, paths, render
from sae_ooc.saes.cache_stats import acts_at, collect
from sae_ooc.browse.context import Context, load_context
from sae_ooc.browse.record import example_rows, feature_record, index_row, seq_rows
from sae_ooc.browse.result import BrowseInfo
from sae_ooc.browse.screenshot import screenshot
from sae_ooc.viz.circuit_html import to_html

CHUNK = 512  # features written (and held) at a time; also the size of an index rows file and a Neuronpedia batch


def _values(ctx: Context, sae, hook: str, st, lo: int, hi: int) -> dict[int, dict[int, float]]:
    """{feature: {row: activation}} for every token of every example prompt of features lo..hi-1."""
    rows, feats = [], []
    for j in range(hi - lo):
        top, sample = example_rows(st, j)
        for r, _ in top + sample:
            for q in seq_rows(ctx, r):
                rows.append(q)
                feats.append(lo + j)
    v = acts_at(sae, ctx.cache, hook, torch.tensor(rows, dtype=torch.long), torch.tensor(feats, dtype=torch.long))
    out: dict[int, dict[int, float]] = {}
    for r, f, x in zip(rows, feats, v.tolist()):
        out.setdefault(f, {})[r] = x
    return out


def write_hook(ctx: Context, sae, hook: str, site: Path, dense_threshold: float, circuits: set[str], bar) -> dict:
    """Every page of one SAE; returns its line of the front page's table and its index chunks."""
    F = int(sae.cfg.d_sae)
    st_all = collect(sae, ctx.cache, hook, ctx.first, ctx.held, ctx.key)
    W_dec = sae.W_dec.detach().float()
    # logit effects on real tokens only (the toy's pad is its last token; a tokenizer's pad is also its BOS/EOS token)
    names = ctx.vocab.names[: ctx.vocab.pad_id] if ctx.vocab.pad_id == len(ctx.vocab.names) - 1 else ctx.vocab.names
    n_prompts = int(torch.unique(ctx.prompts.tokens, dim=0).shape[0])
    layer = int(hook.split(".")[1]) if hook.startswith("blocks.") else 0
    chunks, n_dead, n_dense, n_lab = [], 0, 0, 0
    for c, lo in enumerate(range(0, F, CHUNK)):
        hi = min(lo + CHUNK, F)
        st = st_all.slice(lo, hi)
        with torch.no_grad():
            lg = direct_logits(ctx.model, hook, W_dec[lo:hi].to(ctx.model.cfg.device), ctx.scale)
        lg = None if lg is None else lg[:, : len(names)].float().cpu()
        vals = _values(ctx, sae, hook, st, lo, hi)
        rows, batch = [], []
        for j in range(hi - lo):
            f = lo + j
            rec = feature_record(ctx, hook, st, j, f, None if lg is None else lg[j], dense_threshold,
                                 vals.get(f, {}))
            # plain writes: the whole site is built in a temporary folder and moved into place at the end
            (site / paths.feature_page(hook, f)).write_text(render.feature_html(rec, F, circuits))
            feat = dashboard.feature_json(rec, n_prompts)
            (site / paths.feature_json(hook, f)).write_text(json.dumps(feat, separators=(",", ":")))
            batch.append({k: feat[k] for k in dashboard.NEURONPEDIA_FIELDS})
            rows.append(index_row(rec))
            n_dead += rec.dead
            n_dense += rec.dense
            n_lab += bool(rec.labels)
            bar.update(1)
        name = f"{hook}/rows-{c:03d}.js"
        write_text(site / name, index.rows_js(hook, rows))
        chunks.append(name)
        write_json(site / hook / "neuronpedia" / f"batch-{c}.json", dashboard.batch_json("sae_ooc", layer, f"sae_ooc-{hook}", batch))
    m = ctx.eval_metrics.get(hook)
    ev = m.reconstruction.explained_variance if m is not None else None
    summary = {"hook": hook, "d_sae": F, "n_dead": n_dead, "n_dense": n_dense, "n_labelled": n_lab, "explained_variance": ev,
               "mean_density": float(st_all.count.double().mean()) / max(st_all.n_tokens, 1), "most_active": int(st_all.count.argmax())}
    write_text(site / hook / "index.html", index.index_html(f"{hook}: {F} SAE features", "../", [hook], chunks,
                                                             index.hooks_table([summary], "../"), positions=ctx.vocab.layout.position_names,
                                                          variables=ctx.vocab.layout.variables))
    return {"summary": summary, "chunks": chunks}


def circuit_pages(ctx: Context, site: Path) -> set[str]:
    """The run's circuit diagrams, drawn again with each feature node linked to its page; the names written."""
    done = set()
    for name, c in ctx.circuits.items():
        g = c.graph
        nodes = [n for n in g.nodes if n.id in c.drawn_nodes]
        edges = [e for e in g.edges if (e.source, e.target) in c.drawn_edges]
        links = paths.site_links([n.to_json() for n in nodes if n.hook in ctx.hooks], "../")
        # the drawing code works on the graph's JSON form (sae_ooc.viz.circuit_files: plain data in, files out)
        write_text(site / paths.CIRCUITS / f"{name}.html", to_html(g.to_json(), [n.to_json() for n in nodes], [e.to_json() for e in edges],
                                                                 c.n_without_drawn_edges, links=links))
        done.add(name)
    return done


def build_site(run, out: Path, hooks: list[str] | None = None, shot: bool = True) -> BrowseInfo:
    """Write the site for `run` into `out` (replacing a site there; any other non-empty folder is refused)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / paths.MARKER).is_file():
        raise UserError(f"{out} is not empty and holds no feature browser ({paths.MARKER} missing); choose a new or empty folder")
    saes = load_saes(run.saes_dir, device=run.device, hook_names=hooks)
    ctx = load_context(run, list(saes), seed=run.cfg.sae_eval.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    site = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if site.exists():
        shutil.rmtree(site)
    site.mkdir()  # not mkdtemp: its 0700 would survive the rename, and the site must follow the user's umask
    try:
        write_text(site / paths.CSS, assets.CSS_TEXT)
        write_text(site / paths.JS, assets.JS_TEXT)
        write_text(site / paths.SERVE_JS, live.JS_TEXT)
        circuits = circuit_pages(ctx, site)
        per_hook = []
        total = sum(int(s.cfg.d_sae) for s in saes.values())
        with tqdm(total=total, desc="browse: feature pages", unit="feature", dynamic_ncols=True) as bar:
            for h, sae in saes.items():
                (site / h / "neuronpedia").mkdir(parents=True, exist_ok=True)
                per_hook.append(write_hook(ctx, sae, h, site, run.cfg.sae_eval.dense_threshold, circuits, bar))
        summaries = [p["summary"] for p in per_hook]
        front = index.hooks_table(summaries) + "".join(f'<p><a href="{paths.CIRCUITS}/{n}.html">{render.esc(render.CIRCUIT_TITLES[n])}</a></p>'
                                                        for n in sorted(circuits)) + live.box_html("")
        write_text(site / "index.html", index.index_html(f"sae_ooc feature browser: {run.cfg.name}", "", list(saes),
                                                          [c for p in per_hook for c in p["chunks"]], front,
                                                          positions=ctx.vocab.layout.position_names,
                                                          variables=ctx.vocab.layout.variables))
        info = {"run": str(run.root), "hooks": summaries, "circuits": sorted(circuits), "n_features": total,
                "n_tokens": ctx.cache.n_tokens, "n_heldout_prefixes": len(ctx.held), "attribution": bool(ctx.effects)}
        if shot:
            info["screenshot"] = screenshot(site, pick_feature(summaries, ctx))
        info = BrowseInfo.from_json(info)
        info.save(site)
        if out.exists():
            shutil.rmtree(out)
        site.rename(out)
    finally:
        if site.exists():
            shutil.rmtree(site)
    return info


def pick_feature(summaries: list[dict], ctx: Context) -> str | None:
    """The page a screenshot shows: the labelled feature with the largest |node effect|, else a frequently active one."""
    best, where = -1.0, None
    for s in summaries:
        h = s["hook"]
        eff = ctx.effects.get(h)
        for f in ctx.labels.get(h, {}):
            e = float(eff[:, f].abs().max()) if eff is not None and f < eff.shape[1] - 1 else 0.0
            if e > best:
                best, where = e, paths.feature_page(h, f)
    if where is None and summaries:  # no labels: the middle hook's most frequently active feature
        s = summaries[len(summaries) // 2]
        where = paths.feature_page(s["hook"], s["most_active"])
    return where


def run_browse(run, force: bool = False) -> dict:
    """Stage `browse`: write RUN/browse/ (see the module docstring)."""
    info = build_site(run, run.root / paths.SITE_DIR, hooks=list(run.cfg.sae.hooks) if run.cfg.sae.hooks else None)
    return {"out": str(run.root / paths.SITE_DIR), "n_features": info.n_features, "hooks": [s.hook for s in info.hooks],
            "screenshot": opt(info.screenshot)}
