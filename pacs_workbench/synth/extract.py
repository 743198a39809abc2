"""Write the whole synthetic extract: DICOM tree, EHR, reports, ground truth, README.

The cohort is drawn up front in this process (:func:`plan_cohort`); each patient is then
written independently by :func:`write_patient` through :func:`map_items`, so local
processes or a Dask cluster can share the work and the files do not depend on the order
in which patients finish. Tables are assembled in patient order at the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacs_workbench.core.executor import map_items
from pacs_workbench.core.files import temp_file_owner, write_bytes_atomic, write_text_atomic
from pacs_workbench.synth.common import safe_component
from pacs_workbench.synth.ehr import EHR_COLUMNS, build_bundle, bundle_json, ehr_row
from pacs_workbench.synth.imaging import VENDORS
from pacs_workbench.synth.patients import (
    INSTITUTIONS,
    OUTCOME_MODEL,
    PatientPlan,
    plan_cohort,
    staff_forms,
)
from pacs_workbench.synth.sites import get_site
from pacs_workbench.synth.study_writer import PatientWriter, write_study

MARKER = ".pacs-workbench-synth.json"
MANAGED = ("dicom", "ehr", "reports", "truth", "README.md")

PATIENT_COLUMNS = [
    "PatientID", "has_imaging", "has_ehr", "sex", "age", "smoking_status", "pack_years", "pack_years_recorded",
    "institution", "baseline_vendor", "n_studies", "n_nodules", "baseline_date", "primary_lobe",
    "primary_diameter_mm", "primary_irregularity", "primary_heterogeneity", "x_diameter", "x_irregularity",
    "x_heterogeneity", "x_age", "x_pack_years", "linear_predictor", "probability", "outcome", "outcome_date",
    "followup_days", "last_contact_date",
]  # fmt: skip
STUDY_COLUMNS = [
    "PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "StudyDate", "study_index",
    "days_from_baseline", "vendor", "Manufacturer", "ManufacturerModelName", "contrast", "SliceThickness",
    "SpacingBetweenSlices", "PixelSpacing", "ConvolutionKernel", "lung_kernel", "KVP", "RescaleIntercept",
    "BodyPartExamined", "n_slices", "descending", "n_nodules", "has_rtstruct", "rtstruct_sop_instance_uid",
    "ct_series_dir", "report_path", "lung_rads",
]  # fmt: skip
NODULE_COLUMNS = [
    "PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "StudyDate", "study_index",
    "days_from_baseline", "nodule_index", "tracking_uid", "lobe", "malignant", "calcified", "diameter_mm",
    "baseline_diameter_mm", "reported_diameter_mm", "irregularity", "heterogeneity", "mask_voxels",
    "volume_mm3", "center_i", "center_j", "center_k", "center_x_mm", "center_y_mm", "center_z_mm",
    "center_instance_number", "vendor", "seg_series_instance_uid", "seg_sop_instance_uid", "seg_path",
    "rtstruct_sop_instance_uid", "roi_number", "rtstruct_path",
]  # fmt: skip


@dataclass(frozen=True)
class PatientTask:
    """One unit of work for a worker process."""

    out: str
    plan: PatientPlan


def _phi_candidates(plan: PatientPlan) -> list[str]:
    inst = INSTITUTIONS[plan.institution]
    staff = [*inst.referrers, *inst.radiologists, *inst.technologists]
    forms = [*plan.person.phi_candidates(), *(s.accession for s in plan.studies)]
    forms += [f for person in staff for f in staff_forms(person)]
    forms += [inst.name, inst.name.upper(), inst.address]
    return forms


def write_patient(task: PatientTask) -> dict[str, Any]:
    """Write every file of one patient; return its truth rows and bookkeeping.

    Never raises: a failure comes back as ``{"index": ..., "error": "..."}``.
    """
    plan = task.plan
    try:
        return _write_patient(Path(task.out), plan)
    except Exception as exc:  # one bad patient must not stop the others
        return {"index": plan.index, "error": f"patient #{plan.index}: {type(exc).__name__}: {exc}"}


def _write_patient(out: Path, plan: PatientPlan) -> dict[str, Any]:
    writer = PatientWriter(out, _phi_candidates(plan))
    nodule_rows: list[dict[str, Any]] = []
    study_rows: list[dict[str, Any]] = []
    person = plan.person
    if plan.has_imaging:
        measured_prior: dict[int, float] = {}
        for study in plan.studies:
            measured_prior = write_study(writer, plan, study, measured_prior, nodule_rows, study_rows)
    ehr = None
    if plan.has_ehr:
        writer.write(f"ehr/fhir/{safe_component(person.mrn)}.json", bundle_json(build_bundle(plan)).encode(), "fhir")
        ehr = ehr_row(plan)
        writer.see_text(" ".join(str(v) for v in ehr.values()))
    primary = plan.nodules[0]
    outcome_date = plan.outcome_date
    followup_end = outcome_date if outcome_date else plan.last_contact_date
    patient_row = {
        "PatientID": person.mrn,
        "has_imaging": int(plan.has_imaging),
        "has_ehr": int(plan.has_ehr),
        "sex": person.sex,
        "age": plan.age,
        "smoking_status": plan.smoking_status,
        "pack_years": plan.pack_years,
        "pack_years_recorded": int(plan.pack_years_recorded),
        "institution": plan.institution,
        "baseline_vendor": plan.studies[0].scanner.vendor,
        "n_studies": len(plan.studies),
        "n_nodules": len(plan.nodules),
        "baseline_date": plan.baseline_date.isoformat(),
        "primary_lobe": primary.lobe,
        "primary_diameter_mm": primary.diameter_mm,
        "primary_irregularity": primary.irregularity,
        "primary_heterogeneity": primary.heterogeneity,
        **plan.drivers,
        "linear_predictor": plan.linear_predictor,
        "probability": plan.probability,
        "outcome": plan.outcome,
        "outcome_date": outcome_date.isoformat() if outcome_date else "",
        "followup_days": (followup_end - plan.baseline_date).days,
        "last_contact_date": plan.last_contact_date.isoformat(),
    }
    return {
        "index": plan.index,
        "error": None,
        "files": dict(writer.files),
        "bytes": writer.bytes,
        "paths": writer.paths,
        "phi": sorted(writer.phi),
        "patient": patient_row,
        "studies": study_rows,
        "nodules": nodule_rows,
        "ehr": ehr,
    }


def _csv_text(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def _prepare_out(out: Path) -> None:
    """Refuse to write into a non-empty folder that synth did not create (fail closed)."""
    marker = out / MARKER
    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not marker.exists():
            raise FileExistsError(
                f"{out} is not empty and was not written by 'pacs-workbench synth'; choose an empty or new folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, json.dumps({"generator": "pacs-workbench synth", "format": 1}, indent=2) + "\n")


def _remove_stale(out: Path, keep: set[str]) -> int:
    """Delete files of an earlier run (other seed or size) that this run did not write."""
    removed = 0
    for top in MANAGED:
        root = out / top
        if root.is_file():
            if top not in keep:
                root.unlink()
                removed += 1
            continue
        if not root.is_dir():
            continue
        for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
            for name in filenames:
                path = Path(dirpath) / name
                rel = path.relative_to(out).as_posix()
                # A temporary file of an interrupted write (its own name is never kept) goes too.
                if rel not in keep or temp_file_owner(path) is not None:
                    path.unlink()
                    removed += 1
            if not any(Path(dirpath).iterdir()):
                Path(dirpath).rmdir()
    return removed


def generate(
    out: Path | str,
    patients: int = 120,
    seed: int = 0,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    modality: str = "CT",
    site: str = "development",
) -> dict[str, Any]:
    """Write a synthetic PACS research extract to ``out``.

    Parameters
    ----------
    out
        Target folder; created if missing. A folder previously written by this function
        is brought up to date (same seed: byte-identical files; files that no longer
        belong are removed). Any other non-empty folder is refused.
    patients
        Patients with imaging (about 2.5 % more exist only in the EHR export).
    seed
        Random seed; the same seed always writes the same bytes.
    workers, scheduler
        Parallelism for :func:`pacs_workbench.core.executor.map_items` (default: every core).
    progress
        Show a progress bar.
    modality
        ``"CT"`` (chest CT with nodules, the default) or ``"MR"`` (brain MR with a lesion,
        :mod:`pacs_workbench.synth.mr`).
    site
        ``"development"`` (the default) or ``"external"``: another hospital network, with
        another vendor mix and shifted intensities (:mod:`pacs_workbench.synth.sites`; CT only).

    Returns
    -------
    dict
        JSON-able summary: output path, seed, patient/study/series/nodule (lesion) counts, files
        by kind, total bytes and outcome prevalence. No identifying values.
    """
    modality = modality.upper()
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be CT or MR, not {modality!r}")
    chosen_site = get_site(site)
    if modality == "MR" and chosen_site.name != "development":
        raise ValueError("only CT extracts can come from another site")
    out = Path(out).resolve()
    _prepare_out(out)
    if modality == "MR":
        return _generate_mr(out, patients, seed, workers=workers, scheduler=scheduler, progress=progress)
    plans = plan_cohort(patients, seed, chosen_site)
    tasks = [PatientTask(str(out), plan) for plan in plans]
    results = sorted(
        map_items(write_patient, tasks, workers=workers, scheduler=scheduler, desc="synth patients",
                  total=len(tasks), progress=progress),
        key=lambda r: r["index"],
    )  # fmt: skip
    errors = [r["error"] for r in results if r["error"]]
    if errors:
        raise RuntimeError(f"{len(errors)} patient(s) could not be written: " + "; ".join(errors[:5]))
    written = _Written(out)
    for r in results:
        written.files.update(r["files"])
        written.bytes += r["bytes"]
        written.keep.update(r["paths"])
        written.phi.update(r["phi"])
    _write_tables(written, results)
    summary = _summary(out, seed, results, written)
    summary["site"] = chosen_site.name
    written.put("truth/README.md", _truth_readme(), "truth")
    written.put("README.md", _readme(summary), "readme")
    summary["files"] = dict(sorted(written.files.items()))
    summary["bytes"] = written.bytes
    summary["stale_removed"] = _remove_stale(out, written.keep)
    return summary


def _generate_mr(
    out: Path, patients: int, seed: int, *, workers: int | None, scheduler: str | None, progress: bool
) -> dict[str, Any]:
    """:func:`generate` for a brain MR extract (:mod:`pacs_workbench.synth.mr`)."""
    from pacs_workbench.synth.mr import (
        MR_TRUTH_README,
        MRPatientTask,
        mr_readme,
        mr_summary_counts,
        mr_tables,
        write_mr_patient,
    )
    from pacs_workbench.synth.mr_plan import plan_mr_cohort

    tasks = [MRPatientTask(str(out), plan) for plan in plan_mr_cohort(patients, seed)]
    results = sorted(
        map_items(write_mr_patient, tasks, workers=workers, scheduler=scheduler, desc="synth MR patients",
                  total=len(tasks), progress=progress),
        key=lambda r: r["index"],
    )  # fmt: skip
    errors = [r["error"] for r in results if r["error"]]
    if errors:
        raise RuntimeError(f"{len(errors)} patient(s) could not be written: " + "; ".join(errors[:5]))
    written = _Written(out)
    for r in results:
        written.files.update(r["files"])
        written.bytes += r["bytes"]
        written.keep.update(r["paths"])
        written.phi.update(r["phi"])
    for rel, text in mr_tables(results, _csv_text).items():
        written.put(rel, text, "csv" if rel.startswith("ehr/") else "truth")
    written.put("truth/phi_values.txt", "".join(f"{v}\n" for v in sorted(written.phi)), "truth")
    imaging = [r for r in results if r["patient"]["has_imaging"]]
    summary: dict[str, Any] = {
        "out": str(out),
        "seed": seed,
        "patients": len(imaging),
        "patients_total": len(results),
        "patients_with_ehr": sum(1 for r in results if r["ehr"] is not None),
        "ehr_only": sum(1 for r in results if not r["patient"]["has_imaging"]),
        "imaging_only": sum(1 for r in imaging if not r["patient"]["has_ehr"]),
        **mr_summary_counts(results),
        "outcome_prevalence": round(float(np.mean([r["patient"]["outcome"] for r in imaging])), 4),
        "phi_values": len(written.phi),
        "files": dict(sorted(written.files.items())),
    }
    written.put("truth/README.md", MR_TRUTH_README, "truth")
    written.put("README.md", mr_readme(summary), "readme")
    summary["files"] = dict(sorted(written.files.items()))
    summary["bytes"] = written.bytes
    summary["stale_removed"] = _remove_stale(out, written.keep)
    return summary


@dataclass
class _Written:
    """What the extract holds so far: files by kind, bytes, the paths to keep, PHI forms written."""

    out: Path
    files: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    keep: set[str] = field(default_factory=lambda: {MARKER})
    phi: set[str] = field(default_factory=set)

    def put(self, rel: str, text: str, kind: str) -> None:
        """Write one text file of the extract."""
        data = text.encode("utf-8")
        write_bytes_atomic(self.out / rel, data)
        self.keep.add(rel)
        self.files[kind] += 1
        self.bytes += len(data)


#: ``truth/model.json``: how the outcome was drawn.
OUTCOME_DESCRIPTION = {
    "outcome": "malignancy confirmed within 2 years of the baseline CT",
    "link": "logit",
    "intercept": OUTCOME_MODEL.intercept,
    "coefficients": dict(OUTCOME_MODEL.coef),
    "drivers": {
        "x_diameter": "log2(primary nodule diameter mm / 8) at baseline",
        "x_irregularity": "margin irregularity (0..1) - 0.5",
        "x_heterogeneity": "internal heterogeneity (0..1) - 0.5",
        "x_age": "(age at baseline - 65) / 10",
        "x_pack_years": "(pack-years - 30) / 20",
    },
}


def _write_tables(written: _Written, results: list[dict[str, Any]]) -> None:
    """The EHR export table and the ground truth, assembled in patient order."""
    ehr_rows = [r["ehr"] for r in results if r["ehr"] is not None]
    written.put("ehr/ehr.csv", _csv_text(ehr_rows, EHR_COLUMNS), "csv")
    written.put("truth/patients.csv", _csv_text((r["patient"] for r in results), PATIENT_COLUMNS), "truth")
    written.put("truth/studies.csv", _csv_text((s for r in results for s in r["studies"]), STUDY_COLUMNS), "truth")
    written.put("truth/nodules.csv", _csv_text((n for r in results for n in r["nodules"]), NODULE_COLUMNS), "truth")
    written.put("truth/phi_values.txt", "".join(f"{v}\n" for v in sorted(written.phi)), "truth")
    written.put("truth/model.json", json.dumps(OUTCOME_DESCRIPTION, indent=2) + "\n", "truth")


def _summary(out: Path, seed: int, results: list[dict[str, Any]], written: _Written) -> dict[str, Any]:
    """The counts :func:`generate` returns (before the READMEs are written)."""
    imaging = [r for r in results if r["patient"]["has_imaging"]]
    n_studies = sum(len(r["studies"]) for r in results)
    series = written.files["seg"] + written.files["rtstruct"] + 3 * n_studies
    return {
        "out": str(out),
        "seed": seed,
        "patients": len(imaging),
        "patients_total": len(results),
        "patients_with_ehr": sum(1 for r in results if r["ehr"] is not None),
        "ehr_only": sum(1 for r in results if not r["patient"]["has_imaging"]),
        "imaging_only": sum(1 for r in imaging if not r["patient"]["has_ehr"]),
        "studies": n_studies,
        "series": series,
        "nodules": sum(r["patient"]["n_nodules"] for r in imaging),
        "nodule_observations": sum(len(r["nodules"]) for r in results),
        "outcome_prevalence": round(float(np.mean([r["patient"]["outcome"] for r in imaging])), 4),
        "phi_values": len(written.phi),
        "files": dict(sorted(written.files.items())),
    }


def _readme(summary: dict[str, Any]) -> str:
    vendors = ", ".join(sorted({v.key for v in VENDORS.values()}))
    files = "\n".join(f"| {k} | {v} |" for k, v in summary["files"].items())
    return f"""# Synthetic PACS research extract

