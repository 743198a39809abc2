"""EHR linkage: FHIR R4 bundles and the CSV export, joined to imaging by MRN, handed on pseudonymized.

The EHR extract lives in the identified zone, keyed by MRN, the same value as
(0010,0020) Patient ID in the images. This module reads it (FHIR R4 bundles with
``fhir.resources``, one per patient, and/or the flat CSV export), links it to the
imaging studies by MRN, and hands on only keyed pseudonyms: ``pseudo_patient_id`` =
``pseudonymize(key, MRN, "patient")`` and ``pseudo_study_id`` =
``pseudonymize(key, StudyInstanceUID, "study")``, the same calls the cohort makes, so
de-identified imaging and EHR extracts join later. The birth date is read only to
compute the age at each scan; no output carries an MRN, a name, an address or a birth
date.

Patients in one source and not the other are counted and returned (flags
``in_imaging`` and ``in_ehr``), never dropped silently. Unreadable files give an error
record without the file name (file names carry the MRN) or any input value.

Columns handed on (:func:`link_ehr`):

- patients: ``pseudo_patient_id``, ``in_imaging``, ``in_ehr``, ``smoking_status``
  (current/former/never), ``pack_years``, ``outcome`` (0/1), ``outcome_date``, one
  column per lab (``cea_ng_ml``, ``hemoglobin_g_dl``, ``crp_mg_l``, else
  ``lab_<LOINC>``);
- studies: ``pseudo_patient_id``, ``pseudo_study_id``, ``age_at_scan`` (completed
  years), ``days_to_outcome`` (outcome date minus study date, for patients with the
  outcome).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.pseudonym import pseudonymize
from pacs_workbench.dicom.attributes import to_float

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
# Labs by LOINC code -> column (value in the unit the column names).
LAB_COLUMNS: dict[str, str] = {
    "2039-6": "cea_ng_ml",  # Carcinoembryonic Ag [Mass/volume] in Serum or Plasma
    "718-7": "hemoglobin_g_dl",  # Hemoglobin [Mass/volume] in Blood
    "1988-5": "crp_mg_l",  # C reactive protein [Mass/volume] in Serum or Plasma
}
SMOKING_STATUS_LOINC = "72166-2"  # Tobacco smoking status
PACK_YEARS_CODES = {"401201003", "8664-7"}  # SNOMED pack-years; LOINC cigarette pack-years
SMOKING_SNOMED = {
    "77176002": "current",  # Smoker
    "449868002": "current",  # Smokes tobacco daily
    "428041000124106": "current",  # Occasional tobacco smoker
    "8517006": "former",  # Ex-smoker
    "266919005": "never",  # Never smoked tobacco
}
# Outcome: a confirmed lung malignancy (SNOMED) or words saying so.
OUTCOME_SNOMED = {"363358000", "254637007", "93880001", "162573006", "187875007"}
_OUTCOME_WORDS = re.compile(r"malignan|carcinoma|cancer|neoplasm of (the )?lung", re.IGNORECASE)
CLINICAL_COLUMNS = ("smoking_status", "pack_years", "outcome", "outcome_date")
_IDENTIFIED = ("mrn", "birth_date")
_CSV_ALIASES = {
    "mrn": "mrn",
    "patientid": "mrn",
    "patient_id": "mrn",
    "birth_date": "birth_date",
    "birthdate": "birth_date",
    "dob": "birth_date",
    "date_of_birth": "birth_date",
    "smoking_status": "smoking_status",
    "smoking": "smoking_status",
    "pack_years": "pack_years",
    "packyears": "pack_years",
    "outcome": "outcome",
    "outcome_date": "outcome_date",
    "diagnosis_date": "outcome_date",
}
_OUTCOME_VALUES = {"1": 1, "yes": 1, "true": 1, "y": 1, "0": 0, "no": 0, "false": 0, "n": 0}
_LAB_COLUMN = re.compile(r"^(lab_.+|.+_(ng_ml|g_dl|mg_l|mg_dl|u_l|mmol_l|umol_l|g_l|pct|percent|k_ul))$")


class IdentifierLeakError(RuntimeError):
    """An output about to leave would carry an identifier (the run stops instead)."""


@dataclass
class EhrTable:
    """EHR patients read from one or more sources (identified zone: carries MRN and birth date).

    Attributes
    ----------
    patients
        One row per MRN: ``mrn``, ``birth_date`` (``datetime.date``), the clinical columns and labs.
    errors
        One row per unreadable input: ``source`` (``fhir #<n>`` or ``csv row <n>``), ``error``.
    sources
        Per source, the number of patients read (e.g. ``{"fhir": 120, "csv": 120}``).
    disagreements
        Patients whose FHIR and CSV values differ in a clinical column.
    dropped_columns
        CSV columns not read because they are not known clinical columns (names only).
    """

    patients: pd.DataFrame
    errors: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["source", "error"]))
    sources: dict[str, int] = field(default_factory=dict)
    disagreements: int = 0
    dropped_columns: list[str] = field(default_factory=list)


@dataclass
class EhrLinkage:
    """Pseudonymized EHR data linked to imaging, and what could not be linked."""

    patients: pd.DataFrame
    studies: pd.DataFrame
    summary: dict[str, int]

    def summary_table(self) -> pd.DataFrame:
        """The linkage counts as a two-column table (for reports)."""
        return pd.DataFrame({"count": pd.Series(self.summary)}).rename_axis("what").reset_index()


# --- reading -----------------------------------------------------------------------------------


def _codes(concept: Any) -> list[tuple[str, str]]:
    if concept is None:
        return []
    return [(str(c.system or ""), str(c.code or "")) for c in (concept.coding or [])]


def _concept_text(concept: Any) -> str:
    if concept is None:
        return ""
    parts = [concept.text or ""] + [c.display or "" for c in (concept.coding or [])]
    return " ".join(p for p in parts if p)


def _mrn_of(patient: Any) -> str | None:
    identifiers = list(patient.identifier or [])
    for ident in identifiers:
        type_codes = {code for _system, code in _codes(ident.type)}
        if "MR" in type_codes or "mrn" in str(ident.system or "").lower():
            return str(ident.value).strip() if ident.value else None
    return str(identifiers[0].value).strip() if identifiers and identifiers[0].value else None


def _as_date(value: Any) -> dt.date | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    if not text:
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%m/%d/%Y", "%Y-%m-%dT%H:%M:%S"):
        try:
            return dt.datetime.strptime(text[: len(dt.date(2000, 1, 1).strftime(fmt))], fmt).date()
        except ValueError:
            continue
    return None


def _observation_value(obs: Any) -> Any:
    if obs.valueQuantity is not None and obs.valueQuantity.value is not None:
        return float(obs.valueQuantity.value)
    if obs.valueCodeableConcept is not None:
        return obs.valueCodeableConcept
    for name in ("valueInteger", "valueDecimal", "valueString", "valueBoolean"):
        value = getattr(obs, name, None)
        if value is not None:
            return value
    return None


def _smoking_from(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.lower()
    else:
        for _system, code in _codes(value):
            if code in SMOKING_SNOMED:
                return SMOKING_SNOMED[code]
        text = _concept_text(value).lower()
    if "never" in text or "non-smoker" in text or "nonsmoker" in text:
        return "never"
    if "former" in text or "ex-smoker" in text or "ex smoker" in text or "quit" in text:
        return "former"
    if "current" in text or "smoker" in text or "smokes" in text:
        return "current"
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def patient_from_bundle(bundle: Any) -> dict[str, Any]:
    """One EHR row from a FHIR R4 Bundle holding a Patient and its Observations and Conditions.

    Reads ``Patient.identifier`` (the MR-typed one) and ``Patient.birthDate``; Observations
    for smoking status (LOINC 72166-2), pack-years and laboratory values (by LOINC code);
    Conditions coding a lung malignancy for ``outcome`` (1) and ``outcome_date`` (onset,
    else recorded date). A patient without such a Condition has ``outcome`` 0.

    Raises
    ------
    ValueError
        When the bundle holds no Patient or the Patient has no identifier.
    """
    row: dict[str, Any] = {"outcome": 0, "outcome_date": None}
    patients = []
    labs_seen: dict[str, tuple[dt.datetime | None, float]] = {}
    for entry in bundle.entry or []:
        resource = entry.resource
        if resource is None:
            continue
        kind = resource.get_resource_type()
        if kind == "Patient":
            patients.append(resource)
        elif kind == "Observation":
            if str(getattr(resource, "status", "") or "") in ("entered-in-error", "cancelled"):
                continue
            codes = _codes(resource.code)
            code_set = {code for _system, code in codes}
            value = _observation_value(resource)
            text = _concept_text(resource.code).lower()
            if SMOKING_STATUS_LOINC in code_set or ("smok" in text and "pack" not in text):
                row["smoking_status"] = _smoking_from(value)
            elif code_set & PACK_YEARS_CODES or "pack" in text:
                row["pack_years"] = float(value) if isinstance(value, int | float) else None
            elif isinstance(value, int | float):
                loinc = next((code for system, code in codes if system == LOINC), None)
                column = LAB_COLUMNS.get(loinc or "") or (f"lab_{_slug(loinc)}" if loinc else f"lab_{_slug(text)}")
                when = resource.effectiveDateTime
                stamp = when if isinstance(when, dt.datetime) else None
                # The latest measurement wins when a lab was measured more than once.
                previous = labs_seen.get(column)
                if previous is None or (stamp is not None and (previous[0] is None or stamp >= previous[0])):
                    labs_seen[column] = (stamp, float(value))
        elif kind == "Condition":
            verification = {code for _s, code in _codes(resource.verificationStatus)}
            if verification & {"refuted", "entered-in-error"}:
                continue
            condition_codes = {code for _system, code in _codes(resource.code)}
            if condition_codes & OUTCOME_SNOMED or _OUTCOME_WORDS.search(_concept_text(resource.code)):
                onset = _as_date(resource.onsetDateTime) or _as_date(resource.recordedDate)
                row["outcome"] = 1
                if onset is not None and (row["outcome_date"] is None or onset < row["outcome_date"]):
                    row["outcome_date"] = onset
    if len(patients) != 1:
        raise ValueError(f"bundle holds {len(patients)} Patient resources (expected 1)")
    mrn = _mrn_of(patients[0])
    if not mrn:
        raise ValueError("Patient has no identifier")
    row["mrn"] = mrn
    row["birth_date"] = _as_date(patients[0].birthDate)
    row.update({column: value for column, (_stamp, value) in labs_seen.items()})
    return row


def _safe_error(exc: Exception) -> str:
    """An error message without input values (they may be identifiers or dates)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            items = errors()
            if any(item.get("type") == "json_invalid" for item in items):
                return "not valid JSON"
            where = "; ".join(
                ".".join(str(p) for p in item.get("loc", ())) + f": {item.get('type')}" for item in items[:5]
            )
            return f"{type(exc).__name__}: invalid FHIR ({where})"
        except Exception:  # a validation error we cannot take apart: name only
            return f"{type(exc).__name__}: invalid FHIR"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, ValueError) and str(exc).startswith(("bundle holds", "Patient has")):
        return str(exc)
    return type(exc).__name__


