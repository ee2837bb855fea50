"""CLI adapters, one module per subcommand: argument parsing and a one-line summary, nothing else.

A stage's module defines
    summarize(run, result) -> str  what to print after `sae_ooc.pipeline.run_stage` returns `result`
and, when the stage takes options,
    add_arguments(parser)          its own options (the common ones come from sae_ooc.cli.add_common)
    options(args) -> dict          keyword options of its stage function, from the parsed arguments
and `sae-ooc <stage>` and `sae-ooc pipeline` both go through `run_stage_command` below. Other commands
(pipeline, query) define `main(run, args)`. No module here imports torch at import time.
"""

from __future__ import annotations


def verb(result, done: str = "wrote") -> str:
    return done if result.ran else "unchanged, skipped"


def add_arguments(mod, parser) -> None:
    if hasattr(mod, "add_arguments"):
        mod.add_arguments(parser)


def options(mod, args) -> dict:
    return mod.options(args) if hasattr(mod, "options") else {}


def run_stage_command(name: str, mod, run, args) -> int:
    from sae_ooc.pipeline import run_stage

    run.check_and_save_config(force=getattr(args, "force", False))
    result = run_stage(run, name, force=getattr(args, "force", False), **options(mod, args))
    print(mod.summarize(run, result))
    return 0
