"""Write a synthetic brain MR extract: multi-sequence studies, the lesion's SEG, reports, EHR and truth.

``pacs-workbench synth OUT --modality MR`` (:func:`pacs_workbench.synth.extract.generate` with
``modality="MR"``) writes, per patient, one to three brain MR studies of T1, T2, FLAIR,
(most studies) a diffusion trace and its ADC map, and T1 after gadolinium, each as its vendor
writes it (:mod:`pacs_workbench.synth.mr_sequences`): Siemens XA and Philips as Enhanced MR
multi-frame objects, GE, Canon and Siemens VE11 one file per slice. A DICOM SEG of the lesion
references the post-contrast T1. Reports, FHIR bundles and the EHR CSV follow the CT extract's
layout; ``truth/`` holds the outcome drivers (``patients.csv``, ``model.json``), the studies,
every series with its true sequence type (``series.csv``) and the lesion per study
(``lesions.csv``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pacs_workbench.synth import dicom_writer as dw
from pacs_workbench.synth.common import derive_rng, make_uid, safe_component
from pacs_workbench.synth.ehr import EHR_COLUMNS, bundle_json, ehr_row
from pacs_workbench.synth.mr_dicom import build_classic_series
from pacs_workbench.synth.mr_enhanced import build_enhanced_series, build_mr_segmentation, frame_order
from pacs_workbench.synth.mr_phantom import RenderedStudy, render_series, render_study
from pacs_workbench.synth.mr_plan import MR_OUTCOME_MODEL, MRPatientPlan, MRStudyPlan, MRStudyUIDs
from pacs_workbench.synth.mr_report import build_mr_bundle, write_mr_report
from pacs_workbench.synth.mr_sequences import SequenceSpec
from pacs_workbench.synth.patients import INSTITUTIONS, staff_forms
from pacs_workbench.synth.reports import measured_diameter
from pacs_workbench.synth.study_writer import PatientWriter

MR_PATIENT_COLUMNS = [
    "PatientID", "has_imaging", "has_ehr", "sex", "age", "smoking_status", "pack_years", "pack_years_recorded",
    "institution", "baseline_vendor", "n_studies", "baseline_date", "primary_region", "primary_diameter_mm",
    "primary_irregularity", "primary_heterogeneity", "x_diameter", "x_irregularity", "x_heterogeneity", "x_age",
    "linear_predictor", "probability", "outcome", "outcome_date", "followup_days", "last_contact_date",
]  # fmt: skip
MR_STUDY_COLUMNS = [
    "PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "StudyDate", "study_index",
    "days_from_baseline", "vendor", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
    "ReceiveCoilName", "enhanced", "n_series", "sequences", "unhelpful_descriptions", "PixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "n_slices", "descending", "seg_series_dir", "report_path",
]  # fmt: skip
MR_SERIES_COLUMNS = [
    "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "sequence", "SeriesDescription",
    "ProtocolName", "ScanningSequence", "SequenceVariant", "RepetitionTime", "EchoTime", "InversionTime",
    "DiffusionBValue", "contrast", "enhanced", "vendor", "MagneticFieldStrength", "n_files", "series_dir",
]  # fmt: skip
LESION_COLUMNS = [
    "PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "StudyDate", "study_index",
    "days_from_baseline", "tracking_uid", "region", "malignant", "diameter_mm", "baseline_diameter_mm",
    "reported_diameter_mm", "irregularity", "heterogeneity", "mask_voxels", "volume_mm3", "center_i", "center_j",
    "center_k", "center_x_mm", "center_y_mm", "center_z_mm", "center_instance_number", "vendor",
    "seg_series_instance_uid", "seg_sop_instance_uid", "seg_path",
]  # fmt: skip

#: ``truth/model.json`` of an MR extract: how the outcome was drawn.
MR_OUTCOME_DESCRIPTION = {
    "outcome": "malignancy confirmed within 2 years of the baseline brain MR",
    "link": "logit",
    "intercept": MR_OUTCOME_MODEL.intercept,
    "coefficients": dict(MR_OUTCOME_MODEL.coef),
    "drivers": {
        "x_diameter": "log2(lesion diameter mm / 20) at baseline",
        "x_irregularity": "margin irregularity (0..1) - 0.5",
        "x_heterogeneity": "internal heterogeneity (0..1) - 0.5",
        "x_age": "(age at baseline - 60) / 10",
    },
}


@dataclass(frozen=True)
class MRPatientTask:
    """One unit of work for a worker process."""

    out: str
    plan: MRPatientPlan


def _phi_candidates(plan: MRPatientPlan) -> list[str]:
    inst = INSTITUTIONS[plan.base.institution]
    staff = [*inst.referrers, *inst.radiologists, *inst.technologists]
    forms = [*plan.person.phi_candidates(), *(s.accession for s in plan.studies)]
    forms += [f for person in staff for f in staff_forms(person)]
    return [*forms, inst.name, inst.name.upper(), inst.address]


def write_mr_patient(task: MRPatientTask) -> dict[str, Any]:
    """Write every file of one MR patient; return its truth rows and bookkeeping. Never raises."""
    plan = task.plan
    try:
        return _write_patient(Path(task.out), plan)
    except Exception as exc:  # one bad patient must not stop the others
        return {"index": plan.index, "error": f"patient #{plan.index}: {type(exc).__name__}: {exc}"}


def _write_patient(out: Path, plan: MRPatientPlan) -> dict[str, Any]:
    writer = PatientWriter(out, _phi_candidates(plan))
    rows: dict[str, list[dict[str, Any]]] = {"studies": [], "series": [], "lesions": []}
    base = plan.base
    if base.has_imaging:
        prior: float | None = None
        for study in plan.studies:
            prior = _write_study(writer, plan, study, prior, rows)
    ehr = None
    if base.has_ehr:
        writer.write(f"ehr/fhir/{safe_component(plan.person.mrn)}.json", bundle_json(build_mr_bundle(plan)).encode(),
                     "fhir")  # fmt: skip
        ehr = ehr_row(plan.ehr_plan())
        writer.see_text(" ".join(str(v) for v in ehr.values()))
    return {
        "index": plan.index, "error": None, "files": dict(writer.files), "bytes": writer.bytes,
        "paths": writer.paths, "phi": sorted(writer.phi), "patient": _patient_row(plan), **rows, "ehr": ehr,
    }  # fmt: skip


def _patient_row(plan: MRPatientPlan) -> dict[str, Any]:
    base = plan.base
    end = plan.outcome_date or plan.last_contact_date
    return {
        "PatientID": plan.person.mrn, "has_imaging": int(base.has_imaging), "has_ehr": int(base.has_ehr),
        "sex": plan.person.sex, "age": base.age, "smoking_status": base.smoking_status, "pack_years": base.pack_years,
        "pack_years_recorded": int(base.pack_years_recorded), "institution": base.institution,
        "baseline_vendor": plan.studies[0].scanner.vendor, "n_studies": len(plan.studies),
        "baseline_date": plan.baseline_date.isoformat(), "primary_region": plan.lesion.lobe,
        "primary_diameter_mm": plan.lesion.diameter_mm, "primary_irregularity": plan.lesion.irregularity,
        "primary_heterogeneity": plan.lesion.heterogeneity, **plan.drivers, "linear_predictor": plan.linear_predictor,
        "probability": plan.probability, "outcome": plan.outcome,
        "outcome_date": plan.outcome_date.isoformat() if plan.outcome_date else "",
        "followup_days": (end - plan.baseline_date).days, "last_contact_date": plan.last_contact_date.isoformat(),
    }  # fmt: skip


def _write_series(writer: PatientWriter, plan: MRPatientPlan, study: MRStudyPlan, uids: MRStudyUIDs,
                  spec: SequenceSpec, rendered: RenderedStudy, series_dir: str) -> list[Any]:
    """One series' files; returns what a SEG on it references (its slices, or its one enhanced image)."""
    pixels = render_series(rendered, spec, study.scanner, derive_rng(plan.seed, 24, plan.index, study.index,
                                                                     spec.series_number))  # fmt: skip
    if study.scanner.enhanced:
        image = build_enhanced_series(plan, study, uids, spec, pixels, rendered.z, rendered.origin_xy)
        writer.write(f"{series_dir}/0001.dcm", dw.to_bytes(image), "mr_enhanced")
        return [image]
    template, slices = build_classic_series(plan, study, uids, spec, pixels, rendered.z, rendered.origin_xy)
    for ds, data in zip(slices, dw.encode_series(template, slices), strict=True):
        writer.write(f"{series_dir}/{int(ds.InstanceNumber):04d}.dcm", data, "mr")
    return list(slices)


