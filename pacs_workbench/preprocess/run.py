"""The cached, parallel preprocessing run: one task per case, results in ``preprocess.parquet``.

:func:`preprocess_cases` hands each case to :func:`process_case` (in local processes or on
Dask) and writes ``volumes/<case_id>_image.nii.gz`` and ``_mask.nii.gz``, a ``<case_id>.json``
cache record, ``preprocess.parquet`` and ``cases.parquet``/``cases.csv``. A case is redone only
when the content of its files or the parameters that affect it changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from pacs_workbench.core.executor import map_items
from pacs_workbench.core.files import sha256_file, write_atomic, write_text_atomic
from pacs_workbench.preprocess.checks import SeriesReport
from pacs_workbench.preprocess.grid import grid_of
from pacs_workbench.preprocess.headers import HeaderRecord, collect_headers, list_files, scrub_paths
from pacs_workbench.preprocess.image import PreprocessParams, preprocess_image
from pacs_workbench.preprocess.masks import MaskError, read_mask
from pacs_workbench.preprocess.series import SeriesError, volume_from_headers

# Bump when a change in the code changes outputs, so caches from older code are redone.
PIPELINE_VERSION = "1"
_CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


_PROVENANCE = (
    "SeriesInstanceUID", "StudyInstanceUID", "Modality", "Manufacturer", "StudyDate",
    "pseudo_patient_id", "mask_source", "segment_number",
)


@dataclass(frozen=True)
class CaseTask:
    """One case for the worker (picklable)."""

    case_id: str
    series_folder: str
    mask_path: str
    series_uid: str | None
    segment: int | None
    params: dict[str, Any]
    volumes_dir: str
    provenance: dict[str, Any]


def _stat_key(path: str) -> str:
    """Path, size and modification time, hashed: source paths can hold names, so only this is stored."""
    info = os.stat(path)
    return hashlib.sha256(f"{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:32]


def _digests(paths: Sequence[str], known: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Content digests of ``paths``, reusing ``known`` ones for files whose path/size/mtime are unchanged."""
    digests, memo = [], {}
    for path in paths:
        key = _stat_key(path)
        digest = known.get(key) or sha256_file(path)
        memo[key] = digest
        digests.append(digest)
    return digests, memo


def _write_image(image: sitk.Image, target: Path) -> None:
    """Write a compressed NIfTI file atomically (SimpleITK picks its writer by the file name)."""
    write_atomic(target, lambda temp: sitk.WriteImage(image, str(temp), useCompression=True), suffix=".nii.gz")


def _remove_outputs(volumes: Path, case_id: str) -> None:
    for suffix in ("_image.nii.gz", "_mask.nii.gz"):
        (volumes / f"{case_id}{suffix}").unlink(missing_ok=True)


def _base_record(task: CaseTask, *, only_given: bool = False) -> dict[str, Any]:
    """``case_id`` and the provenance the caller gave (``only_given``: skip the ones it left empty)."""
    record: dict[str, Any] = {"case_id": task.case_id}
    for name in _PROVENANCE:
        value = task.provenance.get(name)
        if value is not None or not only_given:
            record[name] = value
    return record


_INTERNAL_KEYS = ("file_digests", "input_fingerprint", "series_digests", "mask_digest", "cache_modality")


