"""Security: the key stays in its file, reports carry no PHI, and reports name no absolute paths.

The key checks grep every byte (and every file name) a run leaves for the key in the
forms it could leak in: raw bytes, hex (either case), base64 and base32. The run-wide
checks reuse the session's end-to-end run of every notebook on a 12-patient extract
(the ``tiny_run`` fixture in ``tests/conftest.py``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest

from pacs_workbench.core.params import REPO_ROOT
from pacs_workbench.core.pseudonym import generate_key
from tests import fault_helpers as fh

# Folders of a run's data that hold de-identified or derived data only (no identified zone:
# not dicom/, ehr/, reports/, index/, truth/ or the quarantine).
RESEARCH_ZONE = ("cohort", "deid", "preprocessed", "features", "model", "model_unharmonized", "explain")
TEXT_SUFFIXES = {".html", ".ipynb", ".json", ".md", ".csv", ".txt", ".yaml", ".log"}


def key_forms(key_file: Path) -> dict[str, bytes]:
    """Every encoding of the key worth searching for."""
    key = bytes.fromhex(key_file.read_text().strip())
    return {
        "raw bytes": key,
        "hex": key.hex().encode(),
        "HEX": key.hex().upper().encode(),
        "base64": base64.b64encode(key).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(key).rstrip(b"="),
        "base32": base64.b32encode(key).rstrip(b"="),
    }


def find_key(forms: dict[str, bytes], content: bytes) -> list[str]:
    return [name for name, form in forms.items() if form in content]


def scan_for_key(forms: dict[str, bytes], roots: list[Path], *, skip: set[Path]) -> list[str]:
    """``file: forms`` for every file under ``roots`` whose name or bytes hold the key."""
    leaks = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path in skip or not path.is_file():
                continue
            found = find_key(forms, path.read_bytes()) + find_key(forms, str(path).encode())
            if found:
                leaks.append(f"{path}: {found}")
    return leaks


@pytest.fixture(scope="module")
def small_extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pacs_workbench.synth import generate

    out = tmp_path_factory.mktemp("extract")
    generate(out, patients=2, seed=5, workers=1, progress=False)
    return out


# --- the key file --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_deid_refuses_a_key_file_readable_by_others(small_extract: Path, tmp_path: Path, mode: int) -> None:
    key = generate_key(tmp_path / "project.key")
    os.chmod(key, mode)
    dst = tmp_path / "deid"
    done = subprocess.run(
        [*fh.CLI, "deid", str(small_extract / "dicom"), "--out", str(dst), "--key-file", str(key), "--quiet"],
        env=fh.env_for_subprocess(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode != 0
    assert "readable by others" in done.stderr and "chmod 600" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not dst.exists() and not Path(f"{dst}.quarantine").exists()  # refused before anything is written
    assert not find_key(key_forms(key), (done.stdout + done.stderr).encode())


def test_deid_refuses_a_key_from_the_environment_readable_by_others(small_extract: Path, tmp_path: Path) -> None:
    key = generate_key(tmp_path / "project.key")
    os.chmod(key, 0o644)
    dst = tmp_path / "deid"
    done = subprocess.run(
        [*fh.CLI, "deid", str(small_extract / "dicom"), "--out", str(dst), "--quiet"],
        env=fh.env_for_subprocess(PACS_WORKBENCH_KEY_FILE=str(key)),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode != 0 and "readable by others" in done.stderr, done.stderr
    assert not dst.exists()


def test_deid_and_audit_never_print_or_write_the_key(small_extract: Path, tmp_path: Path) -> None:
    key = generate_key(tmp_path / "keys" / "project.key")
    forms = key_forms(key)
    dst, mapping = tmp_path / "deid", tmp_path / "escrow" / "mapping.csv"
    env = fh.env_for_subprocess()
    deid = fh.run_ok([*fh.CLI, "deid", str(small_extract / "dicom"), "--out", str(dst), "--key-file", str(key),
                      "--mapping", str(mapping), "--workers", "2"], env=env)
    audit = fh.run_ok([*fh.CLI, "audit", str(dst), "--source", str(small_extract / "dicom"), "--phi-list",
                       str(small_extract / "truth" / "phi_values.txt"), "--no-ocr", "--workers", "2"],
                      env=env, codes=(0, 1))
    for name, stream in (("deid stdout", deid.stdout), ("deid stderr", deid.stderr), ("audit", audit.stdout),
                         ("audit stderr", audit.stderr)):
        assert not find_key(forms, stream.encode()), name
    assert mapping.is_file() and oct(mapping.stat().st_mode & 0o777) == oct(0o600)
    leaks = scan_for_key(forms, [dst, Path(f"{dst}.quarantine"), mapping.parent], skip=set())
    assert not leaks, leaks
    # Nor the source's patient and study folder names (<Last>_<First>_<MRN>, <date>_<accession>).
    source = small_extract / "dicom"
    source_names = {p.name for p in source.glob("*")} | {p.name for p in source.glob("*/*")}
    for path in dst.rglob("*"):
        assert not any(part in source_names for part in path.relative_to(dst).parts), path
        if path.is_file():
            content = path.read_bytes()
            assert str(small_extract).encode() not in content, f"{path.name} names the source folder"
            assert not [n for n in source_names if n.encode() in content], f"{path.name} names a source folder"


def test_shipped_notebooks_and_parameter_files_hold_no_key() -> None:
    """Notebooks and parameter files name a key file at most, never a key (a 128-bit or longer hex literal)."""
    key_like = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])")
    files = [*sorted((REPO_ROOT / "notebooks").glob("*.ipynb")), *sorted((REPO_ROOT / "notebooks").rglob("*.yaml"))]
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not key_like.search(text), f"{path.name} holds a key-like hex literal"
        if path.suffix == ".ipynb":
            nb = nbformat.reads(text, as_version=4)
            assert not any(cell.get("outputs") for cell in nb.cells), f"{path.name} is saved with outputs"


# --- a whole run -------------------------------------------------------------------------------------------------


@pytest.fixture
def run(tiny_run: dict[str, Any]) -> dict[str, Any]:
    """The session's run of every notebook; the checks below mean nothing on a run that stopped early."""
    assert tiny_run["result"].ok, (tiny_run["reports"] / "run.json").read_text()[-3000:]
    return tiny_run


