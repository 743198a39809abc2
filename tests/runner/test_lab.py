"""The notebooks as a researcher uses them: real JupyterLab, opened from the file browser, in Chromium.

A project root like the one ``make demo`` leaves (``data/demo`` holding the tiny run's extract and
outputs, ``notebooks/`` with the tiny run's parameters, ``notebooks/params/default.yaml``) is served
by JupyterLab on loopback with ``PACS_WORKBENCH_HOME`` pointing at it. Each notebook is opened
through its file-browser URL and run with Run > Run All Cells; no cell may show an error. In
``01_cohort`` a criterion is changed through the explorer widget, the counts must follow, *Save
criteria* must write it into the parameter file, and a scheduled run of that file must use it.
Screenshots go to ``$PACS_WORKBENCH_ARTIFACTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import papermill as pm
import pytest
import yaml

from pacs_workbench.core.params import HOME_ENV, notebook_params
from pacs_workbench.runner import run as runner
from tests.runner.browser import artifacts_dir, chromium

pytestmark = pytest.mark.slow

RUN_TIMEOUT_MS = 10 * 60 * 1000
#: JupyterLab settings for a test: every cell in the DOM (the test reads all prompts), no news.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": (
        '{"fetchNews": "false", "checkForUpdates": false}'
    ),
}
# The kernel of the open notebook is connected and idle, as the status bar shows it ("Python 3 | Idle").
KERNEL_IDLE_JS = """() => {
  const indicator = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
  const items = [...document.querySelectorAll('.jp-StatusBar-Widget .jp-StatusBar-TextItem')];
  return !!indicator && indicator.dataset.status === 'idle' && items.some(i => /\\|\\s*Idle\\s*$/.test(i.textContent));
}"""
# The explorer's attrition table (the first table in a widget) names the criterion; spaces may be no-break.
ATTRITION_SHOWS_JS = """(text) => {
  const table = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-html-content table');
  return !!table && table.innerText.replace(/\\u00a0/g, ' ').includes(text);
}"""
# Done when no cell is queued or running and every code cell has run, or one stopped with an error.
RUN_FINISHED_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return false;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent);
  if (!prompts.length || prompts.some(p => p.includes('*'))) return false;
  const errors = panel.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]').length;
  return errors > 0 || prompts.every(p => /\\[\\d+\\]/.test(p));
}"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _lab_project(tiny_run: dict[str, Any], root: Path) -> Path:
    """A project root after ``make demo``: the tiny run's data in data/demo, its parameters in the notebooks."""
    demo = root / "data" / "demo"
    shutil.copytree(tiny_run["data"], demo)
    params = runner.retarget_params(demo)
    tiny = yaml.safe_load(tiny_run["params"].read_text())
    for section, values in tiny.items():  # the tiny run's non-path settings (model size, criteria)
        params.setdefault(section, {}).update(
            {k: v for k, v in values.items() if not k.endswith(runner.PATH_SUFFIXES) and k != "data_dir"}
        )
    params_file = root / "notebooks" / "params" / "default.yaml"
    params_file.parent.mkdir(parents=True)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    for path in runner.discover_notebooks():
        declared = pm.inspect_notebook(str(path))
        values = runner._resolve_paths(
            {k: v for k, v in notebook_params(params, path.stem).items() if k in declared}, root
        )
        if "interactive" in declared:
            values["interactive"] = True  # a researcher's session: the live explorer
        pm.execute_notebook(
            str(path), str(root / "notebooks" / path.name), parameters=values, prepare_only=True, progress_bar=False
        )
    return params_file


@pytest.fixture(scope="module")
def lab(tiny_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("lab")
    root = work / "project"
    params_file = _lab_project(tiny_run, root)
    settings = work / "lab-settings"
    for name, text in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(text)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        HOME_ENV: str(root),
        "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(work / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / "lab-workspaces"),
        "IPYTHONDIR": str(work / "ipython"),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}", "--ServerApp.terminals_enabled=False",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (work / "jupyterlab.log").open("w")
    server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(work / 'jupyterlab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        with chromium() as browser:
            yield {"url": url, "token": token, "root": root, "params_file": params_file, "browser": browser,
                   "artifacts": artifacts_dir(work / "screenshots")}  # fmt: skip
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _shut_down_kernels(lab: dict[str, Any]) -> None:
    """End the sessions of notebooks already checked, so kernels do not pile up."""
    import json

    base, token = lab["url"], lab["token"]
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}") as response:
        sessions = json.loads(response.read())
    for session in sessions:
        request = urllib.request.Request(f"{base}/api/sessions/{session['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(request).close()


def _run_all(page: Any, lab: dict[str, Any], name: str) -> None:
    """Open ``notebooks/NAME`` from its file-browser URL and Run > Run All Cells, until it is done."""
    page.goto(f"{lab['url']}/lab/tree/notebooks/{name}?reset&token={lab['token']}")
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=120_000)
    # Run All before the session has its kernel opens a "Select Kernel" dialog instead of running.
    page.wait_for_function(KERNEL_IDLE_JS, timeout=120_000, polling=500)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    try:
        page.wait_for_function(RUN_FINISHED_JS, timeout=RUN_TIMEOUT_MS, polling=1000)
    except Exception:
        page.screenshot(path=str(lab["artifacts"] / f"lab_{Path(name).stem}_unfinished.png"))
        raise


