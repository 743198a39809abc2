"""Radiomic features: pyradiomics over many cases, IBSI-consistent, parallel and cached.

A *case* is one image and one mask (NIfTI or NRRD, as the preprocessing stage writes them).
:func:`extract_features` reads a table of cases (``case_id``, ``image``, ``mask`` and any
provenance columns such as ``SeriesInstanceUID``, ``mask_source``, ``pseudo_patient_id`` or
``Manufacturer``), runs pyradiomics with a YAML parameter file (:mod:`.params`) on every case
through :func:`pacs_workbench.core.executor.map_items` (local processes or Dask), and writes one
row per case: ``case_id``, the carried-through columns, every feature under pyradiomics' own name
(``original_firstorder_Mean``, ...) and provenance columns. pyradiomics' ``diagnostics_*``
values go to a separate table.

Values are IBSI-consistent: :func:`pacs_workbench.radiomics.ibsi.ibsi_correct` undoes the
documented pyradiomics/IBSI differences that can be undone, and every output says which
corrections it applied.

Every case is cached by the SHA-256 of its image file, its mask file and the parameter
content (:mod:`.cache`), so a rerun computes only the cases whose inputs or parameters changed.
A case that fails is recorded with its error and the run goes on. The three tables are
replaced together or not at all.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pacs_workbench import __version__
from pacs_workbench.core.executor import map_items
from pacs_workbench.core.files import remove_stale_temp_files, sha256_file, write_together
from pacs_workbench.radiomics.cache import (
    CacheMode,
    cache_file,
    cache_key,
    default_cache_dir,
    read_cache,
    write_cache,
)
from pacs_workbench.radiomics.extractor import DIAGNOSTIC_PREFIX, extractor_ready, run_pyradiomics, warm_extractor
from pacs_workbench.radiomics.ibsi import CORRECTIONS_DIAGNOSTIC, IBSI_CORRECTIONS, IBSI_UNCORRECTED, ibsi_correct
from pacs_workbench.radiomics.params import load_radiomics_params, params_digest, pyradiomics_version

REQUIRED_COLUMNS = ("case_id", "image", "mask")
PROVENANCE_COLUMNS = (
    "image_sha256",
    "mask_sha256",
    "params_sha256",
    "pyradiomics_version",
    "ibsi_corrections",
    "error",
)
METADATA_KEY = b"pacs_workbench.radiomics.features"
CORRECTIONS_KEY = b"ibsi_corrections"

Hashes = tuple[str | None, str | None, str | None]
"""(image SHA-256, mask SHA-256, why the case cannot be computed) of one case."""


class OutputWriteError(RuntimeError):
    """The feature tables could not be written (e.g. a full disk); none of them was replaced."""


# --- one case ------------------------------------------------------------------------------------


def extract_case(
    image_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    params_file: str | os.PathLike[str],
    *,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Extract IBSI-consistent features for one image and mask, in this process.

    Parameters
    ----------
    image_path, mask_path
        NIfTI/NRRD (anything SimpleITK reads) image and label mask.
    params_file
        pyradiomics parameter file (validated with pyradiomics' schema).
    overrides
        Settings laid over the file's ``setting`` section (e.g. ``{"force2D": True}``).

    Returns
    -------
    dict
        pyradiomics' keys: features as ``float`` after :func:`ibsi_correct`, ``diagnostics_*``
        as JSON-able values, plus ``diagnostics_Workbench_IbsiCorrections`` (ids applied,
        ``;``-separated).
    """
    params = load_radiomics_params(params_file, overrides)
    values = run_pyradiomics(str(image_path), str(mask_path), params, params_digest(params))
    corrected, applied = ibsi_correct(values, params)
    corrected[CORRECTIONS_DIAGNOSTIC] = ";".join(applied)
    return corrected