def read_fhir_bundles(folder: str | os.PathLike[str]) -> EhrTable:
    """Read every ``*.json`` FHIR R4 Bundle in ``folder`` (one patient each).

    Returns
    -------
    EhrTable
        Patients (identified) and one error row per unreadable file (``source`` is
        ``fhir #<n>`` in sorted file order: the file names carry MRNs).
    """
    from fhir.resources.R4B.bundle import Bundle

    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    files = sorted(Path(folder).glob("*.json"))
    for n, path in enumerate(files, start=1):
        try:
            bundle = Bundle.model_validate_json(path.read_bytes())
            rows.append(patient_from_bundle(bundle))
        except Exception as exc:  # one bad file never stops the others
            errors.append({"source": f"fhir #{n}", "error": _safe_error(exc)})
    patients = _dedupe(pd.DataFrame(rows), errors, "fhir")
    return EhrTable(patients, pd.DataFrame(errors, columns=["source", "error"]), {"fhir": len(patients)})


def _dedupe(frame: pd.DataFrame, errors: list[dict[str, str]], source: str) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=["mrn", "birth_date", *CLINICAL_COLUMNS])
    dupes = frame["mrn"].duplicated(keep="first")
    for _ in range(int(dupes.sum())):
        errors.append({"source": source, "error": "duplicate MRN: later record ignored"})
    return frame[~dupes].reset_index(drop=True)


