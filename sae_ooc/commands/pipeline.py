"""Run every stage in order (data, train, ...), skipping those whose inputs and outputs are unchanged.

On the default run directory (runs/default with configs/default.yaml) the report is also copied to results/;
elsewhere only `sae-ooc report --out DIR` writes outside the run directory.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from sae_ooc import commands
from sae_ooc.stages import STAGES

COMMON = {"overrides": True, "force": True}


def add_arguments(p) -> None:
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run (default: every stage but the separate commands, e.g. dynamics)")


def stage_defaults(mod) -> argparse.Namespace:
    """A stage command's own option defaults, as if it were run with no options."""
    p = argparse.ArgumentParser()
    commands.add_arguments(mod, p)
    return p.parse_args([])


def main(run, args) -> int:
    from sae_ooc.pipeline import run as run_pipeline
    from sae_ooc.rundir import default_run_dir

    mods = {s.name: importlib.import_module(s.command) for s in STAGES}
    options = {name: commands.options(mod, stage_defaults(mod)) for name, mod in mods.items()}
    if run.cfg.name == "default" and Path(run.root).resolve() == default_run_dir(run.cfg).resolve():
        from sae_ooc.viz.report.out import check_out

        check_out(Path("results"))  # a file the report did not write is refused now, not after every stage has run
        options["report"]["out"] = Path("results")
    names = args.stages.split(",") if args.stages else None

    def show(result) -> None:
        print(mods[result.name].summarize(run, result))

    results = run_pipeline(run, stages=names, force=args.force, options=options, on_result=show)
    return 0 if all(r.finished for r in results) else 1
