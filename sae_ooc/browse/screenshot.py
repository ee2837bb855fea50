"""A PNG of one page of the site, taken by headless Chromium when the system has it (else nothing, and None).

Chromium runs with a profile of its own in a temporary folder (`--user-data-dir`, `--disk-cache-dir` inside it),
removed when it exits: it must neither read nor write the user's ~/.config/chromium or ~/.cache/chromium. The flag
alone is not enough (its crash reporter still writes ~/.config/chromium/Crash Reports, GTK ~/.cache/dconf), so it
also runs with HOME, the XDG folders and TMPDIR (its org.chromium.* folders) inside that temporary folder (`chromium_env`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FILE = "feature_page.png"


def find_chromium() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_args(exe: str, profile: str | Path) -> list[str]:
    """Headless Chromium on the throwaway profile folder `profile` (see `temporary_profile`), with nothing that phones home."""
    # --no-sandbox: the sandbox cannot start as root (containers, CI); the page is our own static file
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", f"--disk-cache-dir={Path(profile) / 'cache'}"]


def chromium_env(profile: str | Path) -> dict[str, str]:
    """The environment with HOME, the XDG config / cache / data folders and TMPDIR inside `profile` (TMPDIR created)."""
    p = Path(profile)
    (p / "tmp").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HOME": str(p / "home"), "XDG_CONFIG_HOME": str(p / "config"), "XDG_CACHE_HOME": str(p / "cache"),
            "XDG_DATA_HOME": str(p / "data"), "TMPDIR": str(p / "tmp")}


@contextmanager
def temporary_profile():
    """A new, empty Chromium profile folder, removed afterwards (also when Chromium fails or times out)."""
    d = tempfile.mkdtemp(prefix="sae_ooc-chromium-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def screenshot(site: Path, page: str | None, width: int = 1100, height: int = 1500, timeout: float = 60.0) -> str | None:
    """Write site/feature_page.png of `page` (relative to the site); its name, or None when no Chromium could take it."""
    exe = find_chromium()
    if exe is None or page is None:
        return None
    out = Path(site) / FILE
    with temporary_profile() as profile:
        cmd = chromium_args(exe, profile) + [f"--window-size={width},{height}", f"--screenshot={out}", (Path(site) / page).resolve().as_uri()]
        try:
            subprocess.run(cmd, capture_output=True, timeout=timeout, check=False, env=chromium_env(profile))
        except (OSError, subprocess.TimeoutExpired):
            return None
    return FILE if out.is_file() and out.stat().st_size > 0 else None