def _write_study(writer: PatientWriter, plan: MRPatientPlan, study: MRStudyPlan, prior: float | None,
                 rows: dict[str, list[dict[str, Any]]]) -> float:
    """Render and write one study (every series, the SEG, the report); add its truth rows."""
    uids = MRStudyUIDs.for_study(plan, study)
    rendered = render_study(plan.head, plan.lesion, study.diameter_mm, study.geometry, study.scanner, study.pose,
                            derive_rng(plan.seed, 22, plan.index, study.index))  # fmt: skip
    person = plan.person
    patient = safe_component(f"{person.family}_{person.given}_{person.mrn}", 80)
    study_dir = f"dicom/{patient}/{study.date.strftime('%Y%m%d')}_{safe_component(study.accession)}"
    keys = {"PatientID": person.mrn, "StudyInstanceUID": uids.study}
    seg_source: list[Any] = []
    seg_dir = ""
    for spec in study.sequences:
        series_dir = f"{study_dir}/{spec.series_number:03d}_{safe_component(spec.description)}"
        source = _write_series(writer, plan, study, uids, spec, rendered, series_dir)
        if spec.kind == "T1C":
            seg_source, seg_dir = source, series_dir
        rows["series"].append({
            **keys, "SeriesInstanceUID": uids.uid("series", spec.series_number), "SeriesNumber": spec.series_number,
            "sequence": spec.kind, "SeriesDescription": spec.description, "ProtocolName": spec.protocol_name,
            "ScanningSequence": spec.scanning_sequence, "SequenceVariant": spec.sequence_variant,
            "RepetitionTime": spec.repetition_time, "EchoTime": spec.echo_time, "InversionTime": spec.inversion_time,
            "DiffusionBValue": spec.b_value, "contrast": int(spec.contrast), "enhanced": int(study.scanner.enhanced),
            "vendor": study.scanner.vendor, "MagneticFieldStrength": study.scanner.field_t, "n_files": len(source),
            "series_dir": series_dir,
        })  # fmt: skip
    seg = build_mr_segmentation(plan, study, uids, seg_source, rendered.mask)
    seg_path = f"{study_dir}/{int(seg.SeriesNumber):03d}_{safe_component(str(seg.SeriesDescription))}/0001.dcm"
    writer.write(seg_path, dw.to_bytes(seg), "seg")
    g = study.geometry
    cz = rendered.center_mm[2]
    k_center = int(np.argmin(np.abs(rendered.z - cz)))
    if study.scanner.enhanced:
        instance = frame_order(study).index(k_center) + 1
    else:
        instance = (g.n_slices - k_center) if g.descending else (k_center + 1)
    measured = measured_diameter(study.diameter_mm, derive_rng(plan.seed, 25, plan.index, study.index))
    report_path = f"reports/{safe_component(study.accession)}.txt"
    writer.write(report_path, write_mr_report(plan, study, measured, prior, instance).encode("utf-8"), "report")
    scanner = study.scanner
    timing = {"StudyDate": study.date.strftime("%Y%m%d"), "study_index": study.index,
              "days_from_baseline": study.days_from_baseline}  # fmt: skip
    seg_series = uids.uid("series", study.seg_sequence.series_number)
    rows["studies"].append({
        **keys, "AccessionNumber": study.accession, "SeriesInstanceUID": seg_series, **timing,
        "vendor": scanner.vendor, "Manufacturer": scanner.manufacturer, "ManufacturerModelName": scanner.model,
        "MagneticFieldStrength": scanner.field_t, "ReceiveCoilName": scanner.coil, "enhanced": int(scanner.enhanced),
        "n_series": len(study.sequences), "sequences": ";".join(s.kind for s in study.sequences),
        "unhelpful_descriptions": int(study.unhelpful), "PixelSpacing": g.pixel_spacing, "SliceThickness": g.thickness,
        "SpacingBetweenSlices": g.spacing, "n_slices": g.n_slices, "descending": int(g.descending),
        "seg_series_dir": seg_dir, "report_path": report_path,
    })  # fmt: skip
    ps = g.pixel_spacing
    cx, cy, _ = rendered.center_mm
    rows["lesions"].append({
        **keys, "AccessionNumber": study.accession, "SeriesInstanceUID": seg_series, **timing,
        "tracking_uid": make_uid(plan.seed, "mr-patient", plan.index, "lesion", 1), "region": plan.lesion.lobe,
        "malignant": int(plan.lesion.malignant), "diameter_mm": study.diameter_mm,
        "baseline_diameter_mm": plan.lesion.diameter_mm, "reported_diameter_mm": measured,
        "irregularity": plan.lesion.irregularity, "heterogeneity": plan.lesion.heterogeneity,
        "mask_voxels": int(rendered.mask.sum()),
        "volume_mm3": round(float(rendered.mask.sum()) * ps * ps * g.spacing, 3),
        "center_i": round((cx - rendered.origin_xy[0]) / ps, 3),
        "center_j": round((cy - rendered.origin_xy[1]) / ps, 3),
        "center_k": round((cz - float(rendered.z[0])) / g.spacing, 3), "center_x_mm": round(cx, 3),
        "center_y_mm": round(cy, 3), "center_z_mm": round(cz, 3), "center_instance_number": instance,
        "vendor": scanner.vendor, "seg_series_instance_uid": str(seg.SeriesInstanceUID),
        "seg_sop_instance_uid": str(seg.SOPInstanceUID), "seg_path": seg_path,
    })  # fmt: skip
    return measured


