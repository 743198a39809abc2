"""EHR export: one FHIR R4 Bundle per patient plus a flat CSV, keyed by MRN.

Bundles are built and validated with ``fhir.resources`` (its ``R4B`` models, whose JSON is
R4-compatible for the resources used here) and hold:

- ``Patient``: MRN identifier (type ``MR``, the institution's system), a regional exchange
  identifier, name, gender, birthDate, address, telecom.
- ``Observation`` smoking status (LOINC 72166-2, SNOMED answer), cigarette pack-years
  (SNOMED 401201003; missing for about 5 % of patients, as in real records), and labs:
  CEA (LOINC 2039-6), hemoglobin (LOINC 718-7), CRP (LOINC 1988-5).
- ``Condition`` pulmonary nodule (ICD-10-CM R91.1, onset at the baseline CT) and, for
  patients with the outcome, lung cancer (ICD-10-CM C34.x by lobe, SNOMED 363358000) with
  ``onsetDateTime`` the date of confirmation.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from pacs_workbench.synth.common import make_uuid
from pacs_workbench.synth.patients import INSTITUTIONS, PatientPlan

#: Columns of ``ehr/ehr.csv`` in order.
EHR_COLUMNS = [
    "mrn", "family", "given", "birth_date", "sex", "address", "phone", "smoking_status", "pack_years",
    "cea_ng_ml", "hemoglobin_g_dl", "crp_mg_l", "nodule_date", "outcome", "outcome_date", "last_contact_date",
]  # fmt: skip

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
REGIONAL_SYSTEM = "urn:oid:2.16.840.1.113883.3.9101.99"
SMOKING_CODES = {
    "current": ("77176002", "Smoker"),
    "former": ("8517006", "Ex-smoker"),
    "never": ("266919005", "Never smoked tobacco"),
}
CANCER_ICD = {
    "RUL": ("C34.11", "Malignant neoplasm of upper lobe, right bronchus or lung"),
    "RML": ("C34.2", "Malignant neoplasm of middle lobe, bronchus or lung"),
    "RLL": ("C34.31", "Malignant neoplasm of lower lobe, right bronchus or lung"),
    "LUL": ("C34.12", "Malignant neoplasm of upper lobe, left bronchus or lung"),
    "LLL": ("C34.32", "Malignant neoplasm of lower lobe, left bronchus or lung"),
}
LABS = {
    "cea_ng_ml": ("2039-6", "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma", "ng/mL"),
    "hemoglobin_g_dl": ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL"),
    "crp_mg_l": ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L"),
}


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def build_bundle(plan: PatientPlan) -> Bundle:
    """The patient's FHIR Bundle (type ``collection``), validated by ``fhir.resources``."""
    patient_id = make_uuid(plan.seed, "fhir", plan.index, "patient")
    subject = {"reference": f"urn:uuid:{patient_id}"}
    entries = [_patient(plan, patient_id), *_observations(plan, subject), *_conditions(plan, subject)]
    bundle = {
        "resourceType": "Bundle",
        "id": make_uuid(plan.seed, "fhir", plan.index, "bundle"),
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in entries],
    }
    return Bundle.model_validate(bundle)


def _patient(plan: PatientPlan, patient_id: str) -> dict[str, Any]:
    """The Patient resource, with the identifiers, name, phone and address an EHR export carries."""
    person = plan.person
    inst = INSTITUTIONS[plan.institution]
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [
            {
                "use": "usual",
                "type": _coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number"),
                "system": inst.mrn_system,
                "value": person.mrn,
            },
            {"use": "secondary", "system": REGIONAL_SYSTEM, "value": person.other_id},
        ],
        "name": [{"use": "official", "text": person.natural_name, "family": person.family, "given": [person.given]}],
        "telecom": [{"system": "phone", "value": person.phone, "use": "home"}],
        "gender": "female" if person.sex == "F" else "male",
        "birthDate": person.birth_date.isoformat(),
        "address": [
            {
                "use": "home",
                "text": person.address,
                "line": [person.address_line],
                "city": person.city,
                "state": person.state,
                "postalCode": person.postal_code,
                "country": "US",
            }
        ],
        "managingOrganization": {"display": inst.name},
    }


def _observation(
    plan: PatientPlan,
    subject: dict[str, str],
    key: str,
    code: dict[str, Any],
    category: str,
    when: str,
    value: dict[str, Any],
) -> dict[str, Any]:
    """One Observation resource of the patient (``key`` fixes its id)."""
    return {
        "resourceType": "Observation",
        "id": make_uuid(plan.seed, "fhir", plan.index, key),
        "status": "final",
        "category": [
            _coding("http://terminology.hl7.org/CodeSystem/observation-category", category,
                    "Social History" if category == "social-history" else "Laboratory")
        ],
        "code": code,
        "subject": subject,
        "effectiveDateTime": when,
        **value,
    }  # fmt: skip


