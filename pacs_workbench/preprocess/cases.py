"""Case discovery: every header of a DICOM tree, series checked, segmentations matched to series.

Files are grouped by Series Instance UID from their headers, never by folder names. Each
segment of a SEG (or ROI of an RTSTRUCT) on an image series is one case, keyed by
:func:`make_case_id` (hashes, so no UID shows). Patients get pseudonyms from the de-identified
headers, the project key or, without either, a key for this scan only.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pacs_workbench.core.executor import map_items
from pacs_workbench.preprocess.checks import SeriesReport, inspect_headers
from pacs_workbench.preprocess.headers import HeaderRecord, list_files, read_header


def _short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def series_key(series_uid: str) -> str:
    """A short, non-reversible key for a series, for reports that must not show UIDs."""
    return "s" + _short_hash(series_uid, 10)


def make_case_id(series_uid: str, mask_uid: str, segment: int) -> str:
    """``<hash of SeriesInstanceUID>_<hash of mask SOP Instance UID + segment number>``.

    The mask instance is part of the key because trees often hold one SEG per lesion, each
    with segment number 1.
    """
    return f"{_short_hash(series_uid, 10)}_{_short_hash(f'{mask_uid}|{int(segment)}', 6)}"


@dataclass
class TreeScan:
    """What :func:`scan_tree` found.

    Attributes
    ----------
    series
        One row per image series (all modalities): the header checks of
        :func:`~pacs_workbench.preprocess.checks.inspect_headers` plus ``series_folder``, ``series_key`` and
        ``n_masks``.
    masks
        One row per SEG/RTSTRUCT instance: ``mask_source``, ``mask_path``, referenced series,
        ``matched`` (the referenced series is in the tree), ``used`` and ``reason`` when not used.
    cases
        The case table (see :func:`find_cases`).
    n_files, n_not_dicom, n_unreadable
        Every file under the root lands in exactly one of: a header above, not DICOM, unreadable.
    """

    series: pd.DataFrame
    masks: pd.DataFrame
    cases: pd.DataFrame
    n_files: int = 0
    n_not_dicom: int = 0
    n_unreadable: int = 0


def _read_header_batch(paths: list[str]) -> list[HeaderRecord | tuple[str, str]]:
    """Worker: headers of a batch of files; ``(path, 'not_dicom'|'unreadable')`` for the rest."""
    out: list[HeaderRecord | tuple[str, str]] = []
    for path in paths:
        try:
            record = read_header(path)
        except Exception:
            out.append((path, "unreadable"))
            continue
        out.append(record if record is not None else (path, "not_dicom"))
    return out


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pseudonymizer(
    records: Iterable[HeaderRecord], key_file: str | os.PathLike[str] | None = None
) -> tuple[dict[str, str], str]:
    """PatientID -> pseudo_patient_id for the scan, and where the pseudonyms come from.

    De-identified data ((0012,0062) Patient Identity Removed = YES) already carries the
    pseudonym in (0010,0020) Patient ID. Otherwise the project key (``PACS_WORKBENCH_KEY_FILE``)
    (``key_file``, else ``PACS_WORKBENCH_KEY_FILE``) makes the same pseudonyms as the rest of
    the workbench; without a key a random key for this scan only keeps patients apart without
    identifying them (scope ``run``).
    """
    from pacs_workbench.core.pseudonym import KeyFileError, load_key, pseudonymize

    ids = {r.PatientID for r in records}
    all_removed = all(r.PatientIdentityRemoved == "YES" for r in records)
    if all_removed:
        return {pid: pid for pid in ids}, "deid"
    try:
        key, scope = load_key(key_file or None), "key"
    except (KeyFileError, OSError, ValueError):
        key, scope = secrets.token_bytes(32), "run"
    return {pid: pseudonymize(key, pid or "(none)", "patient") for pid in ids}, scope


_CASE_COLUMNS = [
    "case_id", "series_folder", "mask_path", "SeriesInstanceUID", "StudyInstanceUID", "Modality",
    "Manufacturer", "StudyDate", "pseudo_patient_id", "pseudo_patient_id_scope", "mask_source",
    "segment_number", "series_valid", "series_flags",
]


def _read_headers(
    paths: list[str], *, workers: int | None, scheduler: str | None, progress: bool
) -> tuple[list[HeaderRecord], int, int]:
    """Headers of ``paths`` in parallel batches, and how many files were not DICOM or unreadable."""
    results: list[HeaderRecord | tuple[str, str]] = []
    batches = list(_batches(paths, 64))
    for batch in map_items(
        _read_header_batch, batches, workers=workers, scheduler=scheduler,
        desc="read headers", total=len(batches), progress=progress,
    ):
        results.extend(batch)
    records = [r for r in results if isinstance(r, HeaderRecord)]
    problems = [r for r in results if not isinstance(r, HeaderRecord)]
    n_not_dicom = sum(1 for r in problems if r[1] == "not_dicom")
    return records, n_not_dicom, len(problems) - n_not_dicom


def _series_folder(group: Sequence[HeaderRecord]) -> str:
    return os.path.commonpath([os.path.dirname(r.path) for r in group])


def _series_rows(
    images: dict[str, list[HeaderRecord]], correct_tilt: bool
) -> tuple[list[dict[str, Any]], dict[str, SeriesReport]]:
    """One row per image series with its header checks, and the reports by series UID."""
    rows: list[dict[str, Any]] = []
    reports: dict[str, SeriesReport] = {}
    for uid, group in sorted(images.items()):
        report, _ = inspect_headers(group, correct_tilt=correct_tilt)
        reports[uid] = report
        row = report.to_record()
        row["series_key"] = series_key(uid)
        row["series_folder"] = _series_folder(group)
        rows.append(row)
    return rows, reports


def _mask_rows(
    mask_records: list[HeaderRecord], images: dict[str, list[HeaderRecord]]
) -> tuple[list[dict[str, Any]], dict[str, list[HeaderRecord]]]:
    """One row per SEG/RTSTRUCT instance, and the masks by the image series they reference."""
    rows: list[dict[str, Any]] = []
    by_series: dict[str, list[HeaderRecord]] = {}
    for record in sorted(mask_records, key=lambda r: (r.Modality, r.SOPInstanceUID, r.path)):
        matched = [uid for uid in record.referenced_series if uid in images]
        rows.append(
            {
                "mask_source": record.Modality,
                "mask_path": record.path,
                "SOPInstanceUID": record.SOPInstanceUID,
                "referenced_SeriesInstanceUID": record.referenced_series[0] if record.referenced_series else "",
                "SeriesInstanceUID": matched[0] if matched else "",
                "n_segments": len(record.segment_numbers),
                "matched": bool(matched),
                "used": False,
                "reason": "" if matched else (
                    "references a series not in the tree" if record.referenced_series else "no referenced series"
                ),
            }
        )
        if matched:
            by_series.setdefault(matched[0], []).append(record)
    return rows, by_series


def _choose_masks(
    uid: str, masks: list[HeaderRecord], modality: str, mask_rows: list[dict[str, Any]], *,
    wanted: set[str], mask_preference: Sequence[str],
) -> str | None:
    """The kind of mask that makes the series' cases (``None``: none); marks the mask rows used or why not."""
    rows = [row for row in mask_rows if row["SeriesInstanceUID"] == uid]
    if modality not in wanted:
        for row in rows:
            row["reason"] = f"series modality {modality} not in {sorted(wanted)}"
        return None
    order = [kind for kind in mask_preference if any(m.Modality == kind for m in masks)]
    chosen = order[0] if order else None
    for row in rows:
        if row["mask_source"] == chosen:
            row["used"] = True
        else:
            row["reason"] = f"series also has {chosen}, preferred"
    for mask in masks:
        if mask.Modality == chosen and not mask.segment_numbers:
            for row in mask_rows:
                if row["mask_path"] == mask.path:
                    row["used"], row["reason"] = False, "no segments/contours"
    return chosen


