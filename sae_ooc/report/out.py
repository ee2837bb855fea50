"""`sae-ooc report --out DIR`: the folder the report is copied to, and the marker that says which of its files the
report wrote (DIR/.sae_ooc_report.json). The report overwrites only those: a file of the same name that it did not
write (the user's own REPORT.md, notes beside results/) is refused, in one line, before anything is written. Torch-free:
the command checks its --out before the stages run.
"""

from __future__ import annotations

import json
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.io import write_json

MARKER = ".sae_ooc_report.json"
WRITER = "sae-ooc report"
FIXED = ("REPORT.md", "summary.json")  # written on every run; the copied figures depend on which stages have run


def written_before(out: Path) -> set[str]:
    """The names the marker in `out` lists (empty when there is none); a marker file that is not ours is refused."""
    path = Path(out) / MARKER
    if not path.exists():
        return set()
    try:
        m = json.loads(path.read_text())
        if not (isinstance(m, dict) and m.get("written_by") == WRITER and isinstance(m.get("files"), list)):
            raise ValueError("not a marker of sae-ooc report")
    except (OSError, ValueError) as e:
        raise UserError(f"--out {out}: {path} is not the marker `{WRITER}` writes ({e}); move it away or choose another folder") from None
    return {str(n) for n in m["files"]}


def check_out(out: Path, names=FIXED, run_root: Path | None = None) -> None:
    """Refuse an --out that is a file or lies under one, that is the run directory itself (where the report is written
    anyway), or that holds a file named in `names` that the report did not write."""
    out = Path(out)
    if run_root is not None and out.resolve() == Path(run_root).resolve():
        raise UserError(f"--out {out} is the run directory, where the report is written anyway (REPORT.md, summary.json); "
                        "leave out --out or choose another folder")
    for p in (out, *out.parents):  # `--out notes.txt`: mkdir would fail with a traceback
        if p.exists() and not p.is_dir():
            raise UserError(f"--out {out}: {p} is a file, not a folder; choose a new or empty folder")
    if not out.exists():
        return
    ours = written_before(out)
    theirs = sorted(n for n in set(names) if (out / n).exists() and n not in ours)
    if theirs:
        more = f" (and {len(theirs) - 1} more: {', '.join(theirs[1:4])}{', ...' if len(theirs) > 4 else ''})" if len(theirs) > 1 else ""
        raise UserError(f"--out {out}: {out / theirs[0]}{more} was not written by `{WRITER}` ({MARKER} does not list it) and would be "
                        "overwritten; move it away or choose another folder")


def claim(out: Path, names) -> None:
    """Add `names` to the marker in `out` (written before the files, so an interrupted copy leaves nothing unclaimed)."""
    out = Path(out)
    write_json(out / MARKER, {"written_by": WRITER, "files": sorted(written_before(out) | set(names))})
