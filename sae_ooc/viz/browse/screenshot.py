"""A PNG of one page of the site, taken by headless Chromium when the system has it (else nothing, and None)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FILE = "feature_page.png"


def find_chromium() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_args(exe: str) -> list[str]:
    # --no-sandbox: the sandbox cannot start as root (containers, CI); the page is our own static file
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions"]


def screenshot(site: Path, page: str | None, width: int = 1100, height: int = 1500, timeout: float = 60.0) -> str | None:
    """Write site/screenshot.png of `page` (relative to the site); its name, or None when no Chromium could take it."""
    exe = find_chromium()
    if exe is None or page is None:
        return None
    out = Path(site) / FILE
    cmd = chromium_args(exe) + [f"--window-size={width},{height}", f"--screenshot={out}", (Path(site) / page).resolve().as_uri()]
    try:
        subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return FILE if out.is_file() and out.stat().st_size > 0 else None
