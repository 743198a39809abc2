"""The index's fast path (pacs_workbench.dicom.scan) agrees with pydicom on every file it reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.dicom.fixtures import bundled, fast_values, pydicom_files, slow_values, write_ct


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_fast_path_matches_pydicom_on_synthetic_files(tmp_path: Path, transfer_syntax: str) -> None:
    path = tmp_path / "ct.dcm"
    write_ct(path, transfer_syntax=transfer_syntax, patient_name="Müller^Zoë", charset="ISO_IR 192")
    fast = fast_values(path)
    slow = slow_values(path)
    assert isinstance(slow, dict)
    assert slow["PatientName"] == "Müller^Zoë"
    if transfer_syntax == ExplicitVRBigEndian:
        assert fast is None  # left to pydicom
    else:
        assert fast == slow


def test_fast_path_matches_pydicom_on_pydicom_test_files() -> None:
    n_fast = 0
    for path in pydicom_files():
        fast = fast_values(path)
        slow = slow_values(path)
        if fast is not None:
            n_fast += 1
            assert fast == slow, path.name
        # Reading only some tags never changes the verdict.
        full = slow_values(path, specific=False)
        assert isinstance(full, tuple) == isinstance(slow, tuple), path.name
    assert n_fast > 100


@pytest.mark.parametrize(
    "name", ["rtplan.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "UN_sequence.dcm", "reportsi.dcm"]
)
def test_fast_path_matches_pydicom_on_every_truncation(tmp_path: Path, name: str) -> None:
    data = bundled(name).read_bytes()
    path = tmp_path / "cut.dcm"
    step = max(1, len(data) // 150)
    n_errors = 0
    for cut in [*range(128, len(data), step), len(data) - 1]:
        path.write_bytes(data[:cut])
        fast = fast_values(path)
        slow = slow_values(path)
        if fast is not None:
            assert fast == slow, cut
        n_errors += isinstance(slow, tuple)
    assert n_errors > 0
