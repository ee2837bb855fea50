"""Run every stage in order (data, train, ...), skipping those whose inputs are unchanged."""

from __future__ import annotations

import argparse
import importlib


def add_arguments(p) -> None:
    pass


def _common_dests() -> set[str]:
    from sae_ooc.cli import add_common

    p = argparse.ArgumentParser()
    add_common(p)
    return {a.dest for a in p._actions if a.dest != "help"}


def stage_args(modname: str, args) -> argparse.Namespace:
    """The stage's own parser defaults, with the common options (--config, --set, --run, ...) from `args`."""
    from sae_ooc.cli import add_common

    mod = importlib.import_module(modname)
    p = argparse.ArgumentParser()
    add_common(p)
    mod.add_arguments(p)
    ns = p.parse_args([])
    for dest in _common_dests():
        if hasattr(args, dest):
            setattr(ns, dest, getattr(args, dest))
    ns._module = mod
    return ns


def main(run, args) -> int:
    from sae_ooc.cli import STAGE_COMMANDS

    for name, modname in STAGE_COMMANDS.items():
        ns = stage_args(modname, args)
        ns.command = name
        rc = int(ns._module.main(run, ns) or 0)
        if rc != 0:
            print(f"pipeline: stage '{name}' exited with {rc}; stopping")
            return rc
    return 0
