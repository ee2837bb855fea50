"""`sae-ooc`: a thin command line over `sae_ooc.pipeline` and the stage functions.

Subcommands come from the stage table (sae_ooc.stages) plus `pipeline`, `query`, `serve` and the others in OTHER_COMMANDS. Errors the user can fix
print one line and exit 2; `--debug` shows the traceback instead. Nothing heavy is imported before a command
runs, so `--help`, `--version` and config errors answer at once.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import re
import sys
from pathlib import Path

from sae_ooc import __version__
from sae_ooc import commands as commands_mod
from sae_ooc.errors import UserError
from sae_ooc.stages import PIPELINE_STAGES, STAGES

# Each module here defines `add_arguments(parser)` and `main(run, args)`; its docstring's first line is the
# subcommand's help. `COMMON` says which common options it takes (query and report have no use for --force or
# --set, and query none for --config: it reads the run as it is).
OTHER_COMMANDS: dict[str, str] = {
    "pipeline": "sae_ooc.commands.pipeline",
    "query": "sae_ooc.commands.query",
    "serve": "sae_ooc.commands.serve",  # the browser and a live query API from one process
    "sweep": "sae_ooc.commands.sweep",
    "compare": "sae_ooc.commands.compare",  # many finished runs side by side (seeds, sizes, families)
    "finetune": "sae_ooc.commands.finetune",  # the train stage, refusing a scratch model.source
}
_CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)
DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other user error
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's line breaks and shows every option's default: as a value where it has one, in the
    help's own words where it says "default" (a default of None or False printed as such says nothing)."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if "default" in text or d is None or d is False or d == [] or d is argparse.SUPPRESS:  # `is`: 0 is a default to show
            return text
        return super()._get_help_string(action)


def add_common(p: argparse.ArgumentParser, force: bool = True, overrides: bool = True, config: bool = True, run: bool = True,
               device: bool = True) -> None:
    """The options every command shares; a command leaves out those that mean nothing to it (COMMON; `run=False`: a
    command over many run directories, whose `main(args)` gets no RunDir)."""
    if config:
        p.add_argument("--config", type=Path, default=None,
                       help="experiment YAML (default: RUN/config.yaml if it exists, else the built-in defaults of configs/default.yaml)")
    if overrides:
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.lr=3e-4 (repeatable)")
    if run:  # without --config the config is the built-in default, named "default"
        p.add_argument("--run", type=Path, default=None, help=f"run directory (default: {'runs/<config name>' if config else 'runs/default'})")
    if force:
        p.add_argument("--force", action="store_true", help="recompute even if the inputs are unchanged")
    if device:
        p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def check_device(device: str) -> str:
    """Fail at once, in one line, on a device this torch cannot use (not deep inside a stage)."""
    if not DEVICE_RE.match(device):
        raise UserError(f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps")
    if device == "cpu":
        return device
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: this torch ({torch.__version__}) has no CUDA or sees no GPU; use --device cpu")
        idx = int(device.split(":")[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible; use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available on this machine; use --device cpu")
    return device


def resolve_run(args):
    """Config from --config (or the run's saved config.yaml), overrides applied, run dir chosen, device checked."""
    from sae_ooc.config import load_config
    from sae_ooc.rundir import RunDir, default_run_dir

    if args.run is not None:
        # the run itself, or a folder above it (`--run results.txt/x`), must not be a file: mkdir would fail deep inside a stage
        for p in (Path(args.run), *Path(args.run).parents):
            if p.exists() and not p.is_dir():
                where = "" if p == Path(args.run) else f" (in --run {args.run})"
                raise UserError(f"--run: {p} is a file, not a directory{where}; pass a directory (it is created if missing)")
    cfg_path = getattr(args, "config", None)
    # a command without --config (query) reads the run's files, not its config: an old or damaged config.yaml
    # must not stop it, so it gets the built-in defaults
    if cfg_path is None and hasattr(args, "config") and args.run is not None and (Path(args.run) / "config.yaml").is_file():
        cfg_path = Path(args.run) / "config.yaml"
    cfg = load_config(cfg_path, getattr(args, "overrides", []))
    root = Path(args.run) if args.run is not None else default_run_dir(cfg)
    return RunDir(root, cfg, device=check_device(args.device))


def commands() -> dict[str, str]:
    return {**{s.name: s.command for s in STAGES}, **OTHER_COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sae-ooc",
        description="Find how a transformer does out-of-context two-hop inference. Stages, in order: "
        + " → ".join(PIPELINE_STAGES) + "; `sae-ooc pipeline` runs them all, `sae-ooc query` asks about one prompt; "
        "`sae-ooc dynamics` (over training checkpoints), `sae-ooc sweep` (a grid of runs) and `sae-ooc compare` (runs side by "
        "side) are run on their own.",
    )
    parser.add_argument("--version", action="version", version=f"sae-ooc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, modname in commands().items():
        mod = importlib.import_module(modname)
        doc = (mod.__doc__ or name).strip()
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc, formatter_class=_Formatter)
        add_common(p, **getattr(mod, "COMMON", {}))
        commands_mod.add_arguments(mod, p)
        p.set_defaults(_module=mod, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the subcommand that refused them (`sae-ooc query: ... --set`), pointing at its own --help
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    def command() -> int:
        if getattr(args._module, "COMMON", {}).get("run", True) is False:
            return int(args._module.main(args) or 0)
        from sae_ooc.runlock import run_lock

        run = resolve_run(args)
        # one writer per run directory (query only reads, beside other queries): a second command stops in one line
        with run_lock(run.root, shared=getattr(args._module, "SHARED_LOCK", False)):
            if hasattr(args._module, "summarize"):
                from sae_ooc.commands import run_stage_command

                return run_stage_command(args.command, args._module, run, args)
            return int(args._module.main(run, args) or 0)

    return guarded(f"sae-ooc {args.command}", args.debug, command, on_interrupt=interrupted_hint(args))


def interrupted_hint(args) -> str:
    """What to say after Ctrl-C: "resume" only where it is true. A command's module sets RESUMABLE when a rerun
    continues from its checkpoints (train, harvest, train-sae, sweep); --force starts them from scratch again; the
    pipeline skips the stages that finished."""
    mod = getattr(args, "_module", None)
    if getattr(args, "force", False):
        if args.command == "pipeline":
            return ("interrupted; the stages that finished are recorded: rerun without --force to keep them (with --force "
                    "everything is recomputed from scratch again)")
        return "interrupted; the stage is not recorded as done (a rerun with --force starts again from scratch)"
    if args.command == "pipeline":
        return "interrupted; run the same command again to continue: finished stages are skipped (train, harvest and train-sae resume from their last checkpoint)"
    if getattr(mod, "RESUMABLE", False):
        return "interrupted; run the same command again to resume from the last checkpoint"
    if hasattr(mod, "summarize"):
        return "interrupted; the stage is not recorded as done: run the same command again to run it from the start"
    return "interrupted"


def guarded(prog: str, debug: bool, fn, on_interrupt: str = "interrupted") -> int:
    """Run `fn()`: a UserError becomes one line on stderr and exit 2 (`--debug`: the traceback), Ctrl-C exit 130 with
    `on_interrupt` on stderr."""
    try:
        return fn()
    except UserError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `sae-ooc query ... | head`: the reader left; end quietly (and keep Python from complaining at exit)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        # a run on a read-only file system, a folder of someone else's, a full disk: one line naming the path
        if debug or e.errno not in _CANNOT_WRITE:
            raise
        print(f"{prog}: error: {e.strerror}: {e.filename or 'a file it writes'}; this command writes there: make it writable "
              f"by you, or copy the run (cp -a RUN COPY) and pass --run COPY", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: {on_interrupt}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
