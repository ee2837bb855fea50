"""A sweep's results: SWEEP_DIR/sweep.json (every run, and per setting the spread over its seeds), table.md and the
phase diagram, and the smallest setting that composed (test_id >= COMPOSED on held-out inferred facts, with
atomic_test >= ATOMIC, as the report's verdict)."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.io import write_text
from sae_ooc.stats import spread, spread_text
from sae_ooc.sweep.result import ATOMIC, COMPOSED, SweepPoint, SweepResult, SweepSetting
from sae_ooc.sweep.spec import SEED_KEYS
from sae_ooc.viz.phase_plots import plot_phase


def smallest(recs: list[SweepPoint]) -> SweepPoint | None:
    """The composing point with the fewest distinct parameters (ties: fewer steps to test_id >= 0.9)."""
    ok = [r for r in recs if r.composed]
    return min(ok, key=lambda r: (r.unique_parameters, r.test_id_0_9_step or 10**12)) if ok else None


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _steps(step: int | None, r: SweepPoint) -> str:
    return f"not by {r.steps}" if step is None else str(step)  # not reached within the steps it ran (budget, or stopped early)


def _key(values: dict) -> tuple:
    return tuple(sorted(values.items(), key=str))


def settings(points, done: dict[str, SweepPoint]) -> list[tuple[dict, list[SweepPoint]]]:
    """[(grid values, finished records of its seeds)] in grid order: one setting per grid point, whatever its seeds."""
    out: dict[tuple, tuple[dict, list]] = {}
    for p in points:
        _, recs = out.setdefault(_key(p.values), (p.values, []))
        if p.slug in done:
            recs.append(done[p.slug])
    return list(out.values())


SPREAD = (("test_id", lambda r: r.accuracy["test_id"]), ("test_ood_sys", lambda r: r.accuracy.get("test_ood_sys")),
          ("test_unanswerable", lambda r: r.accuracy.get("test_unanswerable")), ("valid_id_0.9_step", lambda r: r.valid_id_0_9_step))


def write_summary(sw, root: Path, points, done: dict[str, SweepPoint]) -> dict:
    keys = list(sw.grid)
    seeds = getattr(sw, "seeds", None)
    recs = [done[p.slug] for p in points if p.slug in done]
    lines = [f"# Sweep `{sw.name}` ({len(recs)} of {len(points)} runs finished)", "",
             f"Each run trains from scratch (data + train stages) with `{sw.path}`; composition = test_id ≥ {COMPOSED} and "
             f"atomic_test ≥ {ATOMIC}. test_id: held-out inferred facts (never used to stop or choose); test_ood_sys: Wang et al. "
             "2024's systematic split (inferred facts made only of atomic facts that were trained but used by no inferred training "
             "fact); test_unanswerable: inferred facts whose atomic fact was never trained (no model can answer them beyond "
             "chance). Steps to ≥ 0.9 are at the periodic evaluations (train.eval_every).", "",
             "| " + " | ".join(keys) + (" | seed" if seeds else "") + " | unique params | steps | test_id | test_ood_sys | test_unanswerable "
             "| steps to valid_id ≥ 0.9 | steps to test_id ≥ 0.9 | valid_id | atomic_test | composed |",
             "|" + "---|" * (len(keys) + (1 if seeds else 0) + 11)]
    for p in points:
        r = done.get(p.slug)
        vals = " | ".join(_fmt(p.values[k]) for k in keys) + (f" | {p.seed}" if seeds else "")
        if r is None:
            lines.append(f"| {vals} | not finished |" + " |" * 10)
            continue
        a = r.accuracy
        lines.append(f"| {vals} | {r.unique_parameters} | {r.steps} | {a['test_id']:.3f} | {_fmt(a.get('test_ood_sys'))} | "
                     f"{_fmt(a.get('test_unanswerable'))} | {_steps(r.valid_id_0_9_step, r)} | {_steps(r.test_id_0_9_step, r)} | "
                     f"{a['valid_id']:.3f} | {a['atomic_test']:.3f} | {'yes' if r.composed else 'no'} |")
    recs_of = {_key(v): rs for v, rs in settings(points, done)}
    by_setting = [{"values": v, "n_runs": len(rs), **{k: spread([f(r) for r in rs]) for k, f in SPREAD},
                   "n_composed": sum(r.composed for r in rs)} for v, rs in settings(points, done)]
    if seeds:
        lines += ["", f"Across seeds {', '.join(map(str, seeds))} (task.seed and train.seed; mean [min, max] of the finished runs):", "",
                  "| " + " | ".join(keys) + " | runs | test_id | test_ood_sys | test_unanswerable | steps to valid_id ≥ 0.9 | composed |",
                  "|" + "---|" * (len(keys) + 6)]
        for st in by_setting:
            steps = st["valid_id_0.9_step"]
            reached = "" if steps is None or steps["n"] == st["n_runs"] else f" ({steps['n']} reached)"
            budget = max((r.steps for r in recs_of[_key(st["values"])]), default=None)  # None: no run finished
            lines.append("| " + " | ".join(_fmt(st["values"][k]) for k in keys) + f" | {st['n_runs']} | {spread_text(st['test_id'])} | "
                         f"{spread_text(st['test_ood_sys'])} | {spread_text(st['test_unanswerable'])} | "
                         f"{spread_text(steps, '.0f') if steps is not None or budget is None else f'not by {budget}'}{reached} | "
                         f"{st['n_composed']}/{st['n_runs']} |")
    best = smallest(recs)
    verdict = ("Smallest setting that composed: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best.values.items())
               + (f" (seed {best.seed})" if seeds else "")
               + f" ({best.unique_parameters} distinct parameters; test_id {best.accuracy['test_id']:.3f}, "
               f"test_ood_sys {_fmt(best.accuracy.get('test_ood_sys'))})") if best else "No point composed."
    lines += ["", verdict, "", f"![phase diagram](phase_{sw.name}.png)", ""]
    write_text(root / "table.md", "\n".join(lines))
    SweepResult(name=sw.name, grid=sw.grid, axes=list(sw.axes()), seeds=seeds, seed_keys=list(SEED_KEYS) if seeds else [],
                composed_threshold=COMPOSED, points=recs, settings=[SweepSetting.from_json(s) for s in by_setting], smallest_composed=best,
                n_points=len(points)).save(root)
    figs = plot_phase(sw, points, done, root / f"phase_{sw.name}") if recs else []  # named per sweep: the report copies several into one folder
    files = f"sweep.json, sweep.log.txt, table.md{f', phase_{sw.name}.{{png,svg}}' if figs else ''}, points/<point>/ (a run directory each)"
    return {"text": f"sweep {sw.name}: {len(recs)}/{len(points)} runs finished; {verdict} Wrote {root}/ ({files})",
            "smallest": best, "figures": figs}
