"""Free-text radiology reports, one per CT study, written the way reading rooms write them.

A header with identifiers (name, MRN, date of birth, accession number, referring physician),
then CLINICAL HISTORY, TECHNIQUE, COMPARISON, FINDINGS (nodule size in mm as measured by
the reader, lobe, margins, change since the prior, negated findings) and an IMPRESSION with
a Lung-RADS-like category. Three reader styles vary the wording.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from pacs_workbench.synth.common import derive_rng
from pacs_workbench.synth.imaging import LOBE_NAMES, NoduleSpec
from pacs_workbench.synth.patients import INSTITUTIONS, PatientPlan, StudyPlan, staff_forms


@dataclass(frozen=True)
class NoduleFinding:
    """What the reader saw of one nodule in one study."""

    nodule: NoduleSpec
    diameter_mm: float
    prior_diameter_mm: float | None
    series_number: int
    instance_number: int


def lung_rads(findings: list[NoduleFinding]) -> str:
    """A simplified Lung-RADS (v1.1, solid nodules) category from the dominant finding."""
    worst = "1"
    order = ["1", "2", "3", "4A", "4B", "4X"]
    for f in findings:
        if f.nodule.calcified:
            category = "1"
        elif f.prior_diameter_mm is not None and f.diameter_mm - f.prior_diameter_mm < 1.5:
            category = "2"  # stable: benign behaviour
        elif f.prior_diameter_mm is not None:
            category = "4B" if f.diameter_mm >= 8 else "4A"  # growing
        elif f.diameter_mm < 6:
            category = "2"
        elif f.diameter_mm < 8:
            category = "3"
        elif f.diameter_mm < 15:
            category = "4A"
        else:
            category = "4B"
        if category in ("4A", "4B") and f.nodule.irregularity > 0.7:
            category = "4X"
        if order.index(category) > order.index(worst):
            worst = category
    return worst


def _margin(nodule: NoduleSpec) -> str:
    if nodule.calcified:
        return "densely calcified"
    if nodule.irregularity > 0.65:
        return "spiculated"
    if nodule.irregularity > 0.4:
        return "lobulated"
    return "smoothly marginated"


def _us_date(day: dt.date) -> str:
    return day.strftime("%m/%d/%Y")


def write_report(plan: PatientPlan, study: StudyPlan, findings: list[NoduleFinding], series_desc: str,
                 exam_name: str) -> str:
    """The report text of one study.

    Parameters
    ----------
    plan, study
        Patient and study.
    findings
        One entry per nodule visible in the study (sizes as the reader measured them).
    series_desc
        (0008,103E) of the axial series, cited in the findings.
    exam_name
        The exam as ordered (the study description without any PHI).
    """
    rng = derive_rng(plan.seed, 3, plan.index, study.index)
    inst = INSTITUTIONS[plan.institution]
    # Each radiologist has a style of phrasing, kept across their reports.
    style = inst.radiologists.index(study.radiologist) % 3
    lines = _header_lines(plan, study, series_desc, exam_name)
    lines += ["", "FINDINGS:"]
    lines += _findings_lines(findings, style, rng)
    lines += ["", "IMPRESSION:"]
    lines += _impression_lines(findings, style)
    signed = dt.datetime.combine(study.date, study.time) + dt.timedelta(hours=int(rng.integers(1, 30)))
    lines += [
        "",
        f"Electronically signed by: Dr. {staff_forms(study.radiologist)[1]}, MD on "
        f"{_us_date(signed.date())} {signed.strftime('%H:%M')}",
        "",
    ]
    return "\n".join(lines)


def _header_lines(plan: PatientPlan, study: StudyPlan, series_desc: str, exam_name: str) -> list[str]:
    """The report's header (with the PHI real reports carry), history, technique and comparison."""
    person = plan.person
    inst = INSTITUTIONS[plan.institution]
    p = study.protocol
    sex_word = "female" if person.sex == "F" else "male"
    age = (study.date - person.birth_date).days // 365
    if plan.smoking_status == "never":
        smoking = "never smoker"
    else:
        status = "current" if plan.smoking_status == "current" else "former"
        smoking = f"{status} smoker, {plan.pack_years:g} pack-years"
    history = (
        f"{age}-year-old {sex_word}, {smoking}. "
        + ("Incidental pulmonary nodule." if study.index == 0 else "Follow-up of pulmonary nodule.")
    )
    lines = [
        "RADIOLOGY REPORT",
        f"{inst.name} - Department of Radiology",
        "",
        f"PATIENT: {person.comma_name}",
        f"MRN: {person.mrn}",
        f"DOB: {_us_date(person.birth_date)}    SEX: {person.sex}",
        f"ACCESSION: {study.accession}",
        f"EXAM DATE: {_us_date(study.date)}",
        f"REFERRING PHYSICIAN: Dr. {staff_forms(plan.referrer)[1]}",
        f"EXAM: {exam_name}",
        "",
        f"CLINICAL HISTORY: {history}",
        "",
        "TECHNIQUE: Axial CT images of the chest were obtained "
        + ("following the administration of intravenous contrast" if p.contrast else "without intravenous contrast")
        + f". Images were reconstructed at {p.thickness:g} mm slice thickness ({series_desc.strip()}).",
        "",
    ]
    if study.index == 0:
        lines.append("COMPARISON: None.")
    else:
        prior = plan.studies[study.index - 1]
        lines.append(f"COMPARISON: CT chest {_us_date(prior.date)} (accession {prior.accession}).")
    return lines