def _problems(page: Any) -> list[str]:
    """Error outputs, tracebacks on stderr and widgets that failed to display, as text."""
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    found = [text[:800] for text in panel.locator('[data-mime-type="application/vnd.jupyter.error"]').all_inner_texts()]
    stderr = panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
    found += [text[:800] for text in stderr if "Traceback" in text or "Error" in text]
    body = panel.inner_text()
    found += ["a widget did not display"] if "Error displaying widget" in body else []
    return found


def _count(page: Any) -> int:
    """Patients left by the explorer's current criteria, as its count line shows them."""
    line = page.locator(".widget-html-content").filter(has_text=re.compile(r"^\s*\d+ patients, \d+ studies"))
    return int(re.match(r"\s*(\d+)", line.first.inner_text()).group(1))  # type: ignore[union-attr]


def _plain(text: str) -> str:
    """Text as the kernel wrote it: the select's labels come back with no-break spaces."""
    return text.replace("\u00a0", " ")


def _choose_vendor(page: Any, vendors: Any, vendor: str) -> int:
    """Select one vendor in the explorer; returns the patients left once the attrition table shows it."""
    vendors.select_option(vendor)
    # Each update replaces the table element: look it up afresh on every poll.
    page.wait_for_function(ATTRITION_SHOWS_JS, arg=f"vendor in {_plain(vendor)}", polling=250)
    return _count(page)


def _explore_and_save(page: Any, lab: dict[str, Any]) -> tuple[str, int]:
    """Pick one vendor in the explorer, check counts and attrition follow, Save; returns (vendor, patients)."""
    vendors = page.locator(".widget-select-multiple select")
    vendors.scroll_into_view_if_needed()
    before, attrition_before = _count(page), page.locator(".widget-html-content table").first.inner_text()
    options = vendors.locator("option").all_inner_texts()
    assert len(options) >= 2, f"the tiny extract should have several vendors, got {options}"
    # The vendor that removes the most patients yet leaves some: a change the counts must show.
    counts = {vendor: _choose_vendor(page, vendors, vendor) for vendor in options}
    vendor = min((v for v in counts if counts[v]), key=lambda v: counts[v])
    after = _choose_vendor(page, vendors, vendor)
    assert after == counts[vendor] < before, (before, counts)
    assert page.locator(".widget-html-content table").first.inner_text() != attrition_before
    explorer = page.locator(".jupyter-widgets").filter(has_text="Save criteria").first
    explorer.screenshot(path=str(lab["artifacts"] / "lab_01_explorer_changed.png"))
    page.get_by_role("button", name="Save criteria").click()
    page.locator(".widget-html-content").filter(has_text="saved to").wait_for(timeout=30_000)
    return _plain(vendor), after


def test_every_notebook_runs_clean_in_jupyterlab_with_live_widgets(lab: dict[str, Any]) -> None:
    page = lab["browser"].new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    notebooks = [path.name for path in runner.discover_notebooks()]
    saved: tuple[str, int] | None = None
    for name in notebooks:
        _run_all(page, lab, name)
        page.screenshot(path=str(lab["artifacts"] / f"lab_{Path(name).stem}.png"))
        problems = _problems(page)
        assert not problems, f"{name} in JupyterLab: {problems[:3]}"
        if name.startswith("01_"):
            saved = _explore_and_save(page, lab)
        _shut_down_kernels(lab)
    assert saved is not None, "no 01 notebook"
    vendor, patients = saved
    section = yaml.safe_load(lab["params_file"].read_text())["01_cohort"]
    assert section["vendors"] == [vendor]
    # The next scheduled run of the saved file reproduces what the explorer showed.
    first = runner.discover_notebooks()[0]
    result = runner.run_notebooks(lab["params_file"], lab["root"] / "reports" / "after-save", notebooks=[first],
                                  base_dir=lab["root"])  # fmt: skip
    assert result.ok, result.notebooks
    attrition = pd.read_csv(lab["root"] / "data" / "demo" / "cohort" / "attrition.csv")
    assert int(attrition["patients"].iloc[-1]) == patients
