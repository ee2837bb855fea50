"""Report: the family section's findings paragraph, generated from the variables stage (where each of the family's
variables is used, with the residual patch above and a random subspace below) and from the answer-at-head probes (the
reversal family: is a carried at b's position?). Plain text from the run's files; no family is named here."""

from __future__ import annotations

from sae_ooc.analyses.result import AnalysisResult
from sae_ooc.causal.result import VariableRow, VariablesResult
from sae_ooc.hooks import hook_sort_key
from sae_ooc.report.doc import Doc, f3, pct

USED = 0.5  # the residual patch switches at least this share of held-out pairs: the variable is used from that hook


def _name(r: VariableRow) -> str:
    return (r.pairs.name if r.pairs else None) or f"{r.variable}@{r.position}"


def _where(doc: Doc, rows: list[VariableRow], name: str) -> str:
    rows = sorted((r for r in rows if r.n_heldout > 0 and r.switch("resid_patch") is not None), key=lambda r: hook_sort_key(r.hook))
    if not rows:
        return f"**{name}**: no held-out pair."
    used = [r for r in rows if r.switch("resid_patch") >= USED]
    if not used:
        top = max(rows, key=lambda r: r.switch("resid_patch"))
        return (f"**{name}**: not used from any hook (the residual patch switches at most {pct(top.switch('resid_patch'))} of "
                f"{top.n_heldout} held-out pairs, at `{top.hook}`).")
    r = used[0]
    ref = r.switch("resid_patch")
    on = f"{r.n_heldout} held-out pairs, {r.n_heads} heads"
    das = [(r.units[n].size, r.switch(n), n) for n in r.curves.get("das", []) if r.switch(n) is not None]
    ok = [d for d in das if d[1] >= 0.8 * ref]
    text = f"**{name}**: from `{r.hook}` (the residual patch {doc.number(f'family.variables.{name}.{r.hook}.resid_patch', ref, on, spec='.1%')})"
    if das:
        k, s, n = (ok or das)[-1] if not ok else ok[0]
        rnd = r.switch(f"random_rank{k}")
        text += (f", a rank-{k} DAS subspace {doc.number(f'family.variables.{name}.{r.hook}.{n}', s, on, spec='.1%')}"
                 f"{'' if ok else ' (below 80% of the patch)'} against a random rank-{k} subspace {pct(rnd)}")
    if r.switch("supervised") is not None:
        text += f"; the class-mean edit {pct(r.switch('supervised'))}"
    return text + "."


def family_findings(doc: Doc) -> None:
    run = doc.run
    v = VariablesResult.load_if(run.variables_dir)
    if v is not None:
        names = list(dict.fromkeys(_name(r) for r in v.rows))
        lines = [_where(doc, [r for r in v.rows if _name(r) == n], n) for n in names]
        doc.add("**Where the question's variables are used** (stage `variables`: each unit interchanged from a donor that "
                "differs in the variable, the counterfactual answer from the family's high-level model, on prefixes held out of "
                f"everything fitted; the first hook in forward order where the residual patch switches {pct(USED)} of held-out "
                "pairs, the smallest DAS rank there reaching 80% of the patch, and a random subspace of that rank):"
                + (f" {v.settings.note}." if v.settings.note else ""), "", *(f"- {x}" for x in lines), "")
    probes = AnalysisResult.load_named(run.analyze_dir, "probes") if run.analyze_dir.exists() else None
    a = getattr(probes, "answer_at_head", None)
    if a and "directions" in a:
        parts = []
        for name, d in a["directions"].items():
            for p in a["positions"]:
                best = max(a["hooks"], key=lambda h: d["acc"][h][p] or 0)
                ctrl = max((x for h in a["hooks"] for k in ("shuffled_acc", "random_model_acc") if (x := d[k][h][p]) is not None), default=None)
                on = f"{d['n_heldout']} {name} questions ({d['scored_on']})"
                parts.append(f"{name} question, answer at {'the head' if p == 'head' else 'the answer position'}: best "
                             f"{doc.number(f'family.answer_at_head.{name}.{p}', d['acc'][best][p], on)} at `{best}` (every control ≤ {f3(ctrl)})")
        doc.add(f"**The answer at the head's position** (analysis `probes`; chance {f3(a['chance'])}): " + "; ".join(parts) + ".", "")