def read_ehr_csv(path: str | os.PathLike[str]) -> EhrTable:
    """Read the flat EHR export (one row per patient, keyed by ``mrn``).

    Only known columns are read: ``mrn``, ``birth_date``, ``smoking_status``,
    ``pack_years``, ``outcome``, ``outcome_date`` (common aliases accepted) and lab
    columns (``lab_*`` or named with a unit suffix such as ``_ng_ml``). Every other
    column (names, addresses, phone numbers...) is left out and its name listed in
    ``dropped_columns``: unknown columns fail closed.
    """
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    rename: dict[str, str] = {}
    dropped: list[str] = []
    for column in raw.columns:
        key = _slug(column)
        if key in _CSV_ALIASES:
            rename[column] = _CSV_ALIASES[key]
        elif _LAB_COLUMN.match(key):
            rename[column] = key
        else:
            dropped.append(column)
    if "mrn" not in rename.values():
        raise ValueError(f"{path}: EHR export has no MRN column (expected 'mrn')")
    frame = raw[list(rename)].rename(columns=rename)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for n, record in enumerate(frame.to_dict("records"), start=2):
        mrn = str(record.get("mrn", "")).strip()
        if not mrn:
            errors.append({"source": f"csv row {n}", "error": "empty MRN"})
            continue
        row: dict[str, Any] = {"mrn": mrn, "birth_date": _as_date(record.get("birth_date"))}
        if record.get("birth_date") and row["birth_date"] is None:
            errors.append({"source": f"csv row {n}", "error": "unreadable birth date"})
        status = str(record.get("smoking_status", "")).strip()
        row["smoking_status"] = _smoking_from(status) if status else None
        row["pack_years"] = to_float(record.get("pack_years"))
        outcome = str(record.get("outcome", "")).strip().lower()
        row["outcome"] = _OUTCOME_VALUES.get(outcome)
        row["outcome_date"] = _as_date(record.get("outcome_date"))
        for column in frame.columns:
            if column not in _IDENTIFIED and column not in CLINICAL_COLUMNS:
                row[column] = to_float(record.get(column))
        rows.append(row)
    patients = _dedupe(pd.DataFrame(rows), errors, "csv")
    return EhrTable(patients, pd.DataFrame(errors, columns=["source", "error"]), {"csv": len(patients)}, 0, dropped)


