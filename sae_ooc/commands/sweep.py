"""Run a grid of experiments (a sweep YAML) and draw its phase diagram: where does out-of-context composition appear?

Each grid point is its own run directory under the sweep's directory (default runs/sweeps/<sweep name>), through
the pipeline's data and train stages, as an independent process (submitit: its local executor, or SLURM with
--cluster slurm). A rerun skips finished points and resumes an interrupted one from its last checkpoint. Writes
SWEEP_DIR/sweep.json, table.md and phase_<name>.png/.svg (final test_id, test_ood_sys, steps to valid_id >= 0.9; with seeds, their mean and range).
"""

import os
from pathlib import Path

RESUMABLE = True  # a rerun continues from its checkpoints (sae_ooc.cli.interrupted_hint)

# no --device: run_point makes CPU run directories (RunDir's default device), which a --device here would not reach
COMMON = {"force": False, "overrides": False, "config": False, "run": False, "device": False}


def add_arguments(p) -> None:
    p.add_argument("sweep", type=Path, help="the sweep YAML, e.g. configs/sweeps/simplest.yaml")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="points run at once (default: the number of cores)")
    p.add_argument("--cluster", choices=("local", "slurm"), default="local", help="submitit executor")
    p.add_argument("--out", type=Path, default=None, help="sweep directory (default: the YAML's `out`, else runs/sweeps/<name>)")
    p.add_argument("--slurm", dest="slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="a submitit SLURM parameter, e.g. --slurm partition=gpu --slurm timeout_min=60 (repeatable)")


def main(args) -> int:
    from sae_ooc.sweep.runner import run_sweep

    res = run_sweep(args.sweep, jobs=args.jobs, cluster=args.cluster, out=args.out, slurm=args.slurm)
    print(res["text"])
    return 0 if res["all_done"] else 1
