"""EHR linkage: FHIR and CSV readers, linkage counts, pseudonyms only, age at scan."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.cohort import ehr
from pacs_workbench.core.pseudonym import pseudonymize
from tests.orthanc import cached_extract

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def extract() -> Path:
    return cached_extract(patients=4, seed=3)


@pytest.fixture(scope="module")
def truth(extract: Path) -> pd.DataFrame:
    return pd.read_csv(extract / "truth" / "patients.csv", dtype={"PatientID": str})


@pytest.fixture(scope="module")
def studies(extract: Path) -> pd.DataFrame:
    """The identified studies table the cohort has (from the index; here from the truth)."""
    return pd.read_csv(extract / "truth" / "studies.csv", dtype=str)[
        ["PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber", "study_index"]
    ]


def test_fhir_and_csv_give_the_truth(extract: Path, truth: pd.DataFrame) -> None:
    fhir = ehr.read_fhir_bundles(extract / "ehr" / "fhir")
    csv = ehr.read_ehr_csv(extract / "ehr" / "ehr.csv")
    assert fhir.errors.empty and csv.errors.empty
    expected = truth[truth["has_ehr"] == 1].set_index("PatientID")
    for table in (fhir, csv):
        got = table.patients.set_index("mrn").loc[expected.index]
        assert list(got["smoking_status"]) == list(expected["smoking_status"])
        assert list(got["outcome"].astype(int)) == list(expected["outcome"])
        recorded = expected["pack_years_recorded"] == 1
        assert got.loc[recorded, "pack_years"].astype(float).tolist() == expected.loc[recorded, "pack_years"].tolist()
        assert got.loc[~recorded, "pack_years"].isna().all()  # missing stays missing
        dates = [d.isoformat() if d else None for d in got["outcome_date"]]
        assert dates == [None if pd.isna(d) else d for d in expected["outcome_date"]]
        for lab in ("cea_ng_ml", "hemoglobin_g_dl", "crp_mg_l"):
            assert got[lab].notna().all()
    # Both sources agree on every clinical value and lab.
    both = fhir.patients.set_index("mrn").sort_index()
    other = csv.patients.set_index("mrn").sort_index()
    for column in ("cea_ng_ml", "hemoglobin_g_dl", "crp_mg_l", "birth_date"):
        assert list(both[column]) == list(other[column])
    merged = ehr.read_ehr(extract / "ehr")
    assert merged.disagreements == 0
    assert merged.sources == {"fhir": len(expected), "csv": len(expected), "both": len(expected)}
    # Identifying CSV columns are not read (fail closed), only named.
    assert {"family", "given", "address", "phone"} <= set(csv.dropped_columns)
    assert not {"family", "given", "address", "phone"} & set(csv.patients.columns)


def test_linkage_counts_both_sides_and_drops_no_one(
    extract: Path, truth: pd.DataFrame, studies: pd.DataFrame
) -> None:
    linkage = ehr.link_ehr(ehr.read_ehr(extract / "ehr"), studies, KEY)
    s = linkage.summary
    imaging, in_ehr = truth["has_imaging"] == 1, truth["has_ehr"] == 1
    assert s["imaging_patients"] == int(imaging.sum())
    assert s["ehr_patients"] == int(in_ehr.sum())
    assert s["linked"] == int((imaging & in_ehr).sum())
    assert s["imaging_only"] == int((imaging & ~in_ehr).sum()) >= 1  # the synth plants linkage gaps
    assert s["ehr_only"] == int((~imaging & in_ehr).sum()) >= 1
    patients = linkage.patients
    assert len(patients) == len(truth)  # everyone, in either source
    expected = {pseudonymize(KEY, m, "patient"): (h, e) for m, h, e in truth[["PatientID", "has_imaging", "has_ehr"]].itertuples(index=False)}  # noqa: E501
    got = {p: (int(i), int(e)) for p, i, e in patients[["pseudo_patient_id", "in_imaging", "in_ehr"]].itertuples(index=False)}  # noqa: E501
    assert got == expected
    only_imaging = patients[~patients["in_ehr"]]
    assert only_imaging["outcome"].isna().all() and only_imaging["smoking_status"].isna().all()
    table = linkage.summary_table()
    assert list(table.columns) == ["what", "count"] and table["count"].sum() > 0


def test_outputs_carry_pseudonyms_and_no_phi(extract: Path, studies: pd.DataFrame) -> None:
    linkage = ehr.link_ehr(ehr.read_ehr(extract / "ehr"), studies, KEY)
    phi = [v for v in (extract / "truth" / "phi_values.txt").read_text().splitlines() if v]
    for frame in (linkage.patients, linkage.studies, ehr.cohort_columns(linkage)):
        assert "pseudo_patient_id" in frame.columns
        assert not {"mrn", "birth_date", "PatientID", "PatientName", "StudyInstanceUID"} & set(frame.columns)
        cells = {str(v) for v in frame.to_numpy().ravel()}
        leaked = [v for v in phi if v in cells or any(v in c for c in cells if len(c) > 6)]
        assert not leaked


def test_age_at_scan_and_days_to_outcome(extract: Path, truth: pd.DataFrame, studies: pd.DataFrame) -> None:
    table = ehr.read_ehr(extract / "ehr")
    ages = ehr.age_at_scan(table, studies, KEY)
    assert list(ages.columns) == ["pseudo_patient_id", "pseudo_study_id", "age_at_scan"]
    by_study = ages.set_index("pseudo_study_id")["age_at_scan"]
    births = table.patients.set_index("mrn")["birth_date"]
    for mrn, uid, date in studies[["PatientID", "StudyInstanceUID", "StudyDate"]].itertuples(index=False):
        age = by_study[pseudonymize(KEY, uid, "study")]
        if mrn not in births.index:
            assert pd.isna(age)  # imaging-only patient: no birth date to use
            continue
        scan = dt.datetime.strptime(date, "%Y%m%d").date()
        birth = births[mrn]
        assert age == scan.year - birth.year - ((scan.month, scan.day) < (birth.month, birth.day))
    baseline = studies[studies["study_index"] == "0"].merge(truth, on="PatientID")
    baseline = baseline[baseline["has_ehr"] == 1]
    got = [by_study[pseudonymize(KEY, u, "study")] for u in baseline["StudyInstanceUID"]]
    assert all(abs(int(a) - int(t)) <= 1 for a, t in zip(got, baseline["age"], strict=True))
    linkage = ehr.link_ehr(table, studies, KEY)
    with_outcome = linkage.studies.dropna(subset=["days_to_outcome"])
    assert len(with_outcome) >= 1 and (with_outcome["days_to_outcome"] >= 0).all()


def test_bad_files_are_reported_without_names_or_values(extract: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ehr" / "fhir"
    folder.mkdir(parents=True)
    good = sorted((extract / "ehr" / "fhir").glob("*.json"))
    shutil.copy(good[0], folder / good[0].name)
    (folder / "H9999991.json").write_text("{not json")
    bundle = json.loads(good[0].read_text())
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    (folder / "H9999992.json").write_text(json.dumps(bundle))
    bundle = json.loads(good[0].read_text())
    bundle["entry"][0]["resource"]["birthDate"] = "19XX-01-01"
    (folder / "H9999993.json").write_text(json.dumps(bundle))
    table = ehr.read_fhir_bundles(folder)
    assert len(table.patients) == 1 and len(table.errors) == 3
    text = " ".join(table.errors["error"]) + " ".join(table.errors["source"])
    assert "H99999" not in text and "19XX" not in text
    assert "not valid JSON" in text and "0 Patient" in text and "invalid FHIR" in text
    csv = tmp_path / "ehr.csv"
    csv.write_text("mrn,given,outcome\nH1,Zenobia,1\n,Zenobia,0\nH1,Zenobia,0\n")
    table = ehr.read_ehr_csv(csv)
    assert list(table.patients["mrn"]) == ["H1"] and len(table.errors) == 2
    assert "Zenobia" not in table.errors.to_string()


def test_identifier_in_output_fails_closed(studies: pd.DataFrame) -> None:
    patients = pd.DataFrame([{"mrn": "H0000001", "birth_date": None, "outcome": 0, "note": "H0000001"}])
    with pytest.raises(ehr.IdentifierLeakError):
        ehr.link_ehr(patients, studies, KEY)
    patients = pd.DataFrame([{"mrn": "H0000001", "birth_date": None, "PatientName": "X^Y"}])
    with pytest.raises(ehr.IdentifierLeakError):
        ehr.link_ehr(patients, studies, KEY)