Written by `pacs-workbench synth` (seed {summary["seed"]}). Everything here is invented:
the people, the images and the records. It is built to look and behave like a real
research extract, identifiers included, so that the workbench's cohort building,
de-identification, audit and modeling have something realistic to work on.

**Treat it as identified data**: the DICOM headers, file names, pixels of the dose
screens, reports and EHR export carry (synthetic) names, MRNs, birth dates, addresses,
phone numbers and accession numbers.

## Contents

- `dicom/<Last>_<First>_<MRN>/<StudyDate>_<Accession>/<Series>_<Description>/<Instance>.dcm`:
  {summary["patients"]} patients, {summary["studies"]} CT chest studies (baseline and up to two
  follow-ups), {summary["series"]} series from four vendors ({vendors}). Per study: the axial CT
  series (64 x 64, 20-60 slices), a localizer, a dose screen (secondary capture with
  burned-in text), one DICOM SEG per nodule and, for every other study, an RTSTRUCT.
- `ehr/fhir/<MRN>.json`: FHIR R4 Bundle per patient (Patient, Observations, Conditions).
- `ehr/ehr.csv`: the same as one flat table keyed by `mrn`.
- `reports/<Accession>.txt`: one free-text radiology report per study.
- `truth/`: the ground truth (see `truth/README.md`); keep it away from models.