def mr_tables(results: list[dict[str, Any]], csv_text: Any) -> dict[str, str]:
    """The EHR export table and the ground truth of an MR extract, assembled in patient order."""
    ehr_rows = [r["ehr"] for r in results if r["ehr"] is not None]
    return {
        "ehr/ehr.csv": csv_text(ehr_rows, EHR_COLUMNS),
        "truth/patients.csv": csv_text((r["patient"] for r in results), MR_PATIENT_COLUMNS),
        "truth/studies.csv": csv_text((s for r in results for s in r["studies"]), MR_STUDY_COLUMNS),
        "truth/series.csv": csv_text((s for r in results for s in r["series"]), MR_SERIES_COLUMNS),
        "truth/lesions.csv": csv_text((s for r in results for s in r["lesions"]), LESION_COLUMNS),
        "truth/model.json": json.dumps(MR_OUTCOME_DESCRIPTION, indent=2) + "\n",
    }


def mr_summary_counts(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of an MR extract for :func:`pacs_workbench.synth.extract.generate`'s summary."""
    imaging = [r for r in results if r["patient"]["has_imaging"]]
    return {
        "modality": "MR",
        "studies": sum(len(r["studies"]) for r in results),
        "series": sum(len(r["series"]) + len(r["lesions"]) for r in results),
        "lesions": len(imaging),
        "lesion_observations": sum(len(r["lesions"]) for r in results),
        "enhanced_series": sum(int(s["enhanced"]) for r in results for s in r["series"]),
    }


def mr_readme(summary: dict[str, Any]) -> str:
    """``README.md`` of an MR extract."""
    files = "\n".join(f"| {k} | {v} |" for k, v in summary["files"].items())
    return f"""# Synthetic PACS research extract: brain MR

Written by `pacs-workbench synth --modality MR` (seed {summary["seed"]}). Everything here is
invented: the people, the images and the records. **Treat it as identified data**: headers,
file names, reports and the EHR export carry (synthetic) names, MRNs, birth dates and addresses.

## Contents

- `dicom/<Last>_<First>_<MRN>/<StudyDate>_<Accession>/<Series>_<Description>/<Instance>.dcm`:
  {summary["patients"]} patients, {summary["studies"]} brain MR studies (baseline and up to two
  follow-ups), {summary["series"]} series from four vendors at 1.5 T and 3 T: T1, T2, FLAIR,
  in most studies a diffusion trace (b = 1000) with its ADC map, and T1 after gadolinium, plus a
  DICOM SEG of the lesion on the post-contrast T1. Siemens XA and Philips scanners write
  Enhanced MR multi-frame objects ({summary["enhanced_series"]} series, one file each); GE,
  Canon and Siemens VE11 one file per slice. One site names every series `Ax 5mm` on some
  studies: only the acquisition attributes tell the sequences apart there.
- `ehr/fhir/<MRN>.json`, `ehr/ehr.csv`: the EHR export, as for the CT extract.
- `reports/<Accession>.txt`: one free-text radiology report per study.
- `truth/`: the ground truth (see `truth/README.md`); keep it away from models.

Outcome prevalence among imaging patients: {summary["outcome_prevalence"]:.1%}.

| files | count |
|---|---|
{files}
"""


MR_TRUTH_README = """# Ground truth of the synthetic brain MR extract

- `patients.csv`: one row per person (`PatientID` is the MRN): `has_imaging`, `has_ehr`, clinical
  factors, the lesion at baseline (`primary_region`, `primary_diameter_mm`,
  `primary_irregularity`, `primary_heterogeneity`), the driver values `x_*`,
  `linear_predictor`, `probability`, the drawn `outcome`, `outcome_date` and `followup_days`.
- `model.json`: the logistic model linking drivers to the outcome.
- `studies.csv`: one row per study: scanner, field strength, receive coil, whether it wrote
  enhanced multi-frame objects, the sequences in acquisition order, whether the series
  descriptions were unhelpful, geometry, the post-contrast T1 series (`SeriesInstanceUID`)
  the SEG references, where the files are.
- `series.csv`: one row per image series with its true `sequence` (T1, T1C, T2, FLAIR, DWI,
  ADC) beside the attributes it was written with.
- `lesions.csv`: one row per lesion per study: true and reported diameter, irregularity,
  heterogeneity, mask size, centre in voxels (`center_k` along increasing z) and in patient mm,
  `center_instance_number` (the frame number in an enhanced image), the SEG's UIDs and path.
- `phi_values.txt`: every identifying string planted anywhere in the extract, one a line (the
  forms are those of the CT extract's `truth/README.md`).
"""
