"""`sae-ooc browse --out DIR`: a copy of RUN/browse/ elsewhere (an earlier copy there is replaced, anything else refused)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.browse.paths import MARKER


def check_out(out: Path) -> None:
    """Refuse an --out that is a file, under a file, or a folder holding something other than an earlier copy of a site
    (checked before the stage runs too, not only after minutes of pages)."""
    out = Path(out)
    for p in (out, *out.parents):  # `--out notes.txt` or `--out notes.txt/site`: mkdir would fail with a traceback
        if p.exists() and not p.is_dir():
            raise UserError(f"--out {out}: {p} is a file, not a folder; choose a new or empty folder")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(f"--out {out} is not an empty folder nor an earlier copy of a feature browser ({MARKER} missing); choose a new or empty folder")


def copy_site(site: Path, out: Path) -> Path:
    out = Path(out)
    if not (site / MARKER).is_file():
        raise UserError(f"no feature browser in {site}; run `sae-ooc browse --run {site.parent}` first")
    check_out(out)
    if out.resolve() == site.resolve():
        return out
    if site.resolve() in out.resolve().parents:  # the copy would copy itself, one level deeper on every rerun
        raise UserError(f"--out {out} is inside the site it copies ({site}); choose a folder outside it")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(site, tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
