"""Debian's Chromium under Playwright, for the tests that look at pages in a real browser.

Never ``playwright install``: the browser is the system's (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a sandboxed, offline machine: no first-run UI, no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium; the test fails in CI and skips elsewhere when it is not installed."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def artifacts_dir(default: Path) -> Path:
    """Where screenshots go: ``$PACS_WORKBENCH_ARTIFACTS`` when set, else ``default``."""
    folder = Path(os.environ.get("PACS_WORKBENCH_ARTIFACTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
