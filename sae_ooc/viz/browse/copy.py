"""`sae-ooc browse --out DIR`: a copy of RUN/browse/ elsewhere (an earlier copy there is replaced, anything else refused)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.viz.browse.paths import MARKER


def copy_site(site: Path, out: Path) -> Path:
    out = Path(out)
    if not (site / MARKER).is_file():
        raise UserError(f"no feature browser in {site}; run `sae-ooc browse --run {site.parent}` first")
    if out.resolve() == site.resolve():
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise UserError(f"--out {out} is not an empty folder nor an earlier copy of a feature browser ({MARKER} missing); choose a new or empty folder")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(site, tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
