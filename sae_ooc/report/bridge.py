"""The report's opening section, "Where the bridge lives" (RUN/variables/, stage `variables`): the control curves of every
candidate unit of the bridge at r1, one table per hook and one sentence per variable, each number through `Doc.number`."""

from __future__ import annotations

from sae_ooc.causal.result import ControlUnit, Erasure, VariableRow, VariablesResult
from sae_ooc.records import given, opt
from sae_ooc.report.doc import Doc, pct
from sae_ooc.tasks.counterfactuals import says

UNITS = (("resid_patch", "residual patch from the donor (upper reference)"),
         ("labelled_features", "eval-sae's labelled bridge=b / b' features, exchanged"),
         ("top16_features", "top 16 SAE features by class-mean difference, exchanged"),
         ("sae_opt16", "sae_opt: 16 SAE features chosen greedily to match x_donor − x, exchanged"),
         ("sae_code_swap", "the whole SAE code swapped (error term kept)"),
         ("supervised", "class-mean edit x + μ_b' − μ_b"),
         ("supervised_rank16", "class-mean edit on the top 16 directions of the class means"),
         ("das_rank16", "DAS subspace of rank 16"),
         ("random", "random rank-16 subspace at DAS's norm (lower reference; mean over draws)"))
TARGET_RANK, TARGET_SHARE = 16, 0.8


def _ci(u: ControlUnit) -> str:
    if opt(u.ci95):
        return f" ({pct(u.ci95[0])}–{pct(u.ci95[1])})"
    if given(u.min):
        return f" (draws {pct(u.min)}–{pct(u.max)})"
    return ""


def _acc(er: Erasure, name: str) -> float | None:
    """Held-out accuracy with `name` erased, None where it was not."""
    e = er.get(name)
    return None if e is None else e.acc


def _min_rank(row: VariableRow, share: float) -> int | None:
    """The smallest DAS rank whose held-out switch rate reaches `share` of the residual patch's (read off the held-out curve)."""
    ref = row.switch("resid_patch")
    hits = [row.units[n].size for n in row.curves.get("das", [])
            if ref and row.switch(n) is not None and row.switch(n) >= share * ref]
    return min(hits) if hits else None