def _phi(run: dict[str, Any]) -> list[str]:
    values = [line.strip() for line in (run["data"] / "truth" / "phi_values.txt").read_text().splitlines()]
    values = [v for v in values if len(v) >= 4]
    assert values, "the synthetic extract planted no PHI"
    return values


def _report_files(run: dict[str, Any]) -> list[Path]:
    reports = run["reports"]
    return sorted([*reports.glob("*.html"), *reports.glob("*.ipynb"), reports / "run.json"])


def test_no_artefact_of_a_run_holds_the_key(run: dict[str, Any]) -> None:
    key = run["data"] / "project.key"
    forms = key_forms(key)
    roots = [run["root"]]  # reports, parameters, every stage's output and the source data
    leaks = scan_for_key(forms, roots, skip={key})
    assert not leaks, leaks


def test_executed_notebooks_hold_no_phi_and_no_key_in_their_parameters(run: dict[str, Any]) -> None:
    phi = [v.lower() for v in _phi(run)]
    forms = key_forms(run["data"] / "project.key")
    for ipynb in sorted(run["reports"].glob("*.ipynb")):
        nb = nbformat.read(ipynb, as_version=4)
        parameters = nb.metadata.get("papermill", {}).get("parameters", {})
        assert parameters, f"{ipynb.name}: papermill recorded no parameters"
        injected = [c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        stored = json.dumps(parameters).lower() + "\n".join(injected).lower()
        leaked = [v for v in phi if v in stored]
        assert not leaked, f"{ipynb.name}: parameters carry {len(leaked)} PHI strings"
        assert not find_key(forms, stored.encode()) and not find_key(forms, stored.upper().encode()), ipynb.name
        for name, value in parameters.items():
            if "key" in name.lower():
                assert name.endswith("_file") and not re.fullmatch(r"[0-9a-fA-F]{32,}", str(value)), (name, value)


def test_research_zone_outputs_of_a_run_hold_no_phi(run: dict[str, Any]) -> None:
    """What the run de-identified or derived (and may be shared) holds no planted PHI, in bytes or names."""
    phi = [v.lower().encode("latin-1", "replace") for v in _phi(run)]
    checked = 0
    leaks = []
    for zone in RESEARCH_ZONE:
        folder = run["data"] / zone
        if not folder.exists():
            continue
        for path in sorted(folder.rglob("*")):
            name = str(path.relative_to(run["data"])).lower().encode("latin-1", "replace")
            content = path.read_bytes().lower() if path.is_file() else b""
            in_name, in_content = sum(v in name for v in phi), sum(v in content for v in phi)
            if in_name or in_content:
                leaks.append(f"{path.relative_to(run['data'])}: {in_name} PHI string(s) in its name, "
                             f"{in_content} in its content")
            checked += path.is_file()
    assert checked > 0, "the run wrote nothing in the research zone"
    assert not leaks, leaks


ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/(?:tmp|root|home|work|var|usr|opt|mnt|Users|private)/[^\s\"'<>\\]*)")


def test_reports_name_no_absolute_paths_or_home_folders(run: dict[str, Any]) -> None:
    """Paths in reports are relative to the run folder or its base folder: no /tmp/..., /root, /home/<user>."""
    forbidden = {str(run["root"]), str(REPO_ROOT)}
    found = []
    for report in _report_files(run):
        text = report.read_text(encoding="utf-8", errors="replace")
        hits = sorted({m.group(0)[:80] for m in ABSOLUTE_PATH.finditer(text)} | {f for f in forbidden if f in text})
        if hits:
            found.append(f"{report.name}: {len(hits)} absolute path(s), e.g. {hits[:3]}")
    assert not found, found
