"""Write one study of a synthetic patient: its DICOM objects, its report, its ground-truth rows.

:func:`write_study` renders the study's CT, writes the axial series, localizer, dose screen, dose
SR (TID 10011), a SEG per nodule and (for some studies) an RTSTRUCT under ``dicom/<patient>/<study>/<series>/``,
has the reader measure each nodule for the report in ``reports/``, and adds the study's rows
of ``truth/studies.csv`` and ``truth/nodules.csv``. A :class:`PatientWriter` writes the files
and records every PHI form that reached a file name, a header or the pixels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacs_workbench.core.files import write_bytes_atomic
from pacs_workbench.synth import dicom_writer as dw
from pacs_workbench.synth.common import derive_rng, make_uid, safe_component
from pacs_workbench.synth.dose_sr import DOSE_SR_SERIES_NUMBER, build_dose_sr
from pacs_workbench.synth.imaging import VENDORS, RenderedSeries, render_series
from pacs_workbench.synth.localizer_dose import build_dose_screen, build_localizer
from pacs_workbench.synth.patients import PatientPlan, StudyPlan
from pacs_workbench.synth.reports import NoduleFinding, lung_rads, measured_diameter, write_report
from pacs_workbench.synth.segmentations import RTSTRUCT_SERIES_NUMBER, build_rtstruct, build_segmentation


class PatientWriter:
    """Writes files of one patient and records what went where."""

    def __init__(self, out: Path, candidates: list[str]) -> None:
        self.out = out
        self.candidates = [(c, c.encode("utf-8")) for c in candidates]
        self.files: Counter[str] = Counter()
        self.bytes = 0
        self.paths: list[str] = []
        self.phi: set[str] = set()

    def see_text(self, text: str) -> None:
        """Record PHI forms visible in ``text`` (file names, burned-in pixels)."""
        self.phi.update(c for c, _ in self.candidates if c in text)

    def write(self, rel: str, data: bytes, kind: str) -> None:
        """Write ``data`` to ``rel`` under the extract and record it (kind, size, PHI forms in it)."""
        write_bytes_atomic(self.out / rel, data)
        self.files[kind] += 1
        self.bytes += len(data)
        self.paths.append(rel)
        self.see_text(rel)
        self.phi.update(c for c, raw in self.candidates if raw in data)


def _study_dir(plan: PatientPlan, study: StudyPlan) -> str:
    person = plan.person
    patient = safe_component(f"{person.family}_{person.given}_{person.mrn}", 80)
    return f"dicom/{patient}/{study.date.strftime('%Y%m%d')}_{safe_component(study.accession)}"


def _series_dir(study_dir: str, number: int, description: str) -> str:
    return f"{study_dir}/{number:03d}_{safe_component(description)}"


@dataclass
class _StudyFiles:
    """Where one study's files went (relative to the extract)."""

    ct_dir: str = ""
    #: Per nodule: SEG Series Instance UID, SOP Instance UID and path.
    segs: list[tuple[str, str, str]] = field(default_factory=list)
    rtstruct: str = ""
    report: str = ""


def write_study(
    writer: PatientWriter,
    plan: PatientPlan,
    study: StudyPlan,
    measured_prior: dict[int, float],
    nodule_rows: list[dict[str, Any]],
    study_rows: list[dict[str, Any]],
) -> dict[int, float]:
    """Write one study's DICOM objects and report; add its rows to the truth tables.

    Returns the reader's diameter per nodule, the prior measurement of the next study's report.
    """
    p = study.protocol
    uids = dw.StudyUIDs.for_study(plan, study)
    rendered = render_series(
        plan.anatomy, list(plan.nodules), list(study.diameters), p, study.pose, study.z_center,
        derive_rng(plan.seed, 2, plan.index, study.index),
    )  # fmt: skip
    files = _write_images(writer, plan, study, uids, rendered)
    findings, measured_now = _read_nodules(plan, study, rendered, measured_prior)
    exam = dw.study_description(plan, study).split(" - ")[0]
    report = write_report(plan, study, findings, dw.series_texts(study)["ct"], exam)
    files.report = f"reports/{safe_component(study.accession)}.txt"
    writer.write(files.report, report.encode("utf-8"), "report")
    study_rows.append(_study_row(plan, study, uids, rendered, files, findings))
    nodule_rows.extend(_nodule_rows(plan, study, uids, rendered, files, measured_now))
    return measured_now


