"""The report's "Where each variable lives" (RUN/variables/variables.json, the rows of sae_ooc.causal.planted): every
planted variable besides the bridge at r1, at its own position and each hook, judged by interchange on held-out prefixes;
the control curves, a table, and one sentence per variable. Numbers go through `Doc.number` as
control.<variable>.<role>.<hook>.<unit>.switch."""

from __future__ import annotations

from sae_ooc.causal.result import VariableRow, VariablesResult
from sae_ooc.records import opt
from sae_ooc.report.doc import Doc, pct

COLUMNS = (("resid_patch", "residual patch"), ("das", "DAS (rank: switch)"), ("supervised", "class-mean edit"),
           ("sae_opt16", "sae_opt, 16 features"), ("top16_features", "top 16 features"), ("sae_code_swap", "whole SAE code"),
           ("random", "random subspace"))
SUMMARY_UNITS = ("resid_patch", "supervised", "sae_opt16", "top16_features", "sae_code_swap", "random")


def _name(r: VariableRow) -> str:
    return opt(r.pairs.name, r.variable)


def _key(r: VariableRow, unit: str) -> str:
    return f"control.{r.variable}.{opt(r.pairs.role, r.position)}.{r.hook}.{unit}.switch"


def variables_control_section(doc: Doc) -> None:
    run = doc.run
    v = VariablesResult.load_if(run.variables_dir)
    rows = [r for r in (v.rows if v else []) if r.pairs]
    if not rows:
        return
    doc.add("### Where each variable lives", "")
    doc.add("Every other planted variable, at its own position and each hook, judged like the bridge: the base question takes the "
            "unit's value from a donor question that differs in the variable and agrees where the task's high-level model needs it ("
            + "; ".join(f"{n}: {d}" for n, d in dict.fromkeys((_name(r), r.pairs.donor) for r in rows))
            + "), so the counterfactual answer is the donor's own. Held-out pairs: both "
            "questions' prefixes at that position held out of SAE training and of eval-sae's labels, and of every fit here. Units as "
            "above; `sae_opt` (Makelov, Lange & Nanda 2024) exchanges n SAE features chosen per pair, greedily and without labels, to "
            "match the donor's difference x_donor − x (nothing is fitted: it reads the two prompts' codes). DAS is trained only "
            "where the residual patch switches at least "
            f"{pct(v.settings.variable_patch_min)} of fit-valid pairs.", "")
    png = run.variables_dir / "variable_curves.png"
    if png.exists():
        doc.figure(png, run.variables_dir / "variable_curves.svg")
        doc.add("![variable control curves](variable_curves.png)", "")
    doc.add("| variable @ position | hook | n | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---|---|---|" + "---|" * len(COLUMNS))
    for r in rows:
        u = r.units
        on = f"{r.n_heldout} held-out pairs, {r.n_heads} heads"
        cells = []
        for col, _ in COLUMNS:
            if col == "das":
                das = [f"{u[n].size}: {doc.number(_key(r, n), u[n].switch, on, spec='.1%')}" for n in r.curves.get("das", [])
                       if r.switch(n) is not None]
                cells.append(", ".join(das) or ("not trained (patch too small)" if r.das and opt(r.das.skipped) else "–"))
                continue
            x = r.switch(col)
            cells.append("–" if x is None else doc.number(_key(r, col), x, on, spec=".1%") if col in SUMMARY_UNITS else pct(x))
        doc.add(f"| {_name(r)} @{r.position} | `{r.hook}` | {r.n_heldout} | " + " | ".join(cells) + " |")
    doc.add("")
    for name in dict.fromkeys(_name(r) for r in rows):
        doc.add(_sentence([r for r in rows if _name(r) == name and r.n_heldout > 0], name), "")


def _sentence(rows: list[VariableRow], name: str) -> str:
    """Where the variable is used most (the hook whose residual patch switches most fit-valid pairs) and how small a unit
    carries it there."""
    if not rows:
        return f"**{name}**: no held-out pair could be formed."
    best = max(rows, key=lambda r: (r.das.valid_resid_patch if r.das else None) or 0)
    u, ref = best.units, best.units["resid_patch"].switch
    das = [(u[n].size, u[n].switch) for n in best.curves.get("das", []) if best.switch(n) is not None]
    ok = [(k, s) for k, s in das if ref and s >= 0.8 * ref]
    rnd = u.get("random")
    parts = [f"the residual patch switches {pct(ref)} of {best.n_heldout} held-out answers to the counterfactual"]
    if das:
        parts.append("DAS " + ", ".join(f"rank {k} {pct(s)}" for k, s in das)
                     + (f" (rank {ok[0][0]} reaches 80% of the patch)" if ok else " (none reaches 80% of the patch)"))
    if u.get("supervised"):
        parts.append(f"the class-mean edit {pct(best.switch('supervised'))}")
    elif best.class_means and opt(best.class_means.skipped):
        parts.append("no class-mean edit: " + best.class_means.skipped)
    if u.get("sae_code_swap"):
        parts.append(f"SAE features: sae_opt with 16 {pct(best.switch('sae_opt16'))}, the top 16 by class-mean "
                     f"difference {pct(best.switch('top16_features'))}, the whole code {pct(best.switch('sae_code_swap'))}")
    if rnd:
        parts.append(f"a random rank-{opt(rnd.size)} subspace {pct(rnd.share)}")
    elif u.get("random_features16"):
        parts.append(f"16 random features {pct(best.switch('random_features16'))}")
    others = ", ".join(f"`{r.hook}` {pct(r.switch('resid_patch'))}" for r in rows if r is not best)
    return (f"**{name}** (at {best.position}; donor {best.pairs.donor}), at `{best.hook}` (the first hook whose residual "
            f"patch switches the most fit-valid pairs): " + "; ".join(parts) + "."
            + (f" Residual patch at the other hooks: {others}." if others else ""))
