"""Free-text brain MR reports and the FHIR EHR of an MR patient.

Reports carry the header a reading room prints (name, MRN, date of birth, accession number,
referring physician), then CLINICAL HISTORY, TECHNIQUE (the sequences, by their series
descriptions), COMPARISON, FINDINGS (the mass: size in mm as the reader measured it, lobe,
enhancement pattern, margins, oedema, diffusion, change since the prior) and IMPRESSION. The
EHR bundle is the CT cohort's (Patient, smoking, labs) with the brain lesion (ICD-10-CM R90.0)
and, for patients with the outcome, a malignant neoplasm of the brain (C71.x, SNOMED 428061005).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from pacs_workbench.synth.common import derive_rng, make_uuid
from pacs_workbench.synth.ehr import ICD10, SNOMED, _condition, _observations, _patient
from pacs_workbench.synth.mr_plan import MRPatientPlan, MRStudyPlan
from pacs_workbench.synth.patients import INSTITUTIONS, staff_forms

BRAIN_CANCER_ICD = {
    "frontal": ("C71.1", "Malignant neoplasm of frontal lobe"),
    "temporal": ("C71.2", "Malignant neoplasm of temporal lobe"),
    "parietal": ("C71.3", "Malignant neoplasm of parietal lobe"),
    "occipital": ("C71.4", "Malignant neoplasm of occipital lobe"),
}


def _us_date(day: dt.date) -> str:
    return day.strftime("%m/%d/%Y")


def margin_words(irregularity: float) -> str:
    """How a reader describes the lesion's margin."""
    if irregularity > 0.65:
        return "irregular, infiltrative margins"
    if irregularity > 0.4:
        return "lobulated margins"
    return "well-circumscribed margins"


def enhancement_words(heterogeneity: float, diameter: float) -> str:
    """How a reader describes the enhancement pattern."""
    if heterogeneity > 0.5 and diameter > 16.0:
        return "thick irregular rim enhancement around a central non-enhancing (necrotic) component"
    if heterogeneity > 0.4:
        return "heterogeneous enhancement"
    return "homogeneous enhancement"


def write_mr_report(plan: MRPatientPlan, study: MRStudyPlan, measured_mm: float, prior_mm: float | None,
                    instance: int) -> str:
    """The report text of one study."""
    rng = derive_rng(plan.seed, 23, plan.index, study.index)
    person = plan.person
    inst = INSTITUTIONS[plan.base.institution]
    lesion = plan.lesion
    seg = study.seg_sequence
    age = (study.date - person.birth_date).days // 365
    sex = "female" if person.sex == "F" else "male"
    history = "New headaches." if study.index == 0 else "Follow-up of a brain mass."
    sequences = ", ".join(s.description.strip() for s in study.sequences)
    lines = [
        "RADIOLOGY REPORT", f"{inst.name} - Department of Radiology", "",
        f"PATIENT: {person.comma_name}", f"MRN: {person.mrn}",
        f"DOB: {_us_date(person.birth_date)}    SEX: {person.sex}",
        f"ACCESSION: {study.accession}", f"EXAM DATE: {_us_date(study.date)}",
        f"REFERRING PHYSICIAN: Dr. {staff_forms(plan.base.referrer)[1]}", "EXAM: MRI brain without and with contrast",
        "", f"CLINICAL HISTORY: {age}-year-old {sex}. {history}", "",
        f"TECHNIQUE: Multisequence MR imaging of the brain at {study.scanner.field_t:g} T before and after "
        f"intravenous gadolinium ({sequences}).", "",
    ]  # fmt: skip
    if study.index == 0:
        lines.append("COMPARISON: None.")
    else:
        prior = plan.studies[study.index - 1]
        lines.append(f"COMPARISON: MRI brain {_us_date(prior.date)} (accession {prior.accession}).")
    sentence = (f"There is a {measured_mm:.0f} mm mass in the {lesion.lobe} (series {seg.series_number}, image "
                f"{instance}) with {margin_words(lesion.irregularity)} and "
                f"{enhancement_words(lesion.heterogeneity, study.diameter_mm)}")  # fmt: skip
    if prior_mm is not None:
        change = measured_mm - prior_mm
        growing = change >= 2.0
        sentence += f", increased from {prior_mm:.0f} mm" if growing else f", stable compared with {prior_mm:.0f} mm"
    findings = [sentence + ".", "Surrounding T2/FLAIR hyperintense vasogenic edema."]
    if any(s.kind == "DWI" for s in study.sequences):
        findings.append("Restricted diffusion in the solid component." if lesion.heterogeneity < 0.5 else
                        "No restricted diffusion in the necrotic center.")  # fmt: skip
    findings.append("No hydrocephalus." if rng.random() < 0.8 else "Mild mass effect on the adjacent sulci.")
    findings.append("No acute intracranial hemorrhage.")
    grade = "high-grade neoplasm" if lesion.irregularity + lesion.heterogeneity > 1.0 else "neoplasm"
    impression = f"1. {measured_mm:.0f} mm enhancing mass in the {lesion.lobe}, suspicious for {grade}."
    signed = dt.datetime.combine(study.date, study.time) + dt.timedelta(hours=int(rng.integers(1, 30)))
    lines += ["", "FINDINGS:", *findings, "", "IMPRESSION:", impression, "2. No hydrocephalus.", "",
              f"Electronically signed by: Dr. {staff_forms(study.radiologist)[1]}, MD on "
              f"{_us_date(signed.date())} {signed.strftime('%H:%M')}", ""]  # fmt: skip
    return "\n".join(lines)


def build_mr_bundle(plan: MRPatientPlan) -> Bundle:
    """The patient's FHIR Bundle: the CT cohort's Patient and Observations, brain conditions."""
    ehr_plan = plan.ehr_plan()
    patient_id = make_uuid(plan.seed, "fhir-mr", plan.index, "patient")
    subject = {"reference": f"urn:uuid:{patient_id}"}
    conditions = [
        _condition(ehr_plan, subject, "mr-lesion",
                   [{"system": ICD10, "code": "R90.0", "display": "Intracranial space-occupying lesion found on "
                     "diagnostic imaging of central nervous system"}], "Brain mass", plan.baseline_date)
    ]  # fmt: skip
    if plan.outcome and plan.outcome_date is not None:
        lobe = plan.lesion.lobe.split()[1]
        icd, display = BRAIN_CANCER_ICD[lobe]
        conditions.append(
            _condition(ehr_plan, subject, "mr-cancer",
                       [{"system": ICD10, "code": icd, "display": display},
                        {"system": SNOMED, "code": "428061005", "display": "Malignant neoplasm of brain"}],
                       "Malignant brain tumour, biopsy proven", plan.outcome_date)
        )  # fmt: skip
    entries: list[dict[str, Any]] = [_patient(ehr_plan, patient_id), *_observations(ehr_plan, subject), *conditions]
    bundle = {
        "resourceType": "Bundle",
        "id": make_uuid(plan.seed, "fhir-mr", plan.index, "bundle"),
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in entries],
    }
    return Bundle.model_validate(bundle)