def read_ehr(ehr_dir: str | os.PathLike[str]) -> EhrTable:
    """Read the EHR extract folder: ``fhir/*.json`` and/or ``ehr.csv``.

    When both are present, FHIR values come first and the CSV fills what FHIR lacks;
    patients in either are kept; patients whose clinical values differ between the two
    are counted in ``disagreements``.

    Raises
    ------
    FileNotFoundError
        When the folder holds neither source.
    """
    folder = Path(ehr_dir)
    fhir_dir, csv_file = folder / "fhir", folder / "ehr.csv"
    tables = []
    if fhir_dir.is_dir():
        tables.append(read_fhir_bundles(fhir_dir))
    if csv_file.is_file():
        tables.append(read_ehr_csv(csv_file))
    if not tables:
        raise FileNotFoundError(f"no EHR found in {folder} (expected fhir/*.json or ehr.csv)")
    if len(tables) == 1:
        return tables[0]
    fhir, csv = tables
    merged = fhir.patients.set_index("mrn").combine_first(csv.patients.set_index("mrn"))
    both = fhir.patients.set_index("mrn").index.intersection(csv.patients.set_index("mrn").index)
    disagree = 0
    left, right = fhir.patients.set_index("mrn"), csv.patients.set_index("mrn")
    for mrn in both:
        for column in CLINICAL_COLUMNS:
            a, b = left.at[mrn, column], right.at[mrn, column]
            if _present(a) and _present(b) and not _same(a, b):
                disagree += 1
                break
    return EhrTable(
        merged.reset_index(),
        pd.concat([fhir.errors, csv.errors], ignore_index=True),
        {**fhir.sources, **csv.sources, "both": len(both)},
        disagree,
        csv.dropped_columns,
    )


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and value is not pd.NaT


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(abs(float(a) - float(b)) < 1e-6)
    return bool(a == b)


