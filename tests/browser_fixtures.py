"""Headless Chromium under Selenium for the browser tests (the feature index's state, serve's prompt box): the
screenshot's flags on a throwaway profile, with HOME and the XDG folders inside it (browse.screenshot's own rules), so
no test touches the user's ~/.config/chromium; skipped, saying why, without Chromium, chromedriver or selenium."""

from __future__ import annotations

import contextlib
import shutil

import pytest

from sae_ooc.browse.screenshot import chromium_args, chromium_env, find_chromium, temporary_profile

# how often a WebDriverWait looks again: selenium's default 0.5 s left the worker idle ~half a second per wait
POLL_S = 0.05


@contextlib.contextmanager
def selenium_chromium(what: str, extra_args=(), capabilities: dict | None = None):
    """A webdriver for headless Chromium; `what` names the check that is skipped when it cannot start."""
    exe, driver = find_chromium(), shutil.which("chromedriver")
    if exe is None or driver is None:
        pytest.skip(f"Chromium or chromedriver is not installed (apt-get install chromium chromium-driver): {what} was not checked")
    webdriver = pytest.importorskip("selenium.webdriver", reason=f"selenium is not installed (pip install -e '.[test]'): {what} was not checked")
    from selenium.webdriver.chrome.service import Service

    with temporary_profile() as profile:  # short paths: Chromium's socket under TMPDIR must stay within 108 characters
        opts = webdriver.ChromeOptions()
        opts.binary_location = exe
        for name, value in (capabilities or {}).items():
            opts.set_capability(name, value)
        for a in chromium_args(exe, profile)[1:] + list(extra_args):
            opts.add_argument(a)
        d = webdriver.Chrome(options=opts, service=Service(executable_path=driver, env=chromium_env(profile)))
        try:
            yield d
        finally:
            d.quit()