Some patients are in the EHR but have no imaging ({summary["ehr_only"]}) and some have imaging
but are missing from the EHR ({summary["imaging_only"]}), as in real linkage.
Outcome prevalence among imaging patients: {summary["outcome_prevalence"]:.1%}.

| files | count |
|---|---|
{files}
"""


def _truth_readme() -> str:
    return """# Ground truth of the synthetic extract

- `patients.csv`: one row per person (`PatientID` is the MRN). `has_imaging`, `has_ehr`
  (linkage gaps are deliberate), clinical factors (`age` at baseline, `sex`,
  `smoking_status`, `pack_years`; `pack_years_recorded` is 0 where the EHR lacks it), the
  primary nodule at baseline (`primary_diameter_mm`, `primary_irregularity`,
  `primary_heterogeneity`, `primary_lobe`), the driver values `x_*`, `linear_predictor`,
  `probability`, the drawn `outcome` (0/1), `outcome_date`, and `followup_days` (to the
  outcome, else to `last_contact_date`).
- `model.json`: the logistic model linking drivers to the outcome.
- `studies.csv`: one row per CT study (acquisition settings, vendor, where the files are,
  `has_rtstruct`, the report's Lung-RADS category).
- `nodules.csv`: one row per nodule per study: true `diameter_mm` at that study and at
  baseline, what the reader wrote (`reported_diameter_mm`), `irregularity`,
  `heterogeneity`, `malignant`, `calcified`, `lobe`, mask size (`mask_voxels`,
  `volume_mm3`), centre in voxels (`center_i` column, `center_j` row, `center_k` slice
  index along increasing z, 0-based) and in patient mm, `center_instance_number`, the
  SEG's `seg_series_instance_uid`/`seg_sop_instance_uid`/`seg_path`, and for RTSTRUCT
  studies `rtstruct_sop_instance_uid`, `roi_number` (ROI Number of this nodule) and
  `rtstruct_path`. `tracking_uid` follows one nodule across studies (it is the SEG's
  Tracking UID).
- `phi_values.txt`: every identifying string planted anywhere in the extract (headers,
  nested and private elements, free text, file names, burned-in pixels, reports, EHR), one
  a line, in every form written: `FAMILY^GIVEN`, `Given Family`, `FAMILY, GIVEN`,
  `Family_Given`, family and given name alone, MRN (`H` + 7 digits), other patient ID
  (`RH` + 8 digits), accession numbers (`A` + 7 digits), birth dates as `YYYYMMDD`,
  `YYYY-MM-DD` and `MM/DD/YYYY`, street line and full address, phone as `(AAA) 555-01NN`
  and `AAA-555-01NN`, staff names, institution names and addresses. Not listed: study
  dates and times, city/state/ZIP alone (they also appear inside the full address),
  station names and device serial numbers. Birth dates as `YYYYMMDD` are eight digits and
  may occur by chance inside numeric UIDs; match them on value boundaries.
"""