def _nodule_sentence(i: int, f: NoduleFinding, style: int) -> str:
    """The findings sentence of nodule ``i`` (0: the dominant one, described first and in full)."""
    n = f.nodule
    size = f"{f.diameter_mm:.0f} mm"
    where = LOBE_NAMES[n.lobe]
    ref = f"(series {f.series_number}, image {f.instance_number})"
    kind = "calcified" if n.calcified else "solid"
    if i == 0:
        article = "an" if size.startswith(("8", "11 ", "18 ")) else "a"
        opener = ["There is " + article, article.capitalize(), "Noted is " + article][style]
        if f.prior_diameter_mm is not None and style == 2:
            opener = "Redemonstrated"
        sentence = f"{opener} {size} {kind} nodule in the {where} {ref}, {_margin(n)}"
    else:
        sentence = f"Additional {size} {kind} nodule in the {where} {ref}"
    if f.prior_diameter_mm is not None:
        if f.diameter_mm - f.prior_diameter_mm >= 1.5:
            sentence += f", increased from {f.prior_diameter_mm:.0f} mm"
        else:
            sentence += f", stable compared with {f.prior_diameter_mm:.0f} mm"
    return sentence + "."


def _findings_lines(findings: list[NoduleFinding], style: int, rng: np.random.Generator) -> list[str]:
    """LUNGS (the nodules first), PLEURA, MEDIASTINUM and BONES."""
    lung_sentences = [_nodule_sentence(i, f, style) for i, f in enumerate(findings)]
    if rng.random() < 0.5:
        lung_sentences.append("No consolidation.")
    lung_sentences.append(["No pneumothorax.", "There is no pneumothorax.", "Negative for pneumothorax."][style])
    lines = ["LUNGS: " + " ".join(lung_sentences)]
    lines.append("PLEURA: " + ["No pleural effusion.", "There is no pleural effusion.", "No effusion."][style])
    lines.append(
        "MEDIASTINUM: "
        + (
            "No mediastinal or hilar lymphadenopathy. Heart size is normal."
            if rng.random() < 0.85
            else "Mildly enlarged right paratracheal lymph node, 11 mm short axis. Heart size is normal."
        )
    )
    bones = "No suspicious osseous lesion." if rng.random() < 0.9 else "Degenerative changes of the thoracic spine."
    lines.append("BONES: " + bones)
    return lines


def _impression_lines(findings: list[NoduleFinding], style: int) -> list[str]:
    """The dominant nodule with its Lung-RADS category, then the pleura."""
    lines = []
    main = findings[0] if findings else None
    category = lung_rads(findings)
    cat_text = [f"Lung-RADS {category}.", f"Lung-RADS category {category}.", f"LR-{category}."][style]
    if main is not None:
        change = ""
        if main.prior_diameter_mm is not None:
            change = (
                " with interval growth"
                if main.diameter_mm - main.prior_diameter_mm >= 1.5
                else ", stable"
            )
        lines.append(
            f"1. {main.diameter_mm:.0f} mm {_margin(main.nodule)} nodule in the {LOBE_NAMES[main.nodule.lobe]}"
            f"{change}. {cat_text}"
        )
    lines.append("2. No pleural effusion.")
    return lines


def measured_diameter(true_mm: float, rng: np.random.Generator) -> float:
    """A reader's caliper measurement: the true diameter plus reader variability."""
    return max(2.0, round(true_mm + float(rng.normal(0.0, 0.6)), 1))