def _write_images(
    writer: PatientWriter, plan: PatientPlan, study: StudyPlan, uids: dw.StudyUIDs, rendered: RenderedSeries
) -> _StudyFiles:
    """The axial series, localizer, dose screen and dose SR, one SEG per nodule and (some studies) the RTSTRUCT."""
    p = study.protocol
    study_dir = _study_dir(plan, study)
    texts = dw.series_texts(study)
    numbers = dw.SERIES_NUMBERS[p.vendor]
    files = _StudyFiles(ct_dir=_series_dir(study_dir, numbers[1], texts["ct"]))
    template, ct = dw.build_ct_series(plan, study, uids, rendered)
    for ds, data in zip(ct, dw.encode_series(template, ct), strict=True):
        writer.write(f"{files.ct_dir}/{int(ds.InstanceNumber):04d}.dcm", data, "ct")
    loc = build_localizer(plan, study, uids)
    writer.write(f"{_series_dir(study_dir, numbers[0], texts['localizer'])}/0001.dcm", dw.to_bytes(loc), "localizer")
    dose, burned = build_dose_screen(plan, study, uids)
    writer.write(f"{_series_dir(study_dir, numbers[2], texts['dose'])}/0001.dcm", dw.to_bytes(dose), "dose_sc")
    writer.see_text("\n".join(burned))
    sr = build_dose_sr(plan, study, uids)
    sr_dir = _series_dir(study_dir, DOSE_SR_SERIES_NUMBER, str(sr.SeriesDescription))
    writer.write(f"{sr_dir}/0001.dcm", dw.to_bytes(sr), "dose_sr")
    for nodule, mask in zip(plan.nodules, rendered.masks, strict=True):
        seg = build_segmentation(plan, study, uids, ct, mask, nodule.index, nodule.lobe)
        rel = f"{_series_dir(study_dir, int(seg.SeriesNumber), str(seg.SeriesDescription))}/0001.dcm"
        writer.write(rel, dw.to_bytes(seg), "seg")
        files.segs.append((str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID), rel))
    if study.with_rtstruct:
        rt = build_rtstruct(plan, study, uids, ct, rendered, [n.lobe for n in plan.nodules])
        files.rtstruct = f"{_series_dir(study_dir, RTSTRUCT_SERIES_NUMBER, str(rt.SeriesDescription))}/0001.dcm"
        writer.write(files.rtstruct, dw.to_bytes(rt), "rtstruct")
    return files


def _read_nodules(
    plan: PatientPlan, study: StudyPlan, rendered: RenderedSeries, measured_prior: dict[int, float]
) -> tuple[list[NoduleFinding], dict[int, float]]:
    """The reader's measurement of each nodule (dominant nodule first) and the diameters by nodule."""
    p = study.protocol
    n = p.n_slices
    ct_series_number = dw.SERIES_NUMBERS[p.vendor][1]
    findings = []
    measured_now: dict[int, float] = {}
    for nodule, center in zip(plan.nodules, rendered.centers_mm, strict=True):
        k = int(np.argmin(np.abs(rendered.z - center[2])))
        instance = (n - k) if p.descending else (k + 1)
        measured = measured_diameter(
            study.diameters[nodule.index - 1], derive_rng(plan.seed, 4, plan.index, study.index, nodule.index)
        )
        measured_now[nodule.index] = measured
        findings.append(NoduleFinding(nodule, measured, measured_prior.get(nodule.index), ct_series_number, instance))
    # The reader describes the dominant nodule first.
    findings.sort(key=lambda f: (-f.diameter_mm if not f.nodule.calcified else 0.0, f.nodule.index))
    return findings, measured_now