@dataclass
class _Inputs:
    """What a case's cache key is made of, and the headers when they had to be read."""

    fingerprint: str
    digests: list[str]
    mask_digest: str
    modality: str
    memo: dict[str, str]
    records: list[HeaderRecord] | None = None
    unreadable: list[str] = field(default_factory=list)


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    """The cache record of the last run, or ``{}`` when there is none or it cannot be read."""
    if not sidecar.is_file():
        return {}
    try:
        return dict(json.loads(sidecar.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _case_inputs(task: CaseTask, cached: dict[str, Any]) -> _Inputs:
    """Digests of the series' files and the mask; those of the last run when no file changed."""
    stat_keys = sorted(_stat_key(p) for p in list_files(task.series_folder))
    fingerprint = hashlib.sha256(
        json.dumps([stat_keys, _stat_key(task.mask_path), task.series_uid]).encode()
    ).hexdigest()
    if cached.get("input_fingerprint") == fingerprint and "series_digests" in cached:
        # Nothing in the folder or the mask file changed since the last run: reuse its digests.
        return _Inputs(
            fingerprint, list(cached["series_digests"]), str(cached["mask_digest"]),
            str(cached.get("cache_modality", "")), dict(cached.get("file_digests", {})),
        )
    unreadable: list[str] = []
    records = collect_headers(task.series_folder, task.series_uid, skipped=unreadable)
    modality = records[0].Modality if records else ""
    digest_list, memo = _digests([r.path for r in records] + [task.mask_path], cached.get("file_digests", {}))
    return _Inputs(fingerprint, sorted(digest_list[:-1]), digest_list[-1], modality, memo, records, unreadable)


def _cache_key(task: CaseTask, inputs: _Inputs, effective: dict[str, Any]) -> str:
    key_material = {
        "version": PIPELINE_VERSION,
        "case_id": task.case_id,
        "series_uid": task.series_uid,
        "segment": task.segment,
        "series_files": inputs.digests,
        "mask_file": inputs.mask_digest,
        "params": effective,
    }
    return hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()


def _missing_inputs(task: CaseTask) -> list[str]:
    return [
        what
        for what, path in (("series folder", task.series_folder), ("mask file", task.mask_path))
        if not os.path.exists(path)
    ]


def process_case(task: CaseTask) -> dict[str, Any]:
    """Worker: preprocess one case, or reuse its cached result. Never raises.

    The cache key hashes the content of the series' files and of the mask file, the parameters
    that affect the case (:meth:`PreprocessParams.effective`) and the pipeline version. A rerun
    first compares path/size/modification time of every file in the series folder with the
    last run; only when something changed are headers read and contents hashed again.

    Returns a record for ``preprocess.parquet`` with ``status`` ``ok``, ``excluded`` (the
    series or mask cannot be used; ``reason`` says why) or ``error`` (unexpected failure, not
    cached so a rerun retries it).
    """
    started = time.perf_counter()
    record = _base_record(task)
    try:
        params = PreprocessParams.coerce(task.params)
        missing = _missing_inputs(task)
        if not missing:
            return _processed_or_cached(task, params, record, started)
        record.update(status="excluded", stage="input", reason=f"{' and '.join(missing)} not found", cached=False)
    except Exception as exc:
        record.update(
            status="error",
            stage="run",
            reason=f"{type(exc).__name__}: {scrub_paths(str(exc))[:300]}",
            cached=False,
        )
    record["elapsed_s"] = round(time.perf_counter() - started, 3)
    return record


def _processed_or_cached(
    task: CaseTask, params: PreprocessParams, record: dict[str, Any], started: float
) -> dict[str, Any]:
    """The cached record when the cache key matches and the volumes are there, else a fresh run."""
    volumes = Path(task.volumes_dir)
    image_path = volumes / f"{task.case_id}_image.nii.gz"
    mask_path = volumes / f"{task.case_id}_mask.nii.gz"
    sidecar = volumes / f"{task.case_id}.json"
    cached = _read_sidecar(sidecar)
    inputs = _case_inputs(task, cached)
    effective = params.effective(inputs.modality)
    cache_key = _cache_key(task, inputs, effective)
    outputs_ok = cached.get("status") != "ok" or (image_path.is_file() and mask_path.is_file())
    if cached.get("cache_key") == cache_key and outputs_ok:
        for key in _INTERNAL_KEYS:
            cached.pop(key, None)
        cached.update(_base_record(task, only_given=True))
        cached["cached"] = True
        cached["elapsed_s"] = round(time.perf_counter() - started, 3)
        return cached
    records = inputs.records
    if records is None:
        records = collect_headers(task.series_folder, task.series_uid, skipped=inputs.unreadable)
    record.update(cache_key=cache_key, input_sha256=hashlib.sha256("".join(inputs.digests).encode()).hexdigest())
    record["parameters"] = json.dumps(effective, sort_keys=True)
    record.update(_run_case(task, records, params, inputs.modality, image_path, mask_path))
    if inputs.unreadable:
        # Files that could not be read at all are not part of the volume; a gap check may also catch them.
        note = f"{len(inputs.unreadable)} unreadable file(s) in the folder"
        record["warnings"] = [*record.get("warnings", []), note]
        record["flags"] = [*record.get("flags", []), "unreadable_files"]
    if record["status"] != "ok":
        _remove_outputs(volumes, task.case_id)
    record["cached"] = False
    record["elapsed_s"] = round(time.perf_counter() - started, 3)
    stored = {
        **record,
        "file_digests": inputs.memo,
        "input_fingerprint": inputs.fingerprint,
        "series_digests": inputs.digests,
        "mask_digest": inputs.mask_digest,
        "cache_modality": inputs.modality,
    }
    write_text_atomic(sidecar, json.dumps(stored, sort_keys=True, default=str))
    return record


def _run_case(
    task: CaseTask,
    records: list[HeaderRecord],
    params: PreprocessParams,
    modality: str,
    image_path: Path,
    mask_path: Path,
) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "ok", "stage": "", "reason": ""}
    warnings: list[str] = []
    flags: list[str] = []
    try:
        image, report = volume_from_headers(
            records,
            correct_tilt=params.correct_tilt,
            spacing_tolerance=params.spacing_tolerance,
            min_slices=params.min_slices,
        )
    except SeriesError as exc:
        if exc.report is not None:
            out.update(_series_columns(exc.report))
            out.update(_derived_provenance(task, exc.report))
        out.update(status="excluded", stage="series", reason=exc.reason)
        return out
    out.update(_series_columns(report))
    out.update(_derived_provenance(task, report))
    warnings.extend(report.warnings)
    flags.extend(report.flags)
    try:
        mask, mask_report = read_mask(task.mask_path, image, segment=task.segment)
        if task.provenance.get("mask_source") is None:
            out["mask_source"] = mask_report.mask_source
        warnings.extend(mask_report.warnings)
        flags.extend(f for f in mask_report.flags if f not in flags)
        out["mask_voxels_source"] = mask_report.n_voxels
        processed, processed_mask, info = preprocess_image(image, mask, params, modality=modality)
    except MaskError as exc:
        if exc.report is not None:
            warnings.extend(exc.report.warnings)
            flags.extend(f for f in exc.report.flags if f not in flags)
        out.update(status="excluded", stage="mask", reason=exc.reason, warnings=warnings, flags=flags)
        return out
    warnings.extend(info["warnings"])
    _write_image(processed, image_path)
    _write_image(processed_mask, mask_path)
    grid = grid_of(processed)
    out.update(
        {
            "out_size_x": grid["size"][0], "out_size_y": grid["size"][1], "out_size_z": grid["size"][2],
            "out_spacing_x": grid["spacing"][0], "out_spacing_y": grid["spacing"][1],
            "out_spacing_z": grid["spacing"][2],
            "out_origin": grid["origin"], "out_direction": grid["direction"],
            "mask_voxels_in": info["mask_voxels_in"], "mask_voxels_out": info["mask_voxels_out"],
            "mask_volume_mm3": info["mask_volume_mm3"],
            "steps": json.dumps(info["steps"]),
            "sample_before": info["sample_before"], "sample_after": info["sample_after"],
            "image": str(image_path.resolve()), "mask": str(mask_path.resolve()),
            "warnings": warnings, "flags": flags,
        }
    )
    return out


def _derived_provenance(task: CaseTask, report: SeriesReport) -> dict[str, Any]:
    """Provenance the caller did not give, from the headers (never identifying attributes)."""
    return {
        name: getattr(report, name) or None
        for name in ("SeriesInstanceUID", "StudyInstanceUID", "Modality", "Manufacturer")
        if task.provenance.get(name) is None
    }


def _series_columns(report: SeriesReport) -> dict[str, Any]:
    """Input-geometry columns of a series report (prefixed ``in_``) and its checks."""
    return {
        "in_size_x": report.size[0] if report.size else None,
        "in_size_y": report.size[1] if report.size else None,
        "in_size_z": report.size[2] if report.size else None,
        "in_spacing_x": report.spacing[0] if report.spacing else None,
        "in_spacing_y": report.spacing[1] if report.spacing else None,
        "in_spacing_z": report.spacing[2] if report.spacing else None,
        "in_origin": list(report.origin) if report.origin else None,
        "in_direction": list(report.direction) if report.direction else None,
        "SliceThickness": report.SliceThickness,
        "slice_spacing_mm": report.slice_spacing_mm,
        "n_files": report.n_files,
        "n_slices": report.n_slices,
        "n_localizers": report.n_localizers,
        "n_duplicates": report.n_duplicates,
        "n_missing": report.n_missing,
        "gantry_tilt_deg": report.gantry_tilt_deg,
        "oblique": report.oblique,
        "flags": list(report.flags),
        "warnings": list(report.warnings),
    }


_RESULT_COLUMNS = [
    "case_id", "status", "stage", "reason", "cached", *_PROVENANCE,
    "in_size_x", "in_size_y", "in_size_z", "in_spacing_x", "in_spacing_y", "in_spacing_z", "in_origin",
    "in_direction", "SliceThickness", "slice_spacing_mm", "n_files", "n_slices", "n_localizers",
    "n_duplicates", "n_missing", "gantry_tilt_deg", "oblique",
    "out_size_x", "out_size_y", "out_size_z", "out_spacing_x", "out_spacing_y", "out_spacing_z", "out_origin",
    "out_direction", "mask_voxels_source", "mask_voxels_in", "mask_voxels_out", "mask_volume_mm3",
    "flags", "warnings", "steps", "parameters", "cache_key", "input_sha256", "image", "mask",
    "sample_before", "sample_after", "elapsed_s",
]
CASES_COLUMNS = [
    "case_id", "image", "mask", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "mask_source",
    "segment_number", "pseudo_patient_id", "StudyDate", "Manufacturer",
]


def _cases_frame(cases: pd.DataFrame | Sequence[Sequence[Any]]) -> pd.DataFrame:
    if isinstance(cases, pd.DataFrame):
        frame = cases.copy()
    else:
        rows = [list(c) for c in cases]
        if any(len(r) != 3 for r in rows):
            raise ValueError("cases must be (case_id, series_folder, mask_path) tuples or a DataFrame")
        frame = pd.DataFrame(rows, columns=["case_id", "series_folder", "mask_path"])
    missing = {"case_id", "series_folder", "mask_path"} - set(frame.columns)
    if missing:
        raise ValueError(f"cases table lacks column(s): {', '.join(sorted(missing))}")
    frame["case_id"] = frame["case_id"].astype(str)
    duplicated = frame["case_id"][frame["case_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"case_id values must be unique; repeated: {duplicated[:5]}")
    return frame.reset_index(drop=True)


def _value(row: pd.Series, name: str) -> Any:
    value = row.get(name)
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value


def _write_parquet(frame: pd.DataFrame, target: Path) -> None:
    write_atomic(target, lambda temp: frame.to_parquet(temp, index=False))


def _tasks(
    frame: pd.DataFrame, p: PreprocessParams, volumes: Path
) -> tuple[list[CaseTask], list[dict[str, Any]]]:
    """One task per usable case, and the records of cases refused before any work."""
    tasks: list[CaseTask] = []
    bad: list[dict[str, Any]] = []
    for _, row in frame.iterrows():
        case_id = str(row["case_id"])
        segment = _value(row, "segment_number")
        task = CaseTask(
            case_id=case_id,
            series_folder=str(row["series_folder"]),
            mask_path=str(row["mask_path"]) if _value(row, "mask_path") else "",
            series_uid=_value(row, "SeriesInstanceUID") or None,
            segment=int(segment) if segment is not None else None,
            params=p.to_dict(),
            volumes_dir=str(volumes),
            provenance={name: _value(row, name) for name in _PROVENANCE},
        )
        if not _CASE_ID_RE.match(case_id):
            record = _base_record(task)
            record.update(status="error", stage="input", reason="case_id must be letters, digits, '.', '_' or '-'")
            bad.append(record)
        elif not task.mask_path:
            record = _base_record(task)
            record.update(status="excluded", stage="mask", reason="no mask file for the case")
            bad.append(record)
        else:
            tasks.append(task)
    return tasks, bad


def _result_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The ``preprocess.parquet`` table: every result column, one row per case sorted by ``case_id``."""
    result = pd.DataFrame(records)
    for column in _RESULT_COLUMNS:
        if column not in result.columns:
            result[column] = None
    result = result[_RESULT_COLUMNS].sort_values("case_id").reset_index(drop=True)
    for column in ("flags", "warnings"):
        result[column] = result[column].map(lambda v: list(v) if isinstance(v, list | tuple | np.ndarray) else [])
    result["cached"] = result["cached"].fillna(False).astype(bool)
    return result


def preprocess_cases(
    cases: pd.DataFrame | Sequence[Sequence[Any]],
    out_dir: str | os.PathLike[str],
    params: PreprocessParams | dict[str, Any] | None = None,
    *,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Preprocess every case; cached, parallel and resumable.

    Parameters
    ----------
    cases
        ``(case_id, series_folder, mask_path)`` tuples, or a DataFrame with those columns and
        optionally ``SeriesInstanceUID`` (to pick the series in a shared folder), ``segment_number``
        and provenance columns (``StudyInstanceUID``, ``Modality``, ``Manufacturer``, ``StudyDate``,
        ``pseudo_patient_id``, ``mask_source``) -- the output of
        :func:`~pacs_workbench.preprocess.cases.find_cases`. ``case_id`` must be a pseudonymous key
        (letters, digits, ``._-``): it names the output files.
    out_dir
        Receives ``volumes/<case_id>_image.nii.gz``, ``volumes/<case_id>_mask.nii.gz`` (plus a
        ``<case_id>.json`` cache record), ``preprocess.parquet``, ``cases.parquet`` and ``cases.csv``.
    params
        :class:`PreprocessParams` or a dict of its fields.
    workers, scheduler, progress
        See :func:`pacs_workbench.core.executor.map_items`.

    Returns
    -------
    pandas.DataFrame
        The ``preprocess.parquet`` table: one row per case with ``status`` (``ok``, ``excluded``,
        ``error``), ``stage``/``reason``, ``cached``, input and output geometry (``in_*``, ``out_*``),
        mask voxel counts, ``flags``, ``warnings``, ``steps`` and ``parameters`` (JSON), and
        ``image``/``mask`` paths. Cases are cached by a hash of their input files and of the
        parameters that affect them; a rerun with the same inputs and parameters does nothing.
    """
    p = PreprocessParams.coerce(params)
    frame = _cases_frame(cases)
    out = Path(out_dir)
    volumes = out / "volumes"
    volumes.mkdir(parents=True, exist_ok=True)
    tasks, bad = _tasks(frame, p, volumes)
    records = list(
        map_items(
            process_case, tasks, workers=workers, scheduler=scheduler,
            desc="preprocess cases", total=len(tasks), progress=progress,
        )
    )
    result = _result_frame([*records, *bad])
    _write_parquet(result, out / "preprocess.parquet")
    ok = result[result["status"] == "ok"]
    cases_table = ok[[c for c in CASES_COLUMNS if c in ok.columns]].reset_index(drop=True)
    _write_parquet(cases_table, out / "cases.parquet")
    write_atomic(out / "cases.csv", lambda temp: cases_table.to_csv(temp, index=False))
    return result