# --- linkage -----------------------------------------------------------------------------------


def _study_date(value: Any) -> dt.date | None:
    return _as_date(value)


def age_in_years(birth: dt.date | None, on: dt.date | None) -> int | None:
    """Completed years between ``birth`` and ``on`` (``None`` when either is unknown)."""
    if birth is None or on is None or on < birth:
        return None
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def age_at_scan(ehr: EhrTable | pd.DataFrame, studies: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """Age at each scan, from the EHR birth date and (0008,0020) Study Date.

    Parameters
    ----------
    ehr
        EHR patients (``mrn``, ``birth_date``).
    studies
        Studies table with ``PatientID``, ``StudyInstanceUID``, ``StudyDate`` (``YYYYMMDD``).
    key
        Project key.

    Returns
    -------
    pandas.DataFrame
        ``pseudo_patient_id``, ``pseudo_study_id``, ``age_at_scan`` (completed years,
        missing when the patient has no EHR birth date).
    """
    return _link_studies(_patients(ehr), studies, key)[["pseudo_patient_id", "pseudo_study_id", "age_at_scan"]]


def _patients(ehr: EhrTable | pd.DataFrame) -> pd.DataFrame:
    return ehr.patients if isinstance(ehr, EhrTable) else ehr


def _link_studies(patients: pd.DataFrame, studies: pd.DataFrame, key: bytes) -> pd.DataFrame:
    missing = {"PatientID", "StudyInstanceUID", "StudyDate"} - set(studies.columns)
    if missing:
        raise ValueError(f"studies table lacks column(s) {', '.join(sorted(missing))}")
    by_mrn = patients.set_index("mrn") if not patients.empty else pd.DataFrame()
    rows = []
    for mrn, study_uid, date in studies[["PatientID", "StudyInstanceUID", "StudyDate"]].drop_duplicates(
        "StudyInstanceUID"
    ).itertuples(index=False, name=None):
        mrn_text = str(mrn).strip()
        scan = _study_date(date)
        record = by_mrn.loc[mrn_text] if mrn_text in by_mrn.index else None
        birth = _as_date(record["birth_date"]) if record is not None else None
        outcome_date = _as_date(record["outcome_date"]) if record is not None else None
        rows.append(
            {
                "pseudo_patient_id": pseudonymize(key, mrn_text, "patient"),
                "pseudo_study_id": pseudonymize(key, str(study_uid), "study"),
                "age_at_scan": age_in_years(birth, scan),
                "days_to_outcome": (outcome_date - scan).days if outcome_date and scan else None,
            }
        )
    frame = pd.DataFrame(rows, columns=["pseudo_patient_id", "pseudo_study_id", "age_at_scan", "days_to_outcome"])
    frame["age_at_scan"] = frame["age_at_scan"].astype("Int64")
    frame["days_to_outcome"] = frame["days_to_outcome"].astype("Int64")
    return frame


def link_ehr(ehr: EhrTable | pd.DataFrame, studies: pd.DataFrame, key: bytes) -> EhrLinkage:
    """Link EHR patients to imaging by MRN = (0010,0020) Patient ID and pseudonymize.

    Parameters
    ----------
    ehr
        From :func:`read_ehr` (or its ``patients`` table).
    studies
        Imaging studies (identified zone): ``PatientID``, ``StudyInstanceUID``, ``StudyDate``.
    key
        Project key from :func:`pacs_workbench.core.pseudonym.load_key`.

    Returns
    -------
    EhrLinkage
        ``patients`` (one row per patient in either source, with ``in_imaging`` and
        ``in_ehr``), ``studies`` (age at scan, days to outcome) and ``summary`` counts:
        ``imaging_patients``, ``ehr_patients``, ``linked``, ``imaging_only``,
        ``ehr_only``, ``studies``, ``studies_with_age``, ``ehr_errors``. No MRN, name or
        birth date leaves.
    """
    patients = _patients(ehr).copy()
    imaging_mrns = {str(v).strip() for v in studies["PatientID"].dropna()}
    ehr_mrns = {str(v).strip() for v in patients["mrn"]} if not patients.empty else set()
    everyone = sorted(imaging_mrns | ehr_mrns)
    clinical = [c for c in patients.columns if c not in _IDENTIFIED]
    indexed = patients.set_index("mrn") if not patients.empty else pd.DataFrame(columns=clinical)
    rows = []
    for mrn in everyone:
        row: dict[str, Any] = {
            "pseudo_patient_id": pseudonymize(key, mrn, "patient"),
            "in_imaging": mrn in imaging_mrns,
            "in_ehr": mrn in ehr_mrns,
        }
        if mrn in ehr_mrns:
            row.update({c: indexed.at[mrn, c] for c in clinical})
        rows.append(row)
    out = pd.DataFrame(rows, columns=["pseudo_patient_id", "in_imaging", "in_ehr", *clinical])
    if "outcome" in out.columns:
        out["outcome"] = out["outcome"].astype("Int64")
    study_rows = _link_studies(patients, studies, key)
    summary = {
        "imaging_patients": len(imaging_mrns),
        "ehr_patients": len(ehr_mrns),
        "linked": len(imaging_mrns & ehr_mrns),
        "imaging_only": len(imaging_mrns - ehr_mrns),
        "ehr_only": len(ehr_mrns - imaging_mrns),
        "studies": len(study_rows),
        "studies_with_age": int(study_rows["age_at_scan"].notna().sum()),
        "ehr_errors": len(ehr.errors) if isinstance(ehr, EhrTable) else 0,
    }
    _assert_no_identifiers([out, study_rows], patients)
    return EhrLinkage(out, study_rows, summary)


def _assert_no_identifiers(frames: Iterable[pd.DataFrame], patients: pd.DataFrame) -> None:
    """Fail closed: no output column may be an identifier, no cell an MRN."""
    mrns = set(patients["mrn"].astype(str)) if "mrn" in patients.columns else set()
    for frame in frames:
        bad = set(frame.columns) & {"mrn", "birth_date", "PatientID", "PatientName", "PatientBirthDate", "name"}
        if bad:
            raise IdentifierLeakError(f"identifier column(s) in an EHR output: {sorted(bad)}")
        for column in frame.columns:
            if mrns and not pd.api.types.is_numeric_dtype(frame[column]) and frame[column].astype(str).isin(mrns).any():
                raise IdentifierLeakError(f"an MRN value in EHR output column {column!r}")


def cohort_columns(linkage: EhrLinkage) -> pd.DataFrame:
    """Per-study cohort columns: study rows joined with their patient's EHR values."""
    return linkage.studies.merge(linkage.patients, on="pseudo_patient_id", how="left")


def load_and_link(
    ehr_dir: str | os.PathLike[str], studies: pd.DataFrame, key: bytes
) -> EhrLinkage:
    """:func:`read_ehr` then :func:`link_ehr`."""
    return link_ehr(read_ehr(ehr_dir), studies, key)

