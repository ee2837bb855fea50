"""CLI adapters, one module per subcommand: argument parsing and a one-line summary, nothing else.

A stage's module defines
    summarize(run, result) -> str  what to print after `sae_ooc.pipeline.run_stage` returns `result`
and, when the stage takes options,
    add_arguments(parser)          its own options (the common ones come from sae_ooc.cli.add_common)
    options(args) -> dict          keyword options of its stage function, from the parsed arguments
    after(run, args) -> str|None   what the command does after the stage, run or skipped (not the pipeline), and its line
and `sae-ooc <stage>` and `sae-ooc pipeline` both go through `run_stage_command` below. Other commands
(pipeline, query) define `main(run, args)`. No module here imports torch at import time.
"""

from __future__ import annotations

import argparse
import re

_HOOK_DIR = re.compile(r"^(blocks\.\d+\.)?hook_\w+$")  # a TransformerLens hook name used as a folder name
_PADDED_INDEX = re.compile(r"\d{3,}")  # shard_00000, data-00000-of-00001


def verb(result, done: str = "wrote") -> str:
    return done if result.ran else "unchanged, skipped"


def _pattern(part: str, is_dir: bool) -> str:
    if is_dir:
        return "<hook_name>" if _HOOK_DIR.match(part) else re.sub(r"\d+", "<n>", part)
    return _PADDED_INDEX.sub("<n>", part)


def _render(node: dict) -> str:
    """'a.{png,svg}, b.json, {x,y}/ (...)': files by stem, then folders, folders with the same contents merged."""
    stems: dict[str, list[str]] = {}
    for name in sorted(node.get("", ())):
        stem, dot, ext = name.rpartition(".")
        stems.setdefault(stem if dot else name, []).append(ext if dot else "")
    parts = [stem + ("" if exts == [""] else "." + (exts[0] if len(exts) == 1 else "{" + ",".join(exts) + "}"))
             for stem, exts in stems.items()]
    by_contents: dict[str, list[str]] = {}
    for name in sorted(k for k in node if k):
        by_contents.setdefault(_render(node[name]), []).append(name)
    for contents, names in by_contents.items():
        parts.append(f"{names[0] if len(names) == 1 else '{' + ','.join(names) + '}'}/ ({contents})")
    return ", ".join(parts)


def files_written(run, stage: str, keep=None) -> str:
    """Every file the stage wrote, from its record in RUN/stages.json, as one compact phrase: 'RUN/model/
    (accuracy.{png,svg}, ..., {latest,step_<n>}/ (config.json, ...))'; hook folders are <hook_name>/. `keep(rel)`:
    only those files (a stage that ran part of its work: `analyze attention`)."""
    rec = run.stage_record(stage) or {}
    tree: dict = {}
    for rel in rec.get("outputs", {}):
        if keep is not None and not keep(rel):
            continue
        *dirs, name = rel.split("/")
        node = tree
        for i, d in enumerate(dirs):
            node = node.setdefault(d if i == 0 else _pattern(d, True), {})
        node.setdefault("", set()).add(_pattern(name, False))
    top = [f"{run.root / name}" for name in sorted(tree.get("", ()))]
    top += [f"{run.root / name}/ ({_render(sub)})" for name, sub in sorted(tree.items()) if name]
    return ", ".join(top) or "nothing"


def bounded(kind: type, lo: float, hi: float | None = None):
    """An argparse type: an int (or float) in [lo, hi], refused in one line naming the range and what was typed."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or v != v or v < lo or (hi is not None and v > hi):  # v != v: nan
            raise argparse.ArgumentTypeError(f"must be {what} {f'from {lo} to {hi}' if hi is not None else f'>= {lo}'}, got {text!r}")
        return v

    return parse


def add_arguments(mod, parser) -> None:
    if hasattr(mod, "add_arguments"):
        mod.add_arguments(parser)


def options(mod, args) -> dict:
    return mod.options(args) if hasattr(mod, "options") else {}


def run_stage_command(name: str, mod, run, args) -> int:
    from sae_ooc.pipeline import run_stage

    with run.saved_config(force=getattr(args, "force", False)):
        result = run_stage(run, name, force=getattr(args, "force", False), **options(mod, args))
    print(mod.summarize(run, result))
    line = mod.after(run, args) if hasattr(mod, "after") else None  # the command's own work, stage run or skipped (browse --out)
    if line:
        print(line)
    return 0
