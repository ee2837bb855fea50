"""Run every stage in order (data, train, ...), skipping those whose inputs and outputs are unchanged.

On the default run directory (runs/default with configs/default.yaml) the report is also copied to results/;
elsewhere only `sae-ooc report --out DIR` writes outside the run directory.

--seeds 0,1,2 runs the config once per seed into sibling run directories RUN-seed0, RUN-seed1, ... (RUN: --run, or
runs/<config name>) and then `sae-ooc compare`s them into RUN-seeds/. The seed set is train.seed (the model's
initialisation and data order; the task, its facts and splits, stays the same, so SAE features can be compared on
the same prompts); --seed-key task.seed draws a new task per seed instead.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from sae_ooc import commands
from sae_ooc.stages import STAGES

COMMON = {"overrides": True, "force": True}


SEED_KEYS = ("train.seed", "task.seed")


def seed_list(text: str) -> list[int]:
    """--seeds: two or more distinct integers, comma-separated."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"must be two or more distinct integers separated by commas, e.g. 0,1,2; got {text!r}")
    return seeds


def add_arguments(p) -> None:
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run (default: every stage but the separate commands, e.g. dynamics)")
    p.add_argument("--seeds", type=seed_list, default=None, metavar="S,S,...",
                   help="run once per seed into RUN-seed<S>, then compare them into RUN-seeds/")
    p.add_argument("--seed-key", choices=SEED_KEYS, default="train.seed",
                   help="the config key --seeds sets (train.seed: same task, new model; task.seed: a new task too)")


def stage_defaults(mod) -> argparse.Namespace:
    """A stage command's own option defaults, as if it were run with no options."""
    p = argparse.ArgumentParser()
    commands.add_arguments(mod, p)
    return p.parse_args([])


def seed_runs(run, args) -> int:
    """--seeds: the pipeline once per seed in a sibling run directory, then compare into RUN-seeds/."""
    from sae_ooc.compare.run import check_out, run_compare
    from sae_ooc.config import load_config
    from sae_ooc.rundir import RunDir
    from sae_ooc.runlock import run_lock

    root = Path(run.root)
    out = root.parent / f"{root.name}-seeds"
    check_out(out)  # refused now, not after every seed has run
    base = args.config if args.config is not None else (root / "config.yaml" if (root / "config.yaml").is_file() else None)
    roots = []
    for seed in args.seeds:
        cfg = load_config(base, [*args.overrides, f"{args.seed_key}={seed}"])
        seed_run = RunDir(root.parent / f"{root.name}-seed{seed}", cfg, device=run.device)
        print(f"pipeline: {args.seed_key}={seed} into {seed_run.root}")
        with run_lock(seed_run.root):
            if main(seed_run, argparse.Namespace(**{**vars(args), "seeds": None})) != 0:
                print(f"pipeline: {seed_run.root} did not finish; rerun the same command to continue (compare not run)")
                return 1
        roots.append(seed_run.root)
    res = run_compare(roots, out)
    print(f"compare: {len(roots)} seeds, {len(res['table']['rows'])} shared numbers; wrote {out}/compare.md")
    return 0


def main(run, args) -> int:
    if getattr(args, "seeds", None):
        return seed_runs(run, args)
    from sae_ooc.pipeline import run as run_pipeline
    from sae_ooc.rundir import default_run_dir

    mods = {s.name: importlib.import_module(s.command) for s in STAGES}
    options = {name: commands.options(mod, stage_defaults(mod)) for name, mod in mods.items()}
    if run.cfg.name == "default" and Path(run.root).resolve() == default_run_dir(run.cfg).resolve():
        from sae_ooc.report.out import check_out

        check_out(Path("results"))  # a file the report did not write is refused now, not after every stage has run
        options["report"]["out"] = Path("results")
    names = args.stages.split(",") if args.stages else None

    def show(result) -> None:
        print(mods[result.name].summarize(run, result))

    results = run_pipeline(run, stages=names, force=args.force, options=options, on_result=show)
    return 0 if all(r.finished for r in results) else 1
