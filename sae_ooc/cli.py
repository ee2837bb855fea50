"""`sae-ooc`: a thin command line over the stage functions. Every stage is also a plain Python function.

Errors the user can fix print one line and exit 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from sae_ooc.config import Config, load_config
from sae_ooc.errors import UserError
from sae_ooc.rundir import RunDir, default_run_dir

# Each module named here defines `add_arguments(parser)` and `main(run, args)`; its docstring's first
# line is the subcommand's help. Order is the pipeline's order.
STAGE_COMMANDS: dict[str, str] = {
    "data": "sae_ooc.commands.data",
    "train": "sae_ooc.commands.train",
    "harvest": "sae_ooc.commands.harvest",
    "train-sae": "sae_ooc.commands.train_sae",
    "eval-sae": "sae_ooc.commands.eval_sae",
    "attribute": "sae_ooc.commands.attribute",
    "circuit": "sae_ooc.commands.circuit",
    "export": "sae_ooc.commands.export",
    "report": "sae_ooc.commands.report",
}
OTHER_COMMANDS: dict[str, str] = {
    "pipeline": "sae_ooc.commands.pipeline",
    "query": "sae_ooc.commands.query",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other user error
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="experiment YAML (default: RUN/config.yaml if it exists, else configs/default.yaml's built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--run", type=Path, default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--force", action="store_true", help="recompute even if the inputs are unchanged")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def resolve_run(args) -> RunDir:
    """Config from --config (or the run's saved config.yaml), overrides applied, run dir chosen."""
    cfg_path = args.config
    if cfg_path is None and args.run is not None and (Path(args.run) / "config.yaml").exists():
        cfg_path = Path(args.run) / "config.yaml"
    cfg: Config = load_config(cfg_path, args.overrides)
    if cfg_path is not None and cfg_path.name == "config.yaml" and args.run is not None and cfg_path.parent == Path(args.run):
        pass  # the run's own saved config keeps its recorded name
    root = Path(args.run) if args.run is not None else default_run_dir(cfg)
    run = RunDir(root, cfg)
    run.device = args.device
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sae-ooc",
        description="Find how a transformer does out-of-context two-hop inference: "
        "data → train → harvest → train-sae → eval-sae → attribute → circuit → export / query → report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, modname in {**STAGE_COMMANDS, **OTHER_COMMANDS}.items():
        mod = importlib.import_module(modname)
        doc = (mod.__doc__ or name).strip()
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common(p)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        run = resolve_run(args)
        return int(args._module.main(run, args) or 0)
    except UserError as e:
        if args.debug:
            raise
        print(f"sae-ooc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"sae-ooc {args.command}: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
