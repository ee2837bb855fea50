"""Running a sweep: every point as an independent process through submitit, resumable, then its phase diagram.

A point is finished when SWEEP_DIR/points/<slug>/point.json exists for the same resolved config (its hash); a
rerun skips those without starting a process. Any other point runs the pipeline's data and train stages in its run
directory, which skip what is done and resume train from its last checkpoint, so a killed sweep continues where
it stopped. Processes: submitit's LocalExecutor (or its SLURM executor with cluster="slurm"), at most `jobs` at a
time; their logs are in SWEEP_DIR/.submitit/.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

from sae_ooc.errors import UserError
from sae_ooc.io import write_text
from sae_ooc.models.metrics import TrainMetrics
from sae_ooc.sweep.result import SweepPoint
from sae_ooc.sweep.spec import Point, Sweep, load_sweep

POINT_FILE = SweepPoint.FILE
STAGES = ("data", "train")  # all the phase diagram needs
POLL_S = 0.5


def run_point(run_dir: str, base: str | None, overrides: list[str], name: str, config_hash: str, values: dict,
              stop_after_steps: int | None = None, seed: int | None = None) -> dict | None:
    """One grid point (in its own process): data + train in `run_dir`, then point.json; None if train stopped early."""
    from sae_ooc.config import load_config
    from sae_ooc.models.hooked import load_model
    from sae_ooc.pipeline import run as run_pipeline
    from sae_ooc.rundir import RunDir

    cfg = load_config(base, overrides)
    cfg.name = name
    run = RunDir(run_dir, cfg)
    options = {"train": {"stop_after_steps": stop_after_steps}} if stop_after_steps is not None else {}
    results = run_pipeline(run, stages=list(STAGES), options=options)
    if not all(r.finished for r in results):
        return None
    fm = TrainMetrics.load(run.model_dir)
    model = load_model(run.model_dir)
    out = SweepPoint(slug=Path(run_dir).name, values=values, seed=seed, config_hash=config_hash,
                     unique_parameters=sum(p.numel() for p in model.parameters()),  # a tied block counts once
                     accuracy=fm.accuracy, majority_rate=fm.majority_rate, steps=fm.steps, minutes=fm.minutes,
                     stopped_early=fm.stopped_early, test_id_0_9_step=fm.test_id_0_9_step, valid_id_0_9_step=fm.valid_id_0_9_step,
                     max_steps=cfg.train.steps)
    out.save(run_dir)
    return out


def finished(point: Point, run_dir: Path) -> SweepPoint | None:
    if not SweepPoint.exists(run_dir):
        return None
    try:
        rec = SweepPoint.load(run_dir)
    except UserError:  # unreadable or of another format: the point runs again
        return None
    return rec if rec.config_hash == point.config_hash else None


def _executor(folder: Path, cluster: str, slurm: list[str]):
    try:
        import submitit
    except ImportError:
        raise UserError("sae-ooc sweep needs submitit; install it with `pip install 'sae_ooc[sweep]'` (or `pip install submitit`)") from None
    if cluster == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params = {}
        for kv in slurm:
            k, sep, v = kv.partition("=")
            if not sep:
                raise UserError(f"--slurm {kv!r}: expected KEY=VALUE, e.g. --slurm partition=gpu")
            params[k if k in ("timeout_min", "cpus_per_task", "mem_gb", "gpus_per_node") else f"slurm_{k}"] = int(v) if v.isdigit() else v
        ex.update_parameters(**{"timeout_min": 240, "cpus_per_task": 1, **params})
        return ex
    ex = submitit.LocalExecutor(folder=folder)
    ex.update_parameters(timeout_min=24 * 60)
    return ex


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _steps_done(run_dir: Path) -> int:
    """The last training step a point logged (RUN/model/metrics.jsonl, models.train.METRICS_FILE; importing that loads
    torch): the sweep's progress bar, polled while the point's own bar goes to its submitit log."""
    f = run_dir / "model" / "metrics.jsonl"
    try:
        with open(f, "rb") as fh:
            fh.seek(max(0, f.stat().st_size - 4096))
            last = [ln for ln in fh.read().splitlines() if ln.strip()][-1]
        return int(json.loads(last)["step"])
    except (OSError, IndexError, ValueError, KeyError, TypeError):  # not started, or a line being written
        return 0


@contextlib.contextmanager
def _quiet_children(log: Path):
    """Point submitit's local controller processes' stderr at `log`: on Ctrl-C (or the cancel below) each prints a
    KeyboardInterrupt traceback, which belongs in a log, not under the sweep's one-line message."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "a") as fh:
        os.dup2(fh.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _collect(ex, sw: Sweep, root: Path, todo: list[Point], jobs: int, stop_after_steps: dict | None, done: dict, failed: dict) -> None:
    """Submit `todo`, at most `jobs` running at once, and gather their point.json records into `done`."""
    pending, running = list(todo), {}
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    total = {p.slug: p.cfg.train.steps for p in todo}
    steps = {p.slug: min(_steps_done(root / "points" / p.slug), total[p.slug]) for p in todo}  # resumed points start part way
    bar = tqdm(total=sum(total.values()), initial=sum(steps.values()), desc="sweep: training steps", unit="step", dynamic_ncols=True)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                p = pending.pop(0)
                with _quiet_children(root / ".submitit" / "controllers.log"):
                    running[p.slug] = ex.submit(run_point, str(root / "points" / p.slug), None if sw.base is None else str(sw.base),
                                                p.overrides, p.cfg.name, p.config_hash, p.values, (stop_after_steps or {}).get(p.slug), p.seed)
            time.sleep(POLL_S)
            for slug in running:
                now = min(_steps_done(root / "points" / slug), total[slug])
                bar.update(max(0, now - steps[slug]))
                steps[slug] = max(steps[slug], now)
            for slug, job in list(running.items()):
                if not job.done():
                    continue
                del running[slug]
                bar.update(total[slug] - steps[slug])  # a point that stopped early (train.stop_at_valid_id) is done too
                steps[slug] = total[slug]
                try:
                    rec = job.result()
                except Exception as e:  # the point's own error: reported, the others go on
                    failed[slug] = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    continue
                if rec is not None:
                    done[slug] = rec
                    tqdm.write(f"  {slug}: test_id {rec.accuracy['test_id']:.3f}, test_ood_sys {rec.accuracy['test_ood_sys']:.3f}, "
                               f"test_unanswerable {rec.accuracy['test_unanswerable']:.3f} "
                          f"after {rec.steps} steps ({rec.minutes:.1f} min)")
    except BaseException:
        # Ctrl-C or a kill of the sweep: its point processes go too (a local job outlives its parent otherwise), so a
        # rerun is the only writer of their run directories; train resumes from their last checkpoints
        for job in running.values():
            job.cancel(check=False)
        raise
    finally:
        bar.close()
        if main_thread:
            signal.signal(signal.SIGTERM, old)


def run_sweep(sweep: str | Path | Sweep, jobs: int = 1, cluster: str = "local", out: Path | None = None, slurm: list[str] = (),
              stop_after_steps: dict[str, int] | None = None) -> dict:
    """Run every unfinished point (at most `jobs` at once), then write sweep.json, table.md and the phase diagram.

    `stop_after_steps` {slug: n}: that point's train stops after n steps as if killed (tests of resuming)."""
    from sae_ooc.sweep.summary import write_summary

    sw = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: must be at least 1")
    root = Path(out or sw.out or Path("runs") / "sweeps" / sw.name)
    points = sw.points()
    done: dict[str, SweepPoint] = {}
    todo: list[Point] = []
    for p in points:
        rec = finished(p, root / "points" / p.slug)
        if rec is not None:
            done[p.slug] = rec
        else:
            todo.append(p)
    print(f"sweep {sw.name}: {len(points)} points, {len(done)} finished (skipped), {len(todo)} to run, {min(jobs, max(len(todo), 1))} at a time "
          f"-> {root}", flush=True)
    failed: dict[str, str] = {}
    if todo:
        _collect(_executor(root / ".submitit", cluster, list(slurm)), sw, root, todo, jobs, stop_after_steps, done, failed)
    summary = write_summary(sw, root, points, done)
    text = summary["text"] + "".join(f"\n  {s}: FAILED ({why}); see {root / '.submitit'}" for s, why in failed.items())
    write_text(root / "sweep.log.txt", text + "\n")
    return {"root": root, "done": done, "failed": failed, "all_done": len(done) == len(points), "text": text, **summary}
