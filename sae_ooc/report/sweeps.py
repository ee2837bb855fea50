"""Report section: the simplest-setup sweeps (`sae-ooc sweep`), when any has been run beside this run.

A sweep is many runs, so no stage of this run owns it: the section reads every `sweep.json` under the sweeps folder
next to the run directory (runs/sweeps/<name>/ for runs/default, where `sae-ooc sweep` writes by default).
"""

from __future__ import annotations

from sae_ooc.report.doc import Doc
from sae_ooc.records import opt
from sae_ooc.stats import spread_text
from sae_ooc.sweep.result import SweepResult
from sae_ooc.tasks.families import asked


def _val(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _same_task(sweep_dir, run) -> bool:
    """Whether the sweep varies this run's task: its points' task section equals the run's apart from the task keys
    the sweep's grid varies (a sweep of another task, e.g. the toy's beside a natural-language run, says nothing here)."""
    from dataclasses import asdict

    from sae_ooc.config import load_config

    sw = SweepResult.load_if(sweep_dir)
    keys = [*sw.grid, *opt(sw.seed_keys, [])] if sw else []
    varied = {k.split(".", 1)[1].split(".")[0] for k in keys if k.startswith("task.")}
    for cfg in sorted((sweep_dir / "points").glob("*/config.yaml"))[:1]:
        try:
            theirs = asdict(load_config(cfg).task)
        except Exception:  # an unreadable or outdated point config: it cannot be matched
            return False
        ours = asdict(run.cfg.task)
        return {k: v for k, v in theirs.items() if k not in varied} == {k: v for k, v in ours.items() if k not in varied}
    return True  # no point written yet: nothing to tell it apart


def _acc(a: dict, split: str) -> str:
    """A split's accuracy, — for a point written before the split existed."""
    return "—" if a.get(split) is None else f"{a[split]:.3f}"


def sweep_section(doc: Doc) -> None:
    run = doc.run
    beside = sorted((run.root.parent / "sweeps").glob("*/sweep.json"))
    found = [p for p in beside if _same_task(p.parent, run)]
    doc.heading("sweep", f"The simplest-setup sweeps: what is the smallest model that {asked(run.cfg.task.family, 's')}?")
    if beside and not found:
        doc.add(f"No sweep of this run's task: the sweeps beside it ({', '.join(p.parent.name for p in beside)}) vary another task.", "")
        return
    if not found:
        doc.add("Not run (a separate command over many runs): `sae-ooc sweep configs/sweeps/simplest.yaml`.", "")
        return
    doc.add("Each point trains the default task's model from scratch with one setting changed, stopping as the default run does "
            "(valid_id ≥ 0.92 and atomic ≥ 0.99, never test_id); *composed* = test_id ≥ 0.9 with atomic_test ≥ 0.99. test_id is "
            "held out of every choice; test_ood_sys is Wang et al. 2024's systematic split (atomic facts trained but used by no inferred "
            "training fact), test_unanswerable (a needed atomic fact never trained) the control no model can answer.", "")
    for path in found:
        sw = SweepResult.load(path.parent)
        axes, pts, name = list(sw.grid), sw.points, sw.name  # every grid key, varied or not
        seeded = bool(opt(sw.seeds))
        doc.add(f"**`{name}`** ({len(pts)} of {sw.n_points} points finished; grid "
                + ", ".join(f"`{k}` ∈ {{{', '.join(_val(v) for v in vals)}}}" for k, vals in sw.grid.items()) + "):", "",
                "| " + " | ".join(f"`{a}`" for a in axes) + (" | seed" if seeded else "") + " | distinct parameters | steps | test_id | "
                "steps to test_id ≥ 0.9 | test_ood_sys | test_unanswerable | composed |",
                "|" + "---|" * (len(axes) + 7 + seeded))
        for p in pts:
            a = p.accuracy
            ok = a["test_id"] >= sw.composed_threshold and a["atomic_test"] >= 0.99
            doc.add("| " + " | ".join(_val(p.values[k]) for k in axes) + (f" | {opt(p.seed)}" if seeded else "")
                    + f" | {p.unique_parameters:,} | {p.steps:,} | {a['test_id']:.3f} | {p.test_id_0_9_step or '—'} | "
                    f"{_acc(a, 'test_ood_sys')} | {_acc(a, 'test_unanswerable')} | {'yes' if ok else 'no'} |")
        if seeded and opt(sw.settings):
            doc.add("", f"Across seeds {', '.join(map(str, sw.seeds))} (mean [min, max] of the finished runs):", "",
                    "| " + " | ".join(f"`{a}`" for a in axes) + " | runs | test_id | test_ood_sys | steps to valid_id ≥ 0.9 | composed |",
                    "|" + "---|" * (len(axes) + 5))
            for st in sw.settings:
                doc.add("| " + " | ".join(_val(st.values[k]) for k in axes) + f" | {st.n_runs} | {spread_text(st.test_id)} | "
                        f"{spread_text(st.test_ood_sys)} | {spread_text(st.valid_id_0_9_step, '.0f')} | {st.n_composed}/{st.n_runs} |")
        best = sw.smallest_composed
        if best:
            setting = ", ".join(f"`{k}` = {_val(v)}" for k, v in best.values.items())
            doc.add("", f"Smallest setting that composed here: {setting} ({best.unique_parameters:,} distinct parameters; test_id "
                    f"{doc.number(f'sweep.{name}.smallest_test_id', best.accuracy['test_id'], 'test_id of that point, chosen by its test_id', in_sample=True)}"
                    "; the point was chosen by test_id ≥ the threshold, so its test_id is in-sample).")
        else:
            doc.add("", "No point of this sweep composed.")
        fig = path.parent / f"phase_{name}.png"
        if fig.exists():
            doc.add("", f"![phase diagram of {name}]({fig.name})")
            doc.figure(fig, fig.with_suffix(".svg"))
        doc.add("", f"Reproduce: `sae-ooc sweep configs/sweeps/{name}.yaml --jobs 2` (finished points are skipped on a rerun).", "")
