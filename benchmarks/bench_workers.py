"""Stages with a second process (`sae.workers`, `circuit.workers`) against the same stage in one process.

Each stage runs twice on its own copy of the run, `--force`, one process (workers=1) then two (workers=2), one after
the other on the same machine; for each: wall-clock seconds and CPU seconds (user + sys of the stage's process and
every process it started: two processes cost a little more, their imports and loads, while taking less time). The
outputs of the two are then compared file by file (sha256), leaving out only what records time: the SAEs' and
their metrics' `training.seconds` / `tokens_per_s`, the training logs' timing columns and the PNG/SVG figures (the
curves they draw are those of the compared logs; matplotlib stamps SVGs with ids).

    python benchmarks/bench_workers.py --run runs/default [--stages train-sae,eval-sae,circuit] [--tmp /tmp/bench]

The run is only read: the copies go to `--tmp` (deleted afterwards unless --keep).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = {"train-sae": "sae.workers", "eval-sae": "sae.workers", "circuit": "circuit.workers"}
OUT = {"train-sae": "saes", "eval-sae": "sae_eval", "circuit": "circuit"}
TIMING = {"seconds", "tokens_per_s", "elapsed_s", "seconds_on_selection_pairs", "root", "run"}  # timings, the copy's own path


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def digest(path: Path) -> str:
    """sha256 of a file, JSON (and JSONL) with timing fields left out."""
    if path.suffix == ".json":
        return hashlib.sha256(json.dumps(_clean(json.loads(path.read_text())), sort_keys=True).encode()).hexdigest()
    if path.suffix == ".jsonl":
        rows = [_clean(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file() and p.suffix not in (".png", ".svg")}


def run_stage(run: Path, stage: str, workers: int) -> dict:
    """Run one stage in a fresh process: wall-clock and CPU seconds (its worker processes included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "sae_ooc.cli", stage, "--run", str(run), "--force", "--set", f"{KEY[stage]}={workers}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{stage} (workers {workers}) failed:\n{res.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--stages", default="train-sae,eval-sae,circuit")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    tmp = Path(a.tmp or tempfile.mkdtemp(prefix="bench_workers_"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load0 = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average {load0:.1f}; run {a.run}")
    for stage in a.stages.split(","):
        res, outs = {}, {}
        for w in (1, 2):
            copy = tmp / f"{stage}-w{w}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(a.run, copy)
            res[w] = run_stage(copy, stage, w)
            outs[w] = outputs(copy / OUT[stage])
        differ = sorted(k for k in outs[1].keys() | outs[2].keys() if outs[1].get(k) != outs[2].get(k))
        print(f"{stage}: one process {res[1]['wall']:.1f} s wall, {res[1]['cpu']:.1f} CPU-s; two processes {res[2]['wall']:.1f} s wall, "
              f"{res[2]['cpu']:.1f} CPU-s; wall two / one = {res[2]['wall'] / res[1]['wall']:.2f}; "
              f"{len(outs[1])} output files, differing: {differ or 'none'}")
        if not a.keep:
            for w in (1, 2):
                shutil.rmtree(tmp / f"{stage}-w{w}", ignore_errors=True)
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
