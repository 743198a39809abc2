"""The run page and every report open in headless Chromium: images load, no console error.

Screenshots go to ``$PACS_WORKBENCH_ARTIFACTS`` (default: the test's temporary folder) so a
reviewer of the test run can look at them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
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


@pytest.fixture(scope="module")
def browser() -> Any:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def test_run_page_and_reports_render(tiny_run: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    reports: Path = tiny_run["reports"]
    artifacts = Path(os.environ.get("PACS_WORKBENCH_ARTIFACTS", tmp_path / "screenshots"))
    artifacts.mkdir(parents=True, exist_ok=True)
    pages = ["index.html", *sorted(p.name for p in reports.glob("[0-9][0-9]_*.html"))]
    assert len(pages) >= 2
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    for name in pages:
        page.goto((reports / name).as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.alt])")
        broken = [alt for ok, alt in images if not ok]
        assert not broken, f"{name}: {len(broken)} images did not load"
        page.screenshot(path=str(artifacts / f"{Path(name).stem}.png"), full_page=name == "index.html")
        assert not problems, f"{name}: {problems[:3]}"
    page.goto((reports / "index.html").as_uri(), wait_until="load")
    text = page.inner_text("body")
    for heading in ("Reports", "Cohort", "De-identification audit", "Model"):
        assert heading in text, f"run page lacks the {heading!r} section"
    links = page.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
    for link in links:
        assert (reports / link).is_file(), f"run page links to a missing {link}"