def _observations(plan: PatientPlan, subject: dict[str, str]) -> list[dict[str, Any]]:
    """Smoking status, pack-years (when recorded) and the labs drawn before the baseline CT."""
    baseline = plan.baseline_date
    lab_day = (baseline - dt.timedelta(days=9)).isoformat()
    code, display = SMOKING_CODES[plan.smoking_status]
    observations = [
        _observation(
            plan, subject, "smoking-status", _coding(LOINC, "72166-2", "Tobacco smoking status"), "social-history",
            baseline.isoformat(), {"valueCodeableConcept": _coding(SNOMED, code, display)},
        )
    ]  # fmt: skip
    if plan.pack_years_recorded:
        observations.append(
            _observation(
                plan, subject, "pack-years", _coding(SNOMED, "401201003", "Cigarette pack-years"), "social-history",
                baseline.isoformat(),
                {"valueQuantity": {"value": plan.pack_years, "unit": "pack-years", "system": UCUM,
                                   "code": "{PackYears}"}},
            )
        )  # fmt: skip
    for key, (loinc, name, unit) in LABS.items():
        observations.append(
            _observation(
                plan, subject, key, _coding(LOINC, loinc, name), "laboratory", lab_day,
                {"valueQuantity": {"value": plan.labs[key], "unit": unit, "system": UCUM, "code": unit}},
            )
        )  # fmt: skip
    return observations


def _condition(
    plan: PatientPlan, subject: dict[str, str], key: str, codings: list[dict[str, str]], text: str, onset: dt.date
) -> dict[str, Any]:
    """One active, confirmed problem-list Condition of the patient (``key`` fixes its id)."""
    return {
        "resourceType": "Condition",
        "id": make_uuid(plan.seed, "fhir", plan.index, key),
        "clinicalStatus": _coding(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
        ),
        "verificationStatus": _coding(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"
        ),
        "category": [
            _coding("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item",
                    "Problem List Item")
        ],
        "code": {"coding": codings, "text": text},
        "subject": subject,
        "onsetDateTime": onset.isoformat(),
        "recordedDate": onset.isoformat(),
    }  # fmt: skip


def _conditions(plan: PatientPlan, subject: dict[str, str]) -> list[dict[str, Any]]:
    """The pulmonary nodule, and the lung cancer when the outcome occurred."""
    conditions = [
        _condition(
            plan, subject, "nodule", [{"system": ICD10, "code": "R91.1", "display": "Solitary pulmonary nodule"}],
            "Pulmonary nodule", plan.baseline_date,
        )
    ]  # fmt: skip
    if plan.outcome and plan.outcome_date is not None:
        icd, icd_display = CANCER_ICD[plan.nodules[0].lobe]
        conditions.append(
            _condition(
                plan, subject, "cancer",
                [{"system": ICD10, "code": icd, "display": icd_display},
                 {"system": SNOMED, "code": "363358000", "display": "Malignant tumor of lung"}],
                "Lung cancer, biopsy proven", plan.outcome_date,
            )
        )  # fmt: skip
    return conditions


def bundle_json(bundle: Bundle) -> str:
    """Stable, indented JSON of a bundle (keys in FHIR order, no empty fields)."""
    data = json.loads(bundle.model_dump_json(exclude_none=True, by_alias=True))
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def ehr_row(plan: PatientPlan) -> dict[str, Any]:
    """The patient's row of ``ehr/ehr.csv`` (columns :data:`EHR_COLUMNS`)."""
    person = plan.person
    return {
        "mrn": person.mrn,
        "family": person.family,
        "given": person.given,
        "birth_date": person.birth_date.isoformat(),
        "sex": person.sex,
        "address": person.address,
        "phone": person.phone,
        "smoking_status": plan.smoking_status,
        "pack_years": plan.pack_years if plan.pack_years_recorded else None,
        "cea_ng_ml": plan.labs["cea_ng_ml"],
        "hemoglobin_g_dl": plan.labs["hemoglobin_g_dl"],
        "crp_mg_l": plan.labs["crp_mg_l"],
        "nodule_date": plan.baseline_date.isoformat(),
        "outcome": plan.outcome,
        "outcome_date": plan.outcome_date.isoformat() if plan.outcome_date else None,
        "last_contact_date": plan.last_contact_date.isoformat(),
    }
