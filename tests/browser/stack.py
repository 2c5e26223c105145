"""The browser tests' Debian chromium for Playwright (never a downloaded browser); the stack they
drive is tests/upstack.py's ``opmas up``."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from tests.upstack import ADMIN_SECRET, Stack


def chromium_path() -> str | None:
    chosen = os.environ.get("OPMAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return chosen if Path(chosen).is_file() and os.access(chosen, os.X_OK) else None


def skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return "no chromium: the browser tests need Debian's chromium (apt-get install chromium) or OPMAS_CHROMIUM"
    return None


def launch(playwright):
    """Debian's chromium, headless (its sandbox refuses root: then without it)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=args)


def sign_in(page, stack: Stack, principal: str = "admin", secret: str = ADMIN_SECRET) -> None:
    page.goto(stack.base)
    page.get_by_label("Principal id").fill(principal)
    page.get_by_label("Secret").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()