def bridge_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("bridge", "Where the bridge lives")
    v = doc.load_or_say(VariablesResult, run.variables_dir, "variables")
    if v is None:
        return
    st = v.settings
    if st.note and all(r.pairs for r in v.rows):  # the stage had no bridge to localize (a question with no bridge)
        doc.add(f"Not applicable: {st.note}.", "")
        return
    rows = [r for r in v.rows if r.n_heldout > 0 and not r.pairs]  # the bridge at r1 (the others: variables_control)
    n_pairs = len(v.heldout_pairs)
    on = f"{n_pairs} held-out interchange pairs ({', '.join(st.heldout_splits)} questions on {st.n_prefixes.heldout} held-out (h, r1) prefixes)"
    doc.add(f"Each candidate unit of the bridge b at r1 is judged by an **interchange intervention**: the base question (h, r1, r2) "
            "takes the unit's value from a donor question whose first hop lands on another bridge b' (uniform among those whose "
            f"answer is known and differs), and the answer should become {says(run.cfg.task.family)[0]}. Switch rates are measured on prefixes held "
            "out of SAE training, of eval-sae's labels and of everything fitted here (class means, top features, DAS), with 95% "
            "intervals resampling head entities; DAS (a learned orthonormal basis of rank r, started from the top-r directions of the class means and trained by "
            "interchange on fit prefixes) has its rank chosen on a validation part of the fit prefixes. "
            f"On {on}; random references are {st.random_draws} draws. {doc.cmd('variables')}", "")
    if not rows:
        doc.add("No held-out pair could be formed (too few held-out prefixes or correct answers).", "")
        return
    doc.figure(run.variables_dir / "control_curves.png", run.variables_dir / "control_curves.svg")
    doc.add("![control curves](control_curves.png)", "")
    hooks = [r.hook for r in rows]
    doc.add("| unit | " + " | ".join(f"`{h}`" for h in hooks) + " |", "|---|" + "---|" * len(hooks))
    for unit, label in UNITS:
        cells = []
        for r in rows:
            u = r.units.get(unit)
            if u is None or u.share is None:
                cells.append("–")
                continue
            val = doc.number(f"control.bridge.r1.{r.hook}.{unit}.switch", u.switch, f"{r.n_heldout} held-out pairs, "
                             f"{r.n_heads} heads", spec=".1%")
            cells.append(val + _ci(u))
        doc.add(f"| {label} | " + " | ".join(cells) + " |")
    doc.add("")
    best = None
    acc_key = "test_id_acc" if st.heldout_splits == ["test_id"] else "heldout_acc"
    for r in rows:
        hook = r.hook
        m80 = _min_rank(r, TARGET_SHARE)
        doc.number(f"control.bridge.r1.{hook}.das.min_rank_80", m80, f"{r.n_heldout} held-out pairs (DAS fit on fit prefixes)", spec=".0f")
        chosen = opt(r.das.min_rank_80) if r.das else None
        if chosen is not None:
            doc.number(f"control.bridge.r1.{hook}.das.chosen_rank", chosen, f"{r.das.n_valid_pairs} fit-valid pairs (chosen there)",
                       in_sample=True, spec=".0f")
            doc.number(f"control.bridge.r1.{hook}.das.chosen_switch", r.switch(f"das_rank{chosen}"),
                       f"{r.n_heldout} held-out pairs", spec=".1%")
        er = r.erase
        k = opt(er.rank)
        for name in (f"leace_rank{k}", f"random_rank{k}", "none"):
            if _acc(er, name) is not None:
                doc.number(f"erase.bridge.r1.{hook}.{name}.{acc_key}", _acc(er, name), f"{er.n_questions} held-out "
                           f"{'/'.join(st.heldout_splits)} questions (held-out prefixes)")
        ref = r.switch("resid_patch")
        if ref and (best is None or ref > best[1]):
            best = (r, ref)
    _erase_table(doc, rows)
    if best is None:
        doc.add("No hook's residual patch switches any answer: the bridge was not found at r1.", "")
        return
    r, ref = best
    m80 = _min_rank(r, TARGET_SHARE)
    small = [(n, u) for n, u in r.units.items() if opt(u.size) is not None and opt(u.kind) in ("das", "supervised", "top_features", "sae_opt")
             and u.size <= TARGET_RANK and u.share is not None and u.switch >= TARGET_SHARE * ref]
    er = r.erase
    k = opt(er.rank)
    erase_txt = ""
    if _acc(er, f"leace_rank{k}") is not None:
        erase_txt = (f" Erasing it (LEACE on the bridge's coordinates in the top {k} class-mean directions) takes held-out accuracy "
                     f"from {pct(_acc(er, 'none'))} to {pct(_acc(er, f'leace_rank{k}'))}, and projecting those {k} directions to "
                     f"their mean to {pct(_acc(er, f'mean_proj_supervised_rank{k}'))} (a random rank-{k} subspace: "
                     f"{pct(_acc(er, f'random_rank{k}'))}); a probe of b refitted on the erased stream reads "
                     f"{pct(er.erased[f'leace_rank{k}'].probe)} of held-out prefixes (unerased: {pct(er.erased['none'].probe)}).")
    iso = r.isolation
    if opt(iso.clean) is not None:
        units = ", ".join(f"{n} {pct(v)}" for n, v in iso.units.items())
        erase_txt += (f" Isolation (RAVEL's): a probe of r2 at `{iso.read_at}` (answer position, fitted on clean fit-prefix "
                      f"questions) reads r2 on {pct(iso.clean)} of the clean held-out questions, and after each interchange: {units}.")
    lab = r.units.get("labelled_features") or ControlUnit()
    ranks = [u.size for u in r.units.values() if opt(u.kind) == "das"]
    doc.add(f"**The bridge at r1** lives most at `{r.hook}`, where patching the whole residual switches {pct(ref)} of held-out "
            f"answers. There the smallest DAS subspace reaching {TARGET_SHARE:.0%} of that is rank "
            f"{m80 if m80 is not None else '> ' + str(max(ranks, default=0))}; "
            f"the class-mean edit switches {pct(r.switch('supervised'))}, the whole SAE code "
            f"{pct(r.switch('sae_code_swap'))}, the top 16 SAE features {pct(r.switch('top16_features'))}, "
            f"16 chosen greedily to match the donor's difference (Makelov et al.'s sae_opt) {pct(r.switch('sae_opt16'))} "
            f"and the labelled single features {pct(lab.share)} ({opt(lab.covered, 0)} of the {r.n_heldout} pairs have "
            f"a bridge=b or b' feature there) (a random rank-16 subspace: "
            f"{pct(r.switch('random'))}). "
            + (f"Target (a unit of rank ≤ {TARGET_RANK} reaching {TARGET_SHARE:.0%} of the patch on held-out prefixes): **met** by "
               + ", ".join(f"{n} ({pct(u.switch)})" for n, u in sorted(small, key=lambda t: t[1].size)[:3]) + "."
               if small else f"Target (a unit of rank ≤ {TARGET_RANK} reaching {TARGET_SHARE:.0%} of the patch): **not met**; the curve "
               "above is the measurement.") + erase_txt, "")


def _erase_table(doc: Doc, rows: list[VariableRow]) -> None:
    """Necessity: held-out accuracy and a refitted held-out probe of b with a unit erased at (hook, r1)."""
    ers = [r.erase for r in rows]
    if not any(ers):
        return
    k = opt(ers[0].rank)
    names = (("none", "nothing erased"), (f"leace_rank{k}", f"LEACE, the bridge's top-{k} class-mean coordinates"),
             ("leace_full", "LEACE, the one-hot bridge (every class)"),
             (f"mean_proj_supervised_rank{k}", f"mean projection, top {k} class-mean directions"),
             (f"mean_proj_das_rank{k}", f"mean projection, DAS rank {k}"),
             (f"random_rank{k}", f"mean projection, random rank-{k} subspace (mean of draws)"))
    doc.add(f"**Necessity.** Held-out accuracy ({opt(ers[0].n_questions)} questions) / a probe of b refitted on the erased fit "
            "prefixes and scored on the erased held-out prefixes:", "",
            "| erased at r1 | " + " | ".join(f"`{r.hook}`" for r in rows) + " |", "|---|" + "---|" * len(rows))
    for key, label in names:
        cells = [f"{pct(e.get(key).acc)} / {pct(e.get(key).probe)}" if e.get(key) else "–" for e in ers]
        doc.add(f"| {label} | " + " | ".join(cells) + " |")
    doc.add("")
