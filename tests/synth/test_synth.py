"""Tests of the synthetic PACS extract (pacs_workbench.synth).

One small extract (5 imaging patients, four vendors, follow-ups) is generated once per
module and checked for determinism, DICOM geometry, SEG/RTSTRUCT agreement, planted PHI,
EHR validity and ground truth.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as PolygonPath

from pacs_workbench.synth import generate
from pacs_workbench.synth.ehr import EHR_COLUMNS
from pacs_workbench.synth.imaging import VENDORS
from pacs_workbench.synth.patients import OUTCOME_MODEL, plan_cohort
from pacs_workbench.synth.segmentations import trace_contours

SEED = 20  # 5 patients: four vendors, follow-ups, both outcomes, PHI in every free-text field
N_PATIENTS = 5


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "extract"
    summary = generate(out, patients=N_PATIENTS, seed=SEED, workers=1, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def truth(extract: tuple[Path, dict]) -> dict[str, list[dict[str, str]]]:
    out, _ = extract
    return {name: _csv(out / "truth" / f"{name}.csv") for name in ("patients", "studies", "nodules")}


def _series_slices(folder: Path) -> list[pydicom.Dataset]:
    slices = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    return sorted(slices, key=lambda ds: float(ds.ImagePositionPatient[2]))


# --- determinism and layout ---------------------------------------------------------------------


def test_same_seed_gives_identical_files_serial_or_parallel(extract, tmp_path):
    out, _ = extract
    again = generate(tmp_path / "again", patients=N_PATIENTS, seed=SEED, workers=2, progress=False)
    assert again["files"] == extract[1]["files"]
    assert _hashes(tmp_path / "again") == _hashes(out)


def test_other_seed_gives_other_data(extract, tmp_path):
    out, _ = extract
    generate(tmp_path / "other", patients=3, seed=SEED + 1, workers=1, progress=False)
    other = _hashes(tmp_path / "other")
    mine = _hashes(out)
    shared = {k for k in other if k in mine and other[k] == mine[k] and k.startswith(("dicom/", "ehr/fhir/"))}
    assert not shared
    uids_a = {r["StudyInstanceUID"] for r in _csv(out / "truth" / "studies.csv")}
    uids_b = {r["StudyInstanceUID"] for r in _csv(tmp_path / "other" / "truth" / "studies.csv")}
    assert uids_a.isdisjoint(uids_b)


def test_rerun_overwrites_identically_and_removes_stale_files(extract, tmp_path):
    out, _ = extract
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "dicom" / ".synth-tmp-leftover").write_bytes(b"half")  # an earlier version's temporary name
    # What core.files.write_atomic leaves when a run is killed mid-write (pid of a process long gone).
    interrupted = copy / "truth" / ".studies.csv.999999999-x1y2z3.tmp"
    interrupted.write_bytes(b"half")
    summary = generate(copy, patients=3, seed=SEED, workers=1, progress=False)
    fresh = generate(tmp_path / "fresh", patients=3, seed=SEED, workers=1, progress=False)
    assert summary["stale_removed"] > 0
    assert _hashes(copy) == _hashes(tmp_path / "fresh")
    assert fresh["stale_removed"] == 0
    assert not interrupted.exists() and not list(copy.rglob(".*.tmp"))


def test_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "keep.txt").write_text("somebody's data")
    with pytest.raises(FileExistsError):
        generate(tmp_path, patients=1, seed=0, workers=1, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "somebody's data"


def test_layout_and_summary(extract, truth):
    out, summary = extract
    assert summary["patients"] == N_PATIENTS
    assert summary["studies"] == len(truth["studies"])
    assert summary["files"]["ct"] == sum(int(s["n_slices"]) for s in truth["studies"])
    for kind in ("localizer", "dose_sc", "dose_sr", "report"):
        assert summary["files"][kind] == summary["studies"]
    assert summary["files"]["seg"] == len(truth["nodules"])
    assert summary["files"]["rtstruct"] == sum(int(s["has_rtstruct"]) for s in truth["studies"])
    assert 0 < summary["files"]["rtstruct"] < summary["studies"]
    assert {s["vendor"] for s in truth["studies"]} == set(VENDORS)
    dicom_re = re.compile(r"dicom/[A-Za-z]+_[A-Za-z]+_H\d{7}/\d{8}_A\d{7}/\d{3,4}_[A-Za-z0-9._-]+/\d{4}\.dcm")
    dicom_files = sorted((out / "dicom").rglob("*"))
    for path in dicom_files:
        if path.is_file():
            assert dicom_re.fullmatch(path.relative_to(out).as_posix()), path
    for study in truth["studies"]:
        assert (out / "reports" / f"{study['AccessionNumber']}.txt").is_file()
        assert (out / study["ct_series_dir"]).is_dir()
    for name in ("phi_values.txt", "patients.csv", "nodules.csv", "studies.csv", "README.md", "model.json"):
        assert (out / "truth" / name).is_file()
    assert not list(out.rglob(".synth-tmp-*")) and not list(out.rglob(".*.tmp"))


def test_readme_carries_no_phi(extract):
    out, _ = extract
    readme = (out / "README.md").read_text() + (out / "truth" / "README.md").read_text()
    phi = (out / "truth" / "phi_values.txt").read_text().splitlines()
    assert not [v for v in phi if v in readme]


def test_no_wall_clock_dates_or_foreign_uids(extract):
    out, _ = extract
    today = dt.date.today().strftime("%Y%m%d").encode()
    for path in out.rglob("*"):
        if path.is_file():
            assert today not in path.read_bytes(), path
    for path in (out / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for elem in [*ds.file_meta, *ds.iterall()]:
            if elem.VR == "UI" and elem.value:
                assert str(elem.value).startswith(("2.25.", "1.2.840.10008.")), (path, elem.keyword)


# --- DICOM content ------------------------------------------------------------------------------


def test_ct_series_geometry_and_vendor_habits(extract, truth):
    out, _ = extract
    for study in truth["studies"]:
        slices = _series_slices(out / study["ct_series_dir"])
        assert len(slices) == int(study["n_slices"])
        assert 20 <= len(slices) <= 60
        first = slices[0]
        spacing = float(first.get("SpacingBetweenSlices", first.SliceThickness))
        assert spacing == pytest.approx(float(study["SpacingBetweenSlices"]))
        assert 1.0 <= float(first.SliceThickness) <= 5.0
        z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
        assert np.allclose(np.diff(z), spacing, atol=1e-3)
        for ds in slices:
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert [float(v) for v in ds.ImagePositionPatient[:2]] == [float(v) for v in first.ImagePositionPatient[:2]]
            assert float(ds.SliceLocation) == pytest.approx(float(ds.ImagePositionPatient[2]))
            assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
            assert ds.SeriesInstanceUID == study["SeriesInstanceUID"]
            assert (ds.Rows, ds.Columns) == (64, 64)
        numbers = [int(ds.InstanceNumber) for ds in slices]
        assert numbers == (sorted(numbers, reverse=True) if study["descending"] == "1" else sorted(numbers))
        vendor = VENDORS[study["vendor"]]
        assert float(first.RescaleIntercept) == vendor.rescale_intercept
        assert float(first.RescaleSlope) == 1.0
        assert first.ConvolutionKernel == study["ConvolutionKernel"]
        assert first.get("BodyPartExamined", "") == study["BodyPartExamined"]
        hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
        inside_fov = hu[hu > -1500]  # GE pads the corners outside the circular field of view
        assert np.median(hu[:, :3, 28:36]) < -900  # air above the chest
        assert ((inside_fov > -950) & (inside_fov < -700)).mean() > 0.1  # lung parenchyma
        assert ((inside_fov > -50) & (inside_fov < 150)).mean() > 0.1  # soft tissue
        # Contrast, vendor style: Siemens only in the texts, GE only when given, others always.
        has_agent = "ContrastBolusAgent" in first
        expected = {"siemens": False, "ge": study["contrast"] == "1"}.get(study["vendor"], True)
        assert has_agent == expected
        if study["vendor"] == "siemens":
            assert ("CE" in first.SeriesDescription) == (study["contrast"] == "1")
        study_dir = (out / study["ct_series_dir"]).parent
        localizers = [pydicom.dcmread(p) for p in study_dir.glob("001_*/*.dcm")]
        assert len(localizers) == 1 and list(localizers[0].ImageType)[2] == "LOCALIZER"


def test_private_blocks_and_nested_phi(extract, truth):
    out, _ = extract
    creators = {
        "siemens": "SIEMENS MED",
        "ge": "GEMS_PARM_01",
        "philips": "Philips Imaging DD 001",
        "canon": "TOSHIBA_MEC_CT3",
    }
    for study in truth["studies"]:
        ds = pydicom.dcmread(next((out / study["ct_series_dir"]).glob("*.dcm")))
        private_sequences = [e for e in ds if e.tag.is_private and e.VR == "SQ"]
        assert len(private_sequences) == 1
        assert creators[study["vendor"]] in [str(e.value) for e in ds if e.tag.is_private_creator]
        assert ds.RequestAttributesSequence[0].AccessionNumber == study["AccessionNumber"]
    assert any(
        "OtherPatientIDsSequence" in pydicom.dcmread(next((out / s["ct_series_dir"]).glob("*.dcm")))
        for s in truth["studies"]
    )


def test_dose_sr_per_study_agrees_with_the_images_and_varies(extract, truth):
    out, _ = extract
    from pacs_workbench.dicom.dose import read_ct_dose

    seen: list[tuple[str, float, float]] = []
    for study in truth["studies"]:
        study_dir = (out / study["ct_series_dir"]).parent
        (sr_path,) = sorted(study_dir.glob("997_*/0001.dcm"))
        sr = pydicom.dcmread(sr_path)
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.67" and sr.Modality == "SR"
        assert sr.StudyInstanceUID == study["StudyInstanceUID"]
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == "10011"
        dose = read_ct_dose(sr)
        ct = pydicom.dcmread(next((out / study["ct_series_dir"]).glob("*.dcm")), stop_before_pixels=True)
        assert dose["CTDIvol_mGy"] == pytest.approx(float(ct.CTDIvol))
        assert dose["CTDIw_phantom"] == "IEC Body Dosimetry Phantom" and dose["n_irradiation_events"] == 2
        assert dose["DLP_mGycm_total"] > dose["CTDIvol_mGy"]
        seen.append((study["vendor"], dose["CTDIvol_mGy"], dose["DLP_mGycm_total"]))
    assert len({ctdi for _, ctdi, _ in seen}) > len(seen) // 2  # protocol and patient size move the dose
    assert len({vendor for vendor, _, _ in seen}) > 1


def test_dose_follows_vendor_and_patient_size():
    from pacs_workbench.synth.dose import study_dose
    from pacs_workbench.synth.imaging import Anatomy, Protocol

    base = Protocol(vendor="philips", contrast=False, thickness=1.0, spacing=1.0, lung_kernel=True, kernel="L",
                    kvp=120, tube_current=150, pixel_spacing=0.7, n_slices=60, body_part="CHEST", descending=False)
    small, large = Anatomy(body_a=130.0, body_b=90.0, vessels=()), Anatomy(body_a=190.0, body_b=140.0, vessels=())
    assert study_dose(large, base).ctdivol_mgy > study_dose(small, base).ctdivol_mgy
    ge = study_dose(small, dataclasses.replace(base, vendor="ge")).ctdivol_mgy
    siemens = study_dose(small, dataclasses.replace(base, vendor="siemens")).ctdivol_mgy
    assert ge > study_dose(small, base).ctdivol_mgy > siemens
    dose = study_dose(small, base)
    assert dose.dlp_mgycm == pytest.approx(dose.ctdivol_mgy * 6.0, abs=0.1)


def test_seg_loads_with_highdicom_and_references_its_series(extract, truth):
    out, _ = extract
    for row in truth["nodules"]:
        seg = hd.seg.segread(out / row["seg_path"])
        assert seg.SegmentationType == "BINARY"
        ref = seg.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == row["SeriesInstanceUID"]
        assert seg.StudyInstanceUID == row["StudyInstanceUID"]
        study = next(s for s in truth["studies"] if s["SeriesInstanceUID"] == row["SeriesInstanceUID"])
        ct = _series_slices(out / study["ct_series_dir"])
        ct_uids = [ds.SOPInstanceUID for ds in ct]
        assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(ct_uids)
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=ct_uids, segment_numbers=[1], ignore_spatial_locations=True
        )[..., 0]
        assert int(mask.sum()) == int(row["mask_voxels"]) > 0
        assert seg.SegmentSequence[0].TrackingUID == row["tracking_uid"]
        assert seg.SeriesInstanceUID == row["seg_series_instance_uid"]
        # The nodule centre from the truth lies in (or next to) the mask.
        k, j, i = (round(float(row[c])) for c in ("center_k", "center_j", "center_i"))
        near = mask[max(k - 1, 0) : k + 2, max(j - 1, 0) : j + 2, max(i - 1, 0) : i + 2]
        assert near.any()


def test_rtstruct_contours_rasterize_to_the_seg_mask(extract, truth):
    out, _ = extract
    checked = 0
    for study in [s for s in truth["studies"] if s["has_rtstruct"] == "1"]:
        rows = [r for r in truth["nodules"] if r["StudyInstanceUID"] == study["StudyInstanceUID"]]
        rt = pydicom.dcmread(out / rows[0]["rtstruct_path"])
        assert rt.SOPInstanceUID == study["rtstruct_sop_instance_uid"]
        ct = _series_slices(out / study["ct_series_dir"])
        z = np.array([float(ds.ImagePositionPatient[2]) for ds in ct])
        index = {ds.SOPInstanceUID: k for k, ds in enumerate(ct)}
        for_ref = rt.ReferencedFrameOfReferenceSequence[0]
        assert for_ref.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
        series_ref = for_ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
        assert series_ref.SeriesInstanceUID == study["SeriesInstanceUID"]
        assert {c.ReferencedSOPInstanceUID for c in series_ref.ContourImageSequence} == set(index)
        x0, y0 = (float(v) for v in ct[0].ImagePositionPatient[:2])
        ps = float(ct[0].PixelSpacing[0])
        jj, ii = np.mgrid[0:64, 0:64]
        centres = np.stack([x0 + ii.ravel() * ps, y0 + jj.ravel() * ps], axis=1)
        for roi in rt.ROIContourSequence:
            mask = np.zeros((len(ct), 64, 64), dtype=bool)
            for contour in roi.ContourSequence:
                assert contour.ContourGeometricType == "CLOSED_PLANAR"
                points = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
                assert len(points) == contour.NumberOfContourPoints
                k = index[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
                assert np.allclose(points[:, 2], z[k], atol=1e-3)
                mask[k] |= PolygonPath(points[:, :2]).contains_points(centres).reshape(64, 64)
            row = next(r for r in rows if r["roi_number"] == str(roi.ReferencedROINumber))
            seg = hd.seg.segread(out / row["seg_path"])
            seg_mask = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[ds.SOPInstanceUID for ds in ct], segment_numbers=[1],
                ignore_spatial_locations=True,
            )[..., 0].astype(bool)  # fmt: skip
            assert np.array_equal(mask, seg_mask)
            checked += 1
    assert checked > 0


def test_trace_contours_recovers_awkward_masks():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    masks = [
        np.eye(6, dtype=bool) | np.eye(6, k=1, dtype=bool),  # staircase
        np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=bool),  # pixels touching at corners only
        np.array([[0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0]], dtype=bool),  # diagonal ring around a hole
        np.ones((1, 1), dtype=bool),
    ]
    masks += [ndimage.binary_fill_holes(ndimage.gaussian_filter(rng.normal(size=(20, 20)), 2.0) > 0.05)
              for _ in range(30)]  # fmt: skip
    for mask in masks:
        rows, cols = mask.shape
        jj, ii = np.mgrid[0:rows, 0:cols]
        centres = np.stack([ii.ravel(), jj.ravel()], axis=1).astype(float)
        filled = np.zeros(mask.shape, dtype=bool)
        for loop in trace_contours(mask):
            filled |= PolygonPath(loop).contains_points(centres).reshape(mask.shape)
        assert np.array_equal(filled, mask)


# --- PHI ----------------------------------------------------------------------------------------


def test_every_listed_phi_value_is_planted_and_dicom_identifiers_are_listed(extract):
    out, _ = extract
    phi = (out / "truth" / "phi_values.txt").read_text().splitlines()
    assert len(phi) == len(set(phi)) > 50
    assert all(len(v) >= 6 for v in phi)
    blobs = [
        p.read_bytes() + p.relative_to(out).as_posix().encode()
        for p in out.rglob("*")
        if p.is_file() and "truth" not in p.parts
    ]
    missing = [v for v in phi if not any(v.encode() in blob for blob in blobs)]
    assert not missing
    listed = set(phi)
    kinds = set()
    for path in (out / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName",
                        "PatientAddress", "InstitutionName"):  # fmt: skip
            if keyword in ds:
                assert str(ds[keyword].value) in listed, (keyword, path.name)
        for keyword in ("StudyDescription", "PatientComments", "ImageComments"):
            text = str(ds.get(keyword, ""))
            if any(v in text for v in listed):
                kinds.add(keyword)
    assert kinds == {"StudyDescription", "PatientComments", "ImageComments"}


def test_phi_values_do_not_occur_in_innocuous_text(extract, truth):
    out, _ = extract
    phi = [v.lower() for v in (out / "truth" / "phi_values.txt").read_text().splitlines()]
    innocuous = []
    for study in truth["studies"]:
        ds = pydicom.dcmread(next((out / study["ct_series_dir"]).glob("*.dcm")))
        for keyword in ("Manufacturer", "ManufacturerModelName", "SeriesDescription", "ProtocolName",
                        "ConvolutionKernel", "StationName", "SoftwareVersions", "BodyPartExamined"):  # fmt: skip
            innocuous.append(str(ds.get(keyword, "")))
        report = (out / "reports" / f"{study['AccessionNumber']}.txt").read_text()
        body = report[report.index("TECHNIQUE:") : report.index("Electronically signed")]
        innocuous += [line for line in body.splitlines() if not line.startswith("COMPARISON")]
    text = "\n".join(innocuous).lower()
    assert not [v for v in phi if v in text]


@pytest.mark.slow
def test_burned_in_name_and_mrn_are_readable_by_ocr(extract):
    from rapidocr_onnxruntime import RapidOCR

    out, _ = extract
    path = next((out / "dicom").rglob("*.dcm"))
    sc = next(
        ds
        for ds in (pydicom.dcmread(p) for p in sorted(path.parents[3].rglob("*.dcm")))
        if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    )
    assert sc.BurnedInAnnotation == "YES"
    result, _ = RapidOCR()(np.stack([sc.pixel_array] * 3, axis=-1))
    text = " ".join(item[1] for item in result or []).replace(" ", "").upper()
    assert str(sc.PatientID) in text
    assert str(sc.PatientName).split("^")[0] in text


# --- EHR, reports, ground truth ---------------------------------------------------------------


def test_fhir_bundles_and_csv(extract, truth):
    from fhir.resources.R4B.bundle import Bundle

    out, _ = extract
    rows = _csv(out / "ehr" / "ehr.csv")
    with (out / "ehr" / "ehr.csv").open() as handle:
        assert next(csv.reader(handle)) == EHR_COLUMNS
    files = sorted((out / "ehr" / "fhir").glob("*.json"))
    assert [p.stem for p in files] == sorted(r["mrn"] for r in rows)
    for path in files:
        bundle = Bundle.model_validate(json.loads(path.read_text()))
        assert bundle.entry is not None
        kinds = [e.resource.get_resource_type() for e in bundle.entry if e.resource is not None]
        assert len(kinds) == len(bundle.entry)
        assert kinds.count("Patient") == 1 and "Observation" in kinds and "Condition" in kinds
        patient: Any = bundle.entry[0].resource
        assert patient.identifier[0].value == path.stem
    by_id = {r["PatientID"]: r for r in truth["patients"]}
    assert {r["mrn"] for r in rows} == {k for k, r in by_id.items() if r["has_ehr"] == "1"}
    imaging_ids = {p.name.rsplit("_", 1)[1] for p in (out / "dicom").iterdir()}
    assert imaging_ids == {k for k, r in by_id.items() if r["has_imaging"] == "1"}
    assert any(r["has_ehr"] == "0" for r in by_id.values())
    assert any(r["has_imaging"] == "0" for r in by_id.values())
    for row in rows:
        assert row["outcome"] == by_id[row["mrn"]]["outcome"]
        assert (row["outcome_date"] != "") == (row["outcome"] == "1")


def test_reports_have_header_sections_and_findings(extract, truth):
    out, _ = extract
    for study in truth["studies"]:
        text = (out / "reports" / f"{study['AccessionNumber']}.txt").read_text()
        assert f"ACCESSION: {study['AccessionNumber']}" in text
        assert f"MRN: {study['PatientID']}" in text
        for heading in ("TECHNIQUE:", "COMPARISON:", "FINDINGS:", "IMPRESSION:"):
            assert heading in text
        assert re.search(r"\b\d+ mm\b", text)
        assert "pleural effusion" in text.lower()
        assert study["lung_rads"] in text
        nodules = [r for r in truth["nodules"] if r["StudyInstanceUID"] == study["StudyInstanceUID"]]
        assert any(r["lobe"] in ("RUL", "RML", "RLL", "LUL", "LLL") for r in nodules)
        if study["study_index"] != "0":
            assert "COMPARISON: CT chest" in text


def test_ground_truth_growth_and_outcome_model(truth):
    patients = {r["PatientID"]: r for r in truth["patients"]}
    for row in patients.values():
        drivers = {name: float(row[name]) for name, _ in OUTCOME_MODEL.coef}
        assert float(row["linear_predictor"]) == pytest.approx(OUTCOME_MODEL.linear_predictor(drivers), abs=1e-4)
        assert float(row["probability"]) == pytest.approx(1 / (1 + np.exp(-float(row["linear_predictor"]))), abs=1e-5)
    grew = stable = 0
    tracks: dict[str, list[dict[str, str]]] = {}
    for row in truth["nodules"]:
        tracks.setdefault(row["tracking_uid"], []).append(row)
    for rows in tracks.values():
        rows.sort(key=lambda r: int(r["study_index"]))
        sizes = [float(r["diameter_mm"]) for r in rows]
        if len(rows) > 1 and rows[0]["malignant"] == "1":
            assert all(b > a for a, b in itertools.pairwise(sizes))
            grew += 1
        elif len(rows) > 1:
            assert len(set(sizes)) == 1
            stable += 1
        if rows[0]["malignant"] == "1":
            assert patients[rows[0]["PatientID"]]["outcome"] == "1"
    assert grew and stable


def test_cohort_outcome_prevalence_and_size_difference():
    plans = plan_cohort(1500, 11)
    imaging = [p for p in plans if p.has_imaging]
    prevalence = np.mean([p.outcome for p in imaging])
    assert 0.28 <= prevalence <= 0.45
    diam = np.array([p.nodules[0].diameter_mm for p in imaging])
    outcome = np.array([p.outcome for p in imaging])
    assert diam[outcome == 1].mean() > diam[outcome == 0].mean() + 1.0
    # Realistic overlap: plenty of small malignant and large benign nodules.
    assert (diam[outcome == 1] < 8).mean() > 0.1 and (diam[outcome == 0] > 8).mean() > 0.1
    assert 0.02 <= np.mean([not p.has_imaging for p in plans]) <= 0.04
    assert 0.02 <= np.mean([not p.has_ehr for p in imaging]) <= 0.04
    assert len({p.person.mrn for p in plans}) == len(plans)
    assert len({s.accession for p in plans for s in p.studies}) == sum(len(p.studies) for p in plans)