def _case_rows(
    group: list[HeaderRecord], masks: list[HeaderRecord], chosen: str, report: SeriesReport,
    pseudonyms: dict[str, str], scope: str,
) -> list[dict[str, Any]]:
    """One case per segment of each chosen mask on the series."""
    first = group[0]
    uid = first.SeriesInstanceUID
    return [
        {
            "case_id": make_case_id(uid, mask.SOPInstanceUID, segment),
            "series_folder": _series_folder(group),
            "mask_path": mask.path,
            "SeriesInstanceUID": uid,
            "StudyInstanceUID": first.StudyInstanceUID,
            "Modality": first.Modality,
            "Manufacturer": first.Manufacturer,
            "StudyDate": first.StudyDate,
            "pseudo_patient_id": pseudonyms.get(first.PatientID, ""),
            "pseudo_patient_id_scope": scope,
            "mask_source": mask.Modality,
            "segment_number": int(segment),
            "series_valid": report.valid,
            "series_flags": list(report.flags),
        }
        for mask in masks
        if mask.Modality == chosen
        for segment in mask.segment_numbers
    ]


def scan_tree(
    dicom_root: str | os.PathLike[str],
    *,
    modalities: Sequence[str] = ("CT", "MR"),
    mask_preference: Sequence[str] = ("SEG", "RTSTRUCT"),
    correct_tilt: bool = False,
    key_file: str | os.PathLike[str] | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> TreeScan:
    """Read every header under ``dicom_root`` and match segmentations to image series.

    Files are grouped by (0020,000E) Series Instance UID from their headers, never by folder
    names, so any layout works. A SEG or RTSTRUCT belongs to the series its
    (0008,1115) Referenced Series Sequence / RT Referenced Series Sequence names.

    Parameters
    ----------
    dicom_root
        Folder to scan (recursively).
    modalities
        Image modalities that make cases.
    mask_preference
        When a series has both SEG and RTSTRUCT masks, only the first kind in this order makes
        cases (they usually outline the same lesions); the others are listed as not used.
    correct_tilt
        Passed to the series checks.
    key_file
        Project key file for ``pseudo_patient_id`` when the tree is not de-identified (default:
        ``PACS_WORKBENCH_KEY_FILE``; without either, pseudonyms are valid for this scan only).
    workers, scheduler, progress
        See :func:`pacs_workbench.core.executor.map_items`.
    """
    if not Path(dicom_root).is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {dicom_root}")
    paths = list_files(dicom_root)
    records, n_not_dicom, n_unreadable = _read_headers(paths, workers=workers, scheduler=scheduler, progress=progress)
    images: dict[str, list[HeaderRecord]] = {}
    mask_records: list[HeaderRecord] = []
    for record in records:
        if record.Modality in ("SEG", "RTSTRUCT"):
            mask_records.append(record)
        elif record.is_image:
            images.setdefault(record.SeriesInstanceUID, []).append(record)
    pseudonyms, scope = _pseudonymizer([r for group in images.values() for r in group], key_file)
    series_rows, reports = _series_rows(images, correct_tilt)
    mask_rows, by_series = _mask_rows(mask_records, images)

    wanted = {m.upper() for m in modalities}
    case_rows: list[dict[str, Any]] = []
    for uid, masks in sorted(by_series.items()):
        group = images[uid]
        chosen = _choose_masks(
            uid, masks, group[0].Modality, mask_rows, wanted=wanted, mask_preference=mask_preference
        )
        if chosen is not None:
            case_rows.extend(_case_rows(group, masks, chosen, reports[uid], pseudonyms, scope))
    cases = pd.DataFrame(case_rows, columns=_CASE_COLUMNS)
    if not cases.empty:
        cases = cases.sort_values("case_id").reset_index(drop=True)
    series = pd.DataFrame(series_rows)
    if not series.empty:
        counts = cases.groupby("SeriesInstanceUID").size() if not cases.empty else pd.Series(dtype=int)
        series["n_cases"] = series["SeriesInstanceUID"].map(counts).fillna(0).astype(int)
    return TreeScan(
        series=series,
        masks=pd.DataFrame(mask_rows),
        cases=cases,
        n_files=len(paths),
        n_not_dicom=n_not_dicom,
        n_unreadable=n_unreadable,
    )


def find_cases(
    dicom_root: str | os.PathLike[str],
    *,
    modalities: Sequence[str] = ("CT", "MR"),
    mask_preference: Sequence[str] = ("SEG", "RTSTRUCT"),
    key_file: str | os.PathLike[str] | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Discover cases in a DICOM tree: one per segment/ROI of each SEG or RTSTRUCT on an image series.

    Parameters
    ----------
    dicom_root
        Any DICOM tree (normally the de-identified output); files are grouped by header.
    modalities, mask_preference, key_file, workers, scheduler, progress
        See :func:`scan_tree`.

    Returns
    -------
    pandas.DataFrame
        ``case_id`` (short hash of the series UID and of the mask instance + segment number),
        ``series_folder``, ``mask_path`` (inputs for
        :func:`~pacs_workbench.preprocess.run.preprocess_cases`; do not print them, source folder
        names can identify), ``SeriesInstanceUID``, ``StudyInstanceUID``,
        ``Modality``, ``Manufacturer``, ``StudyDate``, ``pseudo_patient_id``,
        ``pseudo_patient_id_scope`` (``deid``/``key``/``run``), ``mask_source``,
        ``segment_number``, ``series_valid``, ``series_flags``.
    """
    return scan_tree(
        dicom_root, modalities=modalities, mask_preference=mask_preference, key_file=key_file,
        workers=workers, scheduler=scheduler, progress=progress,
    ).cases
