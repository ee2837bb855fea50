"""A sweep's results: SWEEP_DIR/sweep.json (every point), table.md and the phase diagram, and the smallest setting
that composed (test_id >= COMPOSED on held-out two-hop facts, with atomic_test >= ATOMIC, as the report's verdict)."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.io import write_text
from sae_ooc.sweep.result import ATOMIC, COMPOSED, SweepPoint, SweepResult
from sae_ooc.viz.phase_plots import plot_phase


def smallest(recs: list[SweepPoint]) -> SweepPoint | None:
    """The composing point with the fewest distinct parameters (ties: fewer steps to test_id >= 0.9)."""
    ok = [r for r in recs if r.composed]
    return min(ok, key=lambda r: (r.unique_parameters, r.test_id_0_9_step or 10**12)) if ok else None


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def write_summary(sw, root: Path, points, done: dict[str, SweepPoint]) -> dict:
    keys = list(sw.grid)
    recs = [done[p.slug] for p in points if p.slug in done]
    lines = [f"# Sweep `{sw.name}` ({len(recs)} of {len(points)} points finished)", "",
             f"Each point trains from scratch (data + train stages) with `{sw.path}`; composition = test_id ≥ {COMPOSED} and "
             f"atomic_test ≥ {ATOMIC}. test_id: held-out two-hop facts (never used to stop or choose); test_ood: two-hop facts "
             "whose atomic fact was held out (no model can answer them beyond chance). Steps to test_id ≥ 0.9 are at the "
             "periodic evaluations (train.eval_every).", "",
             "| " + " | ".join(keys) + " | unique params | steps | test_id | steps to test_id ≥ 0.9 | test_ood | valid_id | atomic_test | composed |",
             "|" + "---|" * (len(keys) + 8)]
    for p in points:
        r = done.get(p.slug)
        vals = " | ".join(_fmt(p.values[k]) for k in keys)
        if r is None:
            lines.append(f"| {vals} | not finished |" + " |" * 7)
            continue
        a = r.accuracy
        lines.append(f"| {vals} | {r.unique_parameters} | {r.steps} | {a['test_id']:.3f} | {_fmt(r.test_id_0_9_step)} | "
                     f"{a['test_ood']:.3f} | {a['valid_id']:.3f} | {a['atomic_test']:.3f} | {'yes' if r.composed else 'no'} |")
    best = smallest(recs)
    verdict = ("Smallest setting that composed: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best.values.items())
               + f" ({best.unique_parameters} distinct parameters; test_id {best.accuracy['test_id']:.3f}, "
               f"test_ood {best.accuracy['test_ood']:.3f})") if best else "No point composed."
    lines += ["", verdict, "", f"![phase diagram](phase_{sw.name}.png)", ""]
    write_text(root / "table.md", "\n".join(lines))
    SweepResult(name=sw.name, grid=sw.grid, axes=list(sw.axes()), composed_threshold=COMPOSED, points=recs, smallest_composed=best,
                n_points=len(points)).save(root)
    figs = plot_phase(sw, points, done, root / f"phase_{sw.name}") if recs else []  # named per sweep: the report copies several into one folder
    files = f"sweep.json, sweep.log.txt, table.md{f', phase_{sw.name}.{{png,svg}}' if figs else ''}, points/<point>/ (a run directory each)"
    return {"text": f"sweep {sw.name}: {len(recs)}/{len(points)} points finished; {verdict} Wrote {root}/ ({files})",
            "smallest": best, "figures": figs}
