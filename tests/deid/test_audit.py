"""The residual-PHI audit of a de-identified folder (pacs_workbench.deid.audit and audit_checks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from pacs_workbench.core.pseudonym import generate_key
from pacs_workbench.deid.audit import BATCH, MAX_BATCH, audit_folder, batch_size
from pacs_workbench.deid.run import deidentify_folder
from tests.deid.fixtures import ALICE, text_image


def test_audit_clean_then_planted_leaks(extract: dict, tmp_path: Path) -> None:
    summary = audit_folder(extract["dst"], source=extract["src"], phi_list=extract["phi"], progress=False)
    assert summary["ok"], summary["findings_by_category"]
    assert summary["files_checked"] > 0 and summary["images_ocr_checked"] >= 1
    assert summary["dangling_references"] == 0
    leaky = tmp_path / "leaky"
    shutil.copytree(extract["dst"], leaky)
    target = next(leaky.rglob("*.dcm"))
    ds = pydicom.dcmread(target)
    ds.ImageComments = f"seen by {ALICE.first} {ALICE.last}"
    ds.PatientAddress = "somewhere"
    ds.private_block(0x0011, "GEMS_PATI_01", create=True).add_new(0x12, "LO", "something")
    ds.save_as(target)
    (leaky / "extra" / f"{ALICE.mrn}.txt").parent.mkdir()
    (leaky / "extra" / f"{ALICE.mrn}.txt").write_text("x")
    found = audit_folder(leaky, phi_list=extract["phi"], ocr=False, progress=False)
    assert not found["ok"]
    categories = found["findings_by_category"]
    assert {"phi_bytes", "phi_filename", "profile_violation", "private_element"} <= set(categories)
    text = json.dumps(found)
    for phi in ("Kowalczyk", "Beatrix", ALICE.mrn):
        assert phi not in text  # findings never echo the PHI


@pytest.mark.slow
def test_synthetic_extract_has_no_residual_phi(tmp_path: Path) -> None:
    synth = pytest.importorskip("pacs_workbench.synth")
    if not hasattr(synth, "generate"):
        pytest.skip("pacs_workbench.synth.generate is not available yet")
    synth.generate(tmp_path / "extract", patients=3, seed=0)
    key = generate_key(tmp_path / "project.key")
    dst = tmp_path / "deid"
    summary = deidentify_folder(tmp_path / "extract" / "dicom", dst, key_file=key, workers=2, progress=False)
    assert summary["quarantined"] == 0 and summary["written"] == summary["files"]
    audit = audit_folder(
        dst,
        source=tmp_path / "extract" / "dicom",
        phi_list=tmp_path / "extract" / "truth" / "phi_values.txt",
        workers=2,
        progress=False,
    )
    assert audit["ok"], audit["findings_by_category"]
    assert audit["images_ocr_checked"] >= 1 and audit["phi_terms"] > 0


def test_audit_flags_an_element_whose_vr_disagrees_with_the_dictionary(extract: dict, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    shutil.copytree(extract["dst"], wrong)
    target = next(p for p in wrong.rglob("*.dcm") if b"\x08\x00\x20\x00DA" in p.read_bytes())
    target.write_bytes(target.read_bytes().replace(b"\x08\x00\x20\x00DA", b"\x08\x00\x20\x00UL", 1))
    found = audit_folder(wrong, ocr=False, progress=False)
    assert not found["ok"]
    assert found["findings_by_category"].get("vr_mismatch") == 1
    assert next(f["tag"] for f in found["findings"] if f["category"] == "vr_mismatch").startswith("(0008,0020)")


def test_audit_reuses_verified_ocr_only_for_unchanged_pixels(extract: dict, tmp_path: Path) -> None:
    log = pq.read_table(extract["dst"] / "deid_log.parquet").to_pandas()
    verified = log[log["pixel_verified_sha256"].notna()]
    assert len(verified) >= 1  # the dose screen: checked free of text, its pixel hash recorded
    reused = audit_folder(extract["dst"], progress=False)
    assert reused["ok"], reused["findings_by_category"]
    assert reused["images_ocr_reused"] == len(verified) == reused["images_ocr_checked"]
    again = audit_folder(extract["dst"], progress=False, reuse_deid_ocr=False)
    assert again["ok"] and again["images_ocr_reused"] == 0 and again["images_ocr_checked"] == len(verified)

    # text burned back into a verified image after de-identification: its hash differs, so it is read
    changed = tmp_path / "changed"
    shutil.copytree(extract["dst"], changed)
    target = changed / str(verified["output"].iloc[0])
    ds = pydicom.dcmread(target)
    arr = ds.pixel_array.copy()
    rgb = arr.ndim == 3
    text = text_image([f"{ALICE.last} {ALICE.first}", f"ID {ALICE.mrn}"], rgb=rgb)
    h, w = min(arr.shape[0], text.shape[0]), min(arr.shape[1], text.shape[1])
    arr[:h, :w, ...] = text[:h, :w, ...]
    ds.PixelData = arr.tobytes()
    ds.save_as(target)
    found = audit_folder(changed, progress=False)
    assert not found["ok"]
    assert found["findings_by_category"].get("ocr_text") == 1
    assert found["images_ocr_reused"] == len(verified) - 1


def test_audit_tasks_stay_few_as_the_cohort_grows() -> None:
    # Each task carries the cohort's PHI terms: their number must not grow with the files.
    assert batch_size(10) == BATCH
    assert batch_size(8_260) == 8_260 // 64
    assert batch_size(87_664) == MAX_BATCH
    assert -(-87_664 // batch_size(87_664)) <= 86


def test_a_shifted_date_on_another_patients_birth_date_is_not_a_leak(tmp_path: Path) -> None:
    """Bob's study date, shifted by his keyed offset, lands on Alice's birth date: a coincidence.

    It stays a finding when the log cannot trace the file to its source, and a date element
    holding one of the file's own source dates (unshifted) is a finding whatever the log says.
    """
    from pacs_workbench.core.pseudonym import load_key
    from pacs_workbench.deid.keyed import date_offset_days, shift_date
    from tests.deid.fixtures import BOB, StudySpec, make_ct_series

    key_file = generate_key(tmp_path / "project.key")
    bob_date = shift_date(ALICE.birth, -date_offset_days(load_key(key_file), BOB.mrn))
    assert bob_date is not None
    src, alice_date = tmp_path / "src", "20240105"
    for i, spec in enumerate((StudySpec(ALICE, alice_date, "ACC0001"), StudySpec(BOB, bob_date, "ACC0002"))):
        (src / str(i)).mkdir(parents=True)
        make_ct_series(spec, n=1)[0].save_as(src / str(i) / "0.dcm", enforce_file_format=True)
    phi_list = tmp_path / "phi.txt"
    phi_list.write_text(f"{ALICE.birth}\n{alice_date}\n")  # listed terms count alike
    dst = tmp_path / "dst"
    deidentify_folder(src, dst, key_file=key_file, progress=False)
    outputs = {pydicom.dcmread(p).StudyDate: p for p in dst.rglob("*.dcm")}
    bob_out = outputs[ALICE.birth]
    alice_out = next(p for d, p in outputs.items() if d != ALICE.birth)

    found = audit_folder(dst, source=src, phi_list=phi_list, ocr=False, progress=False)
    assert found["ok"], found["findings"]
    assert found["date_coincidences"] >= 1
    # without the log nothing traces the file to its source: the date is a finding
    untraced = tmp_path / "untraced"
    shutil.copytree(dst, untraced)
    (untraced / "deid_log.parquet").unlink()
    found = audit_folder(untraced, source=src, phi_list=phi_list, ocr=False, progress=False)
    assert found["findings_by_category"].get("phi_bytes", 0) >= 1 and found["date_coincidences"] == 0
    # a file's own source dates, unshifted, are findings: Bob's birth date, Alice's study date
    leaky = tmp_path / "leaky"
    shutil.copytree(dst, leaky)
    for out, keyword, value in ((bob_out, "AcquisitionDate", BOB.birth), (alice_out, "StudyDate", alice_date)):
        ds = pydicom.dcmread(leaky / out.relative_to(dst))
        setattr(ds, keyword, value)
        ds.save_as(leaky / out.relative_to(dst))
    found = audit_folder(leaky, source=src, phi_list=phi_list, ocr=False, progress=False)
    tags = sorted(f["tag"][:11] for f in found["findings"] if f["category"] == "phi_bytes")
    assert tags == ["(0008,0020)", "(0008,0022)"]