def _compute_case(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: one case through pyradiomics; caches the raw values; never raises.

    The result also says where the time went (for the benchmark's breakdown): ``setup_seconds``
    (building the extractor, once per worker), ``read_seconds`` (reading image and mask),
    ``seconds`` (all of it) and the worker's ``pid``.
    """
    start = time.perf_counter()
    timings = {"setup_seconds": 0.0, "read_seconds": 0.0, "pid": os.getpid()}
    try:
        import SimpleITK as sitk

        if task.get("itk_threads"):
            # One case per core already; ITK's own threads would only oversubscribe.
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(task["itk_threads"]))
        if not extractor_ready(task["params_sha256"]):
            begin = time.perf_counter()
            warm_extractor(task["params"], task["params_sha256"])
            timings["setup_seconds"] = time.perf_counter() - begin
        begin = time.perf_counter()
        image, mask = sitk.ReadImage(task["image"]), sitk.ReadImage(task["mask"])
        timings["read_seconds"] = time.perf_counter() - begin
        values = run_pyradiomics(image, mask, task["params"], task["params_sha256"])
        if task.get("cache_file"):
            # A cache that cannot be written (e.g. a full disk) costs a recomputation later, not the case.
            write_cache(Path(task["cache_file"]), task["key"], values)
        result: dict[str, Any] = {"index": task["index"], "values": values, "error": None}
    except Exception as exc:
        message = _redact(f"{type(exc).__name__}: {exc}", (task.get("image"), task.get("mask")))
        result = {"index": task["index"], "values": None, "error": message}
    return {**result, **timings, "seconds": time.perf_counter() - start}


def _redact(message: str, paths: Iterable[str | None]) -> str:
    """One line of error text without input paths (file names may hold identifiers)."""
    for label, path in zip(("<image>", "<mask>"), paths, strict=False):
        if path:
            message = message.replace(str(path), label).replace(os.path.basename(str(path)), label)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # SimpleITK puts its source location first and the reason after it.
    lines = [line for line in lines if not line.endswith((".cxx", ".h")) and ".cxx:" not in line] or lines
    return " ".join(lines)[:500]


# --- many cases ----------------------------------------------------------------------------------


def read_cases(cases: pd.DataFrame | str | os.PathLike[str]) -> tuple[pd.DataFrame, Path | None]:
    """Load and check the case table.

    Parameters
    ----------
    cases
        DataFrame, or a CSV/Parquet file with columns ``case_id``, ``image``, ``mask``.

    Returns
    -------
    (DataFrame, Path or None)
        The table and the folder relative image/mask paths are resolved against
        (the table's folder; the working directory for a DataFrame).

    Raises
    ------
    ValueError
        Missing required columns, or a ``case_id`` that is empty or repeated.
    """
    if isinstance(cases, pd.DataFrame):
        table, base = cases.copy(), None
    else:
        path = Path(cases)
        if not path.is_file():
            raise FileNotFoundError(f"case table not found: {path}")
        if path.suffix.lower() in {".parquet", ".pq"}:
            table = pd.read_parquet(path)
        else:
            header = pd.read_csv(path, nrows=0).columns
            text_columns = {c: str for c in header if c in REQUIRED_COLUMNS or str(c).endswith("UID")}
            table = pd.read_csv(path, dtype=text_columns, keep_default_na=False, na_values=[""])
        base = path.resolve().parent
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"case table lacks required column(s) {missing}; it needs {list(REQUIRED_COLUMNS)}")
    if table["case_id"].isna().any() or (table["case_id"].astype(str).str.strip() == "").any():
        raise ValueError("case table has rows without a case_id")
    repeated = table["case_id"][table["case_id"].duplicated()].astype(str).unique().tolist()
    if repeated:
        raise ValueError(f"case_id must be unique; repeated: {repeated[:5]}")
    return table.reset_index(drop=True), base


def _resolve(value: Any, base: Path | None) -> Path | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    path = Path(str(value)).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def _hash_inputs(image: Path | None, mask: Path | None) -> Hashes:
    """(image SHA-256, mask SHA-256, problem); the problem names the file role, never its path."""
    hashes: dict[str, str] = {}
    for label, path in (("image", image), ("mask", mask)):
        if path is None:
            return hashes.get("image"), None, f"{label} path is empty"
        if not path.is_file():
            return hashes.get("image"), None, f"{label} file not found"
        try:
            hashes[label] = sha256_file(path)
        except OSError as exc:
            return hashes.get("image"), None, f"{label} file unreadable ({type(exc).__name__})"
    return hashes["image"], hashes["mask"], None


def _upstream_problems(table: pd.DataFrame) -> dict[int, str]:
    """Rows the preprocessing stage did not finish (its ``status`` column is not ``ok``): not computed."""
    if "status" not in table.columns:
        return {}
    problems = {}
    for index, (status, stage, reason) in enumerate(
        zip(
            table["status"],
            table["stage"] if "stage" in table.columns else [None] * len(table),
            table["reason"] if "reason" in table.columns else [None] * len(table),
            strict=True,
        )
    ):
        if pd.isna(status) or str(status) == "ok":
            continue
        detail = ": ".join(str(x) for x in (stage, reason) if isinstance(x, str) and x)
        problems[index] = f"not computed: preprocessing status {status!r}" + (f" ({detail})" if detail else "")
    return problems


def sidecar_paths(out: str | os.PathLike[str]) -> dict[str, Path]:
    """Where the diagnostics and errors tables of an output file go."""
    out_path = Path(out)
    stem = out_path.name[: -len(".parquet")] if out_path.name.endswith(".parquet") else out_path.name
    return {
        "diagnostics": out_path.with_name(f"{stem}.diagnostics.parquet"),
        "errors": out_path.with_name(f"{stem}.errors.parquet"),
    }


def extract_features(
    cases: pd.DataFrame | str | os.PathLike[str],
    params_file: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    workers: int | None = 1,
    scheduler: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: CacheMode = "default",
    progress: bool = True,
) -> pd.DataFrame:
    """Extract IBSI-consistent radiomic features for every case of a table.

    Parameters
    ----------
    cases
        DataFrame or CSV/Parquet file with ``case_id``, ``image``, ``mask`` (relative paths are
        resolved against the table's folder) and any other columns, which are carried through.
    params_file
        pyradiomics parameter file (see ``notebooks/params/radiomics/``).
    out
        Parquet file to write (atomically), with ``<stem>.diagnostics.parquet`` and
        ``<stem>.errors.parquet`` next to it; ``None`` writes nothing.
    workers
        Local processes (1: in this process; ``None``: every core). One case per task.
    scheduler
        Dask scheduler address (``tcp://host:8786``); overrides ``workers``. Bound memory per
        worker with ``dask worker --memory-limit``.
    cache_dir
        Per-case cache folder; default ``<out>.cache/`` (no cache when ``out`` is ``None``).
    cache
        ``"off"`` disables reading and writing the cache.
    progress
        Show a progress bar.

    Returns
    -------
    DataFrame
        One row per input case, in input order: ``case_id``, the carried-through columns (not the
        paths), the features, ``image_sha256``, ``mask_sha256``, ``params_sha256``,
        ``pyradiomics_version``, ``ibsi_corrections`` and ``error`` (``None`` when the case
        succeeded). ``df.attrs["summary"]`` counts cases computed, served from the cache and
        failed; ``df.attrs["ibsi_corrections"]`` describes the corrections.
    """
    start = time.perf_counter()
    table, base = read_cases(cases)
    params = load_radiomics_params(params_file)
    digest = params_digest(params)
    version = pyradiomics_version()
    folder = _cache_folder(out, cache_dir, cache)
    _remove_leftovers(out, folder)
    images, masks, hashes = _hash_cases(table, base)
    parallel = scheduler is not None or workers is None or workers > 1
    values, errors, tasks = _plan_cases(images, masks, hashes, params, digest, version, folder, parallel)
    cached = len(values)  # every value known before computing came from the cache
    if tasks and parallel and scheduler is None:
        # Local workers are forked from this process: built here once, the extractor (and the
        # pyradiomics import) is theirs from the start instead of each worker's first case.
        warm_extractor(params, digest)
    timings = {"plan_seconds": time.perf_counter() - start}
    begin = time.perf_counter()
    timings |= _compute_cases(tasks, values, errors, workers=workers, scheduler=scheduler, progress=progress)
    timings["compute_wall_seconds"] = time.perf_counter() - begin
    begin = time.perf_counter()
    frame, diagnostics, error_table, n_features = _assemble(table, hashes, values, errors, params, digest, version)
    timings["assemble_seconds"] = time.perf_counter() - begin
    corrections = [asdict(c) for c in IBSI_CORRECTIONS]
    summary = {
        "cases": len(table), "succeeded": len(table) - len(errors), "failed": len(errors),
        "computed": len(tasks), "cached": cached, "features": n_features,
        "params_sha256": digest, "pyradiomics_version": version,
        "cache_dir": str(folder) if folder is not None else None, "out": str(out) if out is not None else None,
        "compute_seconds": round(timings.pop("compute_seconds"), 3), "seconds": 0.0,
    }  # fmt: skip
    begin = time.perf_counter()
    if out is not None:
        metadata = _output_metadata(Path(params_file).name, params, summary, corrections)
        _write_tables(Path(out), frame, diagnostics, error_table, metadata)
    timings["write_seconds"] = time.perf_counter() - begin
    # where the time went (benchmarks/bench_features.py prints it): not part of the outputs
    summary["timings"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    frame.attrs["summary"] = summary
    frame.attrs["ibsi_corrections"] = corrections
    return frame


def _cache_folder(
    out: str | os.PathLike[str] | None, cache_dir: str | os.PathLike[str] | None, cache: CacheMode
) -> Path | None:
    """The cache folder of a run: ``cache_dir``, else ``<out>.cache/``; ``None`` without a cache."""
    if cache == "off":
        return None
    if cache_dir is not None:
        return Path(cache_dir)
    return default_cache_dir(out) if out else None


def _remove_leftovers(out: str | os.PathLike[str] | None, folder: Path | None) -> None:
    """Temporary files a killed run left beside the output and in the cache (live runs' stay)."""
    if out is not None and Path(out).parent.is_dir():
        remove_stale_temp_files(Path(out).parent, ".*.tmp")
    if folder is not None and folder.is_dir():
        remove_stale_temp_files(folder, "*/.*.tmp")


def _hash_cases(table: pd.DataFrame, base: Path | None) -> tuple[list[Path | None], list[Path | None], list[Hashes]]:
    """Resolved image and mask paths and the inputs' hashes (read by a few threads: I/O bound)."""
    images = [_resolve(v, base) for v in table["image"]]
    masks = [_resolve(v, base) for v in table["mask"]]
    upstream = _upstream_problems(table)
    for index in upstream:
        images[index] = masks[index] = None
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(table)))) as pool:
        hashes = list(pool.map(_hash_inputs, images, masks))
    hashes = [(None, None, upstream[i]) if i in upstream else h for i, h in enumerate(hashes)]
    return images, masks, hashes


def _plan_cases(
    images: Sequence[Path | None],
    masks: Sequence[Path | None],
    hashes: Sequence[Hashes],
    params: Mapping[str, Any],
    digest: str,
    version: str,
    folder: Path | None,
    parallel: bool,
) -> tuple[dict[int, dict[str, Any]], dict[int, str], list[dict[str, Any]]]:
    """Cached values, input errors, and one task per case still to compute."""
    values: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}
    tasks: list[dict[str, Any]] = []
    for index, (image_sha, mask_sha, problem) in enumerate(hashes):
        if problem or image_sha is None or mask_sha is None:
            errors[index] = problem or "input not readable"
            continue
        key = cache_key(image_sha, mask_sha, digest, version)
        entry = cache_file(folder, key) if folder is not None else None
        hit = read_cache(entry, key) if entry is not None and entry.is_file() else None
        if hit is not None:
            values[index] = hit
            continue
        tasks.append(
            {
                "index": index,
                "image": str(images[index]),
                "mask": str(masks[index]),
                "params": params,
                "params_sha256": digest,
                "key": key,
                "cache_file": str(entry) if entry is not None else None,
                "itk_threads": 1 if parallel else 0,
            }
        )
    return values, errors, tasks


def _compute_cases(
    tasks: Sequence[dict[str, Any]],
    values: dict[int, dict[str, Any]],
    errors: dict[int, str],
    *,
    workers: int | None,
    scheduler: str | None,
    progress: bool,
) -> dict[str, Any]:
    """Run the tasks; their values and errors are added in place.

    Returns the summed per-case seconds (``compute_seconds``), of which extractor set-up and
    image reads, and the number of worker processes that computed cases.
    """
    totals: dict[str, Any] = {"compute_seconds": 0.0, "setup_seconds": 0.0, "read_seconds": 0.0}
    pids: set[int] = set()
    if tasks:
        results = map_items(
            _compute_case,
            tasks,
            workers=workers,
            scheduler=scheduler,
            desc="radiomics cases",
            total=len(tasks),
            progress=progress,
        )
        for result in results:
            totals["compute_seconds"] += float(result["seconds"])
            totals["setup_seconds"] += float(result["setup_seconds"])
            totals["read_seconds"] += float(result["read_seconds"])
            pids.add(int(result["pid"]))
            if result["error"] is None:
                values[result["index"]] = result["values"]
            else:
                errors[result["index"]] = result["error"]
    totals["worker_processes"] = len(pids)
    return totals


def _output_metadata(
    params_name: str, params: Mapping[str, Any], summary: Mapping[str, Any], corrections: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the features Parquet file says about itself (:func:`read_features_metadata`)."""
    return {
        "pacs_workbench_version": __version__,
        "pyradiomics_version": summary["pyradiomics_version"],
        "params_file": params_name,
        "params_sha256": summary["params_sha256"],
        "params": params,
        "cases": summary["cases"],
        "failed": summary["failed"],
        "ibsi_corrections": corrections,
        "ibsi_uncorrected": list(IBSI_UNCORRECTED),
        "columns": {
            "features": "pyradiomics names; values IBSI-consistent (see ibsi_corrections)",
            "ibsi_corrections": "ids of the corrections applied to this case",
            "image_sha256": "SHA-256 of the image file",
            "mask_sha256": "SHA-256 of the mask file",
            "params_sha256": "SHA-256 of the parameter content (canonical JSON)",
            "error": "why the case failed; empty when it succeeded",
        },
    }


def _write_tables(
    out: Path, frame: pd.DataFrame, diagnostics: pd.DataFrame, error_table: pd.DataFrame, metadata: dict[str, Any]
) -> None:
    """The features table and its diagnostics and errors sidecars, replaced together."""
    extra = {
        METADATA_KEY: json.dumps(metadata, default=str),
        CORRECTIONS_KEY: json.dumps(metadata["ibsi_corrections"]),
    }
    sidecars = sidecar_paths(out)
    small = {
        METADATA_KEY: json.dumps(
            {"params_sha256": metadata["params_sha256"], "pyradiomics_version": metadata["pyradiomics_version"]}
        )
    }
    _write_parquet_set(
        [
            (frame, out, extra),
            (diagnostics, sidecars["diagnostics"], small),
            (error_table, sidecars["errors"], small),
        ]
    )


def _assemble(
    table: pd.DataFrame,
    hashes: Sequence[Hashes],
    values: Mapping[int, Mapping[str, Any]],
    errors: Mapping[int, str],
    params: Mapping[str, Any],
    digest: str,
    version: str,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Build the features, diagnostics and errors tables in input order (and count the features)."""
    corrected: dict[int, dict[str, Any]] = {}
    applied: dict[int, str] = {}
    for index, raw in values.items():
        corrected[index], ids = ibsi_correct(raw, params)
        applied[index] = ";".join(ids)

    feature_names: dict[str, None] = {}
    diagnostic_names: dict[str, None] = {}
    for index in sorted(corrected):
        for key in corrected[index]:
            (diagnostic_names if key.startswith(DIAGNOSTIC_PREFIX) else feature_names)[key] = None
    own = set(feature_names) | set(PROVENANCE_COLUMNS)
    carried = [c for c in table.columns if c not in ("case_id", "image", "mask") and c not in own]

    base = table[["case_id", *carried]].reset_index(drop=True)
    feature_frame = pd.DataFrame(
        [[corrected.get(i, {}).get(name, math.nan) for name in feature_names] for i in range(len(table))],
        columns=list(feature_names),
        dtype="float64",
    )
    provenance = pd.DataFrame(
        {
            "image_sha256": [h[0] for h in hashes],
            "mask_sha256": [h[1] for h in hashes],
            "params_sha256": digest,
            "pyradiomics_version": version,
            "ibsi_corrections": [applied.get(i) for i in range(len(table))],
            "error": [errors.get(i) for i in range(len(table))],
        },
        dtype="object",
    )
    frame = pd.concat([base, feature_frame, provenance], axis=1)

    diag_rows = []
    for index in sorted(corrected):
        row: dict[str, Any] = {"case_id": table["case_id"].iloc[index]}
        for name in diagnostic_names:
            value = corrected[index].get(name)
            row[name] = value if value is None or isinstance(value, str) else json.dumps(value)
        row[CORRECTIONS_DIAGNOSTIC] = applied[index]
        diag_rows.append(row)
    diagnostics = pd.DataFrame(diag_rows, columns=["case_id", *diagnostic_names, CORRECTIONS_DIAGNOSTIC])
    diagnostics = diagnostics.astype({c: "object" for c in diagnostics.columns if c != "case_id"})

    error_table = pd.DataFrame(
        {
            "case_id": [table["case_id"].iloc[i] for i in sorted(errors)],
            "error": [errors[i] for i in sorted(errors)],
            "image_sha256": [hashes[i][0] for i in sorted(errors)],
            "mask_sha256": [hashes[i][1] for i in sorted(errors)],
        },
        dtype="object",
    )
    return frame, diagnostics, error_table, len(feature_names)


def _write_parquet_set(parts: Sequence[tuple[pd.DataFrame, Path, Mapping[bytes, str]]]) -> None:
    """Write several Parquet files so that either all are replaced or none is.

    Through :func:`pacs_workbench.core.files.write_together`, so a failure (a full disk) never pairs
    a new table with old sidecars. Raises :class:`OutputWriteError` (temporary files removed) when
    writing fails.
    """
    tables = []
    for frame, _, metadata in parts:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        merged = dict(table.schema.metadata or {})
        merged.update({k: v.encode("utf-8") for k, v in metadata.items()})
        tables.append(table.replace_schema_metadata(merged))

    def write(temps: list[Path]) -> None:
        for table, temp in zip(tables, temps, strict=True):
            pq.write_table(table, temp)

    try:
        write_together([path for _, path, _ in parts], write)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        names = ", ".join(path.name for _, path, _ in parts)
        raise OutputWriteError(f"could not write {names} ({reason}); no output was replaced") from None


def read_features_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The workbench metadata stored in a features Parquet file (corrections, parameters, versions)."""
    metadata = pq.read_schema(path).metadata or {}
    return dict(json.loads(metadata.get(METADATA_KEY, b"{}").decode("utf-8")))