def _study_keys(plan: PatientPlan, study: StudyPlan, uids: dw.StudyUIDs) -> dict[str, Any]:
    """The columns that tie a truth row to its patient, study and axial series."""
    return {
        "PatientID": plan.person.mrn,
        "AccessionNumber": study.accession,
        "StudyInstanceUID": uids.study,
        "SeriesInstanceUID": uids.ct_series,
        "StudyDate": study.date.strftime("%Y%m%d"),
        "study_index": study.index,
        "days_from_baseline": study.days_from_baseline,
    }


def _study_row(
    plan: PatientPlan,
    study: StudyPlan,
    uids: dw.StudyUIDs,
    rendered: RenderedSeries,
    files: _StudyFiles,
    findings: list[NoduleFinding],
) -> dict[str, Any]:
    """The study's row of ``truth/studies.csv``."""
    p = study.protocol
    n = p.n_slices
    vendor = VENDORS[p.vendor]
    ps = rendered.pixel_spacing
    return {
        **_study_keys(plan, study, uids),
        "vendor": p.vendor,
        "Manufacturer": study.scanner.manufacturer,
        "ManufacturerModelName": study.scanner.model,
        "contrast": int(p.contrast),
        "SliceThickness": p.thickness,
        "SpacingBetweenSlices": p.spacing,
        "PixelSpacing": round(ps, 6),
        "ConvolutionKernel": p.kernel,
        "lung_kernel": int(p.lung_kernel),
        "KVP": p.kvp,
        "RescaleIntercept": vendor.rescale_intercept,
        "BodyPartExamined": p.body_part,
        "n_slices": n,
        "descending": int(p.descending),
        "n_nodules": len(plan.nodules),
        "has_rtstruct": int(study.with_rtstruct),
        "rtstruct_sop_instance_uid": uids.rtstruct_instance if study.with_rtstruct else "",
        "ct_series_dir": files.ct_dir,
        "report_path": files.report,
        "lung_rads": lung_rads(findings),
    }


def _nodule_rows(
    plan: PatientPlan,
    study: StudyPlan,
    uids: dw.StudyUIDs,
    rendered: RenderedSeries,
    files: _StudyFiles,
    measured: dict[int, float],
) -> list[dict[str, Any]]:
    """The study's rows of ``truth/nodules.csv``, one per nodule."""
    p = study.protocol
    n = p.n_slices
    ps = rendered.pixel_spacing
    voxel_volume = ps * ps * p.spacing
    rows = []
    for i, nodule in enumerate(plan.nodules):
        mask = rendered.masks[i]
        cx, cy, cz = rendered.centers_mm[i]
        k_center = int(np.argmin(np.abs(rendered.z - cz)))
        rows.append(
            {
                **_study_keys(plan, study, uids),
                "nodule_index": nodule.index,
                "tracking_uid": make_uid(plan.seed, "patient", plan.index, "nodule", nodule.index),
                "lobe": nodule.lobe,
                "malignant": int(nodule.malignant),
                "calcified": int(nodule.calcified),
                "diameter_mm": study.diameters[i],
                "baseline_diameter_mm": nodule.diameter_mm,
                "reported_diameter_mm": measured[nodule.index],
                "irregularity": nodule.irregularity,
                "heterogeneity": nodule.heterogeneity,
                "mask_voxels": int(mask.sum()),
                "volume_mm3": round(float(mask.sum()) * voxel_volume, 3),
                "center_i": round((cx - rendered.origin_xy[0]) / ps, 3),
                "center_j": round((cy - rendered.origin_xy[1]) / ps, 3),
                "center_k": round((cz - float(rendered.z[0])) / p.spacing, 3),
                "center_x_mm": round(cx, 3),
                "center_y_mm": round(cy, 3),
                "center_z_mm": round(cz, 3),
                "center_instance_number": (n - k_center) if p.descending else (k_center + 1),
                "vendor": p.vendor,
                "seg_series_instance_uid": files.segs[i][0],
                "seg_sop_instance_uid": files.segs[i][1],
                "seg_path": files.segs[i][2],
                "rtstruct_sop_instance_uid": uids.rtstruct_instance if study.with_rtstruct else "",
                "roi_number": nodule.index if study.with_rtstruct else "",
                "rtstruct_path": files.rtstruct,
            }
        )
    return rows
