"""Radiomic features: pyradiomics over many cases, IBSI-consistent, parallel and cached.

A *case* is one image and one mask (NIfTI or NRRD, as the preprocessing stage writes them).
:func:`extract_features` reads a table of cases (``case_id``, ``image``, ``mask`` and any
provenance columns such as ``SeriesInstanceUID``, ``mask_source``, ``pseudo_patient_id`` or
``Manufacturer``), runs pyradiomics with a YAML parameter file on every case through
:func:`pacs_workbench.core.executor.map_items` (local processes or Dask), and writes one row per
case: ``case_id``, the carried-through columns, every feature under pyradiomics' own name
(``original_firstorder_Mean``, ...) and provenance columns. pyradiomics' ``diagnostics_*``
values go to a separate table.

Values are IBSI-consistent. pyradiomics departs from the Image Biomarker Standardisation
Initiative (IBSI, chapter 1) in a few documented places; :func:`ibsi_correct` undoes the
ones that can be undone from the computed values (excess kurtosis, sample-covariance
principal axes, the optional intensity shift of energy and RMS) under the same feature
names, and every output says which corrections it applied (:data:`IBSI_CORRECTIONS`).
Deviations that cannot be corrected after the fact are listed in :data:`IBSI_UNCORRECTED`.

Every case is cached by the SHA-256 of its image file, its mask file and the parameter
content (one small JSON file per key, written atomically), so a rerun computes only the
cases whose inputs or parameters changed. A case that fails is recorded with its error and
the run goes on.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pacs_workbench import __version__
from pacs_workbench.core.executor import map_items
from pacs_workbench.core.files import pid_alive as _pid_alive
from pacs_workbench.core.params import NOTEBOOK_DIR, ParameterError, reference_dir, shipped_file

PARAMS_DIR = NOTEBOOK_DIR / "params" / "radiomics"
"""Shipped pyradiomics parameter files (``ct_default.yaml``, ``mr_default.yaml``, ...)."""

REQUIRED_COLUMNS = ("case_id", "image", "mask")
PROVENANCE_COLUMNS = (
    "image_sha256",
    "mask_sha256",
    "params_sha256",
    "pyradiomics_version",
    "ibsi_corrections",
    "error",
)
DIAGNOSTIC_PREFIX = "diagnostics_"
CORRECTIONS_DIAGNOSTIC = "diagnostics_Workbench_IbsiCorrections"
METADATA_KEY = b"pacs_workbench.radiomics.features"
CORRECTIONS_KEY = b"ibsi_corrections"
CacheMode = Literal["default", "off"]
# Bump when the cached representation of pyradiomics' output changes; old entries are then ignored.
CACHE_FORMAT = 1

_SHAPE_AXES = ("MajorAxisLength", "MinorAxisLength", "LeastAxisLength")
# Feature-name prefixes of pyradiomics' image types -> the imageType key in a parameter file.
_IMAGE_TYPE_PREFIXES = {
    "original": "Original",
    "wavelet": "Wavelet",
    "log": "LoG",
    "square": "Square",
    "squareroot": "SquareRoot",
    "logarithm": "Logarithm",
    "exponential": "Exponential",
    "gradient": "Gradient",
    "lbp": "LBP3D",
}


@dataclass(frozen=True)
class IbsiCorrection:
    """One documented pyradiomics/IBSI difference that the workbench corrects.

    Attributes
    ----------
    id
        Short name, as listed per case in the ``ibsi_corrections`` column.
    features
        Which pyradiomics features change (pattern).
    description
        What is done and why.
    source
        Where the difference is documented.
    """

    id: str
    features: str
    description: str
    source: str


IBSI_CORRECTIONS: tuple[IbsiCorrection, ...] = (
    IbsiCorrection(
        id="excess_kurtosis",
        features="*_firstorder_Kurtosis",
        description=(
            "pyradiomics reports Pearson kurtosis (3 for a normal distribution); IBSI (IPH6) defines "
            "excess kurtosis. Reported value = pyradiomics value - 3."
        ),
        source="pyradiomics firstorder.getKurtosisFeatureValue docstring; IBSI 1 stat_kurt",
    ),
    IbsiCorrection(
        id="pca_axes_sample_covariance",
        features="original_shape_MajorAxisLength, original_shape_MinorAxisLength, original_shape_LeastAxisLength",
        description=(
            "pyradiomics takes the principal axes from the population covariance (divides by N) of the "
            "voxel centres; the IBSI reference values (TDIC, P9VJ, 7J51) use the sample covariance "
            "(N - 1). Reported value = pyradiomics value * sqrt(N / (N - 1)), N = voxels in the "
            "morphological mask. Elongation and flatness are ratios and unaffected."
        ),
        source="pyradiomics shape.py (coordinates divided by sqrt(Np)); IBSI 1 digital phantom 11.4/9.31/8.54",
    ),
    IbsiCorrection(
        id="energy_without_voxel_shift",
        features="*_firstorder_Energy, *_firstorder_TotalEnergy, *_firstorder_RootMeanSquared",
        description=(
            "Only when the parameter file sets voxelArrayShift c != 0: pyradiomics adds c to every "
            "intensity before Energy, TotalEnergy and RootMeanSquared; IBSI (N8CA, 5ZWQ) does not. "
            "Undone exactly from the same image type's Mean and RootMeanSquared: "
            "RMS^2 = RMS_c^2 - 2 c Mean - c^2, Energy = N RMS^2 with N = Energy_c / RMS_c^2, "
            "TotalEnergy scaled by the same ratio. Needs Mean and RootMeanSquared enabled."
        ),
        source="pyradiomics firstorder.py (voxelArrayShift); IBSI 1 stat_energy, stat_rms",
    ),
)
"""Corrections :func:`ibsi_correct` applies (each only where its features are present)."""

IBSI_UNCORRECTED: tuple[dict[str, str], ...] = (
    {
        "id": "fixed_bin_width_origin",
        "applies_to": "binWidth",
        "note": (
            "pyradiomics places bin edges at multiples of binWidth counted from 0; IBSI counts from the "
            "lower re-segmentation bound (or the ROI minimum). Identical when that bound is a multiple of "
            "binWidth and the ROI reaches the first bin (IBSI configuration A); otherwise grey-level "
            "indices shift and index-weighted texture features (joint/sum average, autocorrelation, "
            "grey-level emphases) differ. Not correctable after extraction."
        ),
    },
    {
        "id": "resampling_grid",
        "applies_to": "resampledPixelSpacing",
        "note": (
            "pyradiomics aligns the resampled grid on the origin corner and resamples the mask with "
            "nearest neighbour; IBSI aligns grid centres and thresholds a linearly interpolated mask at "
            "0.5. Affects features after resampling (IBSI configurations B-E)."
        ),
    },
    {
        "id": "per_slice_aggregation",
        "applies_to": "force2D",
        "note": (
            "force2D gives IBSI's 2.5D aggregation (direction-merged, or merged with weightingNorm: "
            "no_weighting); IBSI's per-slice '2D, averaged' and '2D, slice-merged' values have no "
            "pyradiomics equivalent."
        ),
    },
    {
        "id": "combined_resegmentation",
        "applies_to": "resegmentRange",
        "note": (
            "pyradiomics applies an absolute or a sigma range, not both as IBSI configuration E asks."
        ),
    },
)
"""Known differences the workbench does not (cannot) correct; recorded in the output metadata."""


# --- parameters ----------------------------------------------------------------------------------


def load_radiomics_params(
    params_file: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a pyradiomics parameter file and validate it with pyradiomics' own schema.

    Parameters
    ----------
    params_file
        YAML (or JSON) parameter file with ``imageType``, ``featureClass``, ``setting`` sections.
    overrides
        Settings laid over the file's ``setting`` section before validation
        (e.g. ``{"force2D": True}``).

    Returns
    -------
    dict
        The validated parameters.

    Raises
    ------
    ParameterError
        Missing file, malformed YAML, or a value pyradiomics' schema rejects (with its message).
    """
    path = shipped_file(params_file)
    if not path.is_file():
        raise ParameterError(f"radiomics parameter file not found: {params_file}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path.name}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ParameterError(f"{path.name}: expected a mapping, got {type(data).__name__}")
    if overrides:
        data = copy.deepcopy(data)
        settings = data.get("setting") or {}
        settings.update(overrides)
        data["setting"] = settings
    return validate_radiomics_params(data, name=path.name)


def validate_radiomics_params(params: Mapping[str, Any], *, name: str = "parameters") -> dict[str, Any]:
    """Validate a parameter mapping exactly as ``RadiomicsFeatureExtractor`` does (pykwalify).

    Parameters
    ----------
    params
        Parsed parameter file.
    name
        Label used in the error message.

    Returns
    -------
    dict
        The validated parameters (pykwalify's normalised copy).

    Raises
    ------
    ParameterError
        With pykwalify's explanation of every violation.
    """
    import pykwalify.core
    import pykwalify.errors
    from radiomics import getParameterValidationFiles

    memo_key = params_digest(params)
    if memo_key in _VALIDATED:
        return copy.deepcopy(_VALIDATED[memo_key])
    # pykwalify logs each violation at ERROR; the exception carries the same text.
    logging.getLogger("pykwalify").addHandler(logging.NullHandler())
    logging.getLogger("pykwalify").propagate = False
    schema_file, schema_funcs = getParameterValidationFiles()
    core = pykwalify.core.Core(
        source_data=copy.deepcopy(dict(params)), schema_files=[schema_file], extensions=[schema_funcs]
    )
    try:
        validated = core.validate(raise_exception=True)
    except (pykwalify.errors.PyKwalifyException, ValueError, TypeError) as exc:
        message = getattr(exc, "msg", None) or str(exc)
        raise ParameterError(f"{name}: rejected by pyradiomics' parameter schema: {message}") from exc
    # Validation re-reads pyradiomics' schema with ruamel (~70 ms); a cached rerun should not pay it twice.
    _VALIDATED[memo_key] = dict(validated or {})
    return copy.deepcopy(_VALIDATED[memo_key])


_VALIDATED: dict[str, dict[str, Any]] = {}


def params_digest(params: Mapping[str, Any]) -> str:
    """SHA-256 of the parameter content (canonical JSON; comments and layout do not count)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def hash_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def pyradiomics_version() -> str:
    """The installed pyradiomics version (``v3.1.0``)."""
    import radiomics

    return str(radiomics.__version__)


# --- IBSI corrections ------------------------------------------------------------------------------


def ibsi_correct(
    features: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    *,
    n_voxels: int | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Turn pyradiomics values into IBSI-consistent values, keeping pyradiomics' names.

    Parameters
    ----------
    features
        One case's pyradiomics output (features, optionally with ``diagnostics_*`` entries).
    params
        The validated parameter file the values came from; needed only to know
        ``voxelArrayShift`` (default 0, no shift).
    n_voxels
        Voxels in the morphological mask, for the principal-axis correction. When ``None`` it is
        derived from ``original_shape_VoxelVolume`` and the image spacing in the diagnostics, or
        from the diagnostics' voxel count.

    Returns
    -------
    (dict, list of str)
        A corrected copy of ``features`` and the ids (see :data:`IBSI_CORRECTIONS`) applied.
    """
    out = dict(features)
    if CORRECTIONS_DIAGNOSTIC in out:  # already corrected (extract_case output): never correct twice
        return out, [c for c in str(out[CORRECTIONS_DIAGNOSTIC]).split(";") if c]
    applied: list[str] = []

    kurtosis = [k for k in out if k.endswith("_firstorder_Kurtosis") and not k.startswith(DIAGNOSTIC_PREFIX)]
    for key in kurtosis:
        out[key] = float(out[key]) - 3.0
    if kurtosis:
        applied.append("excess_kurtosis")

    axes = [f"original_shape_{name}" for name in _SHAPE_AXES if f"original_shape_{name}" in out]
    if axes:
        n = n_voxels if n_voxels is not None else _shape_voxel_count(out, params)
        if n is not None and n > 1:
            factor = math.sqrt(n / (n - 1))
            for key in axes:
                out[key] = float(out[key]) * factor
            applied.append("pca_axes_sample_covariance")

    if _correct_voxel_shift(out, params):
        applied.append("energy_without_voxel_shift")
    return out, applied


def _correct_voxel_shift(values: dict[str, Any], params: Mapping[str, Any] | None) -> bool:
    corrected = False
    for key in [k for k in values if k.endswith("_firstorder_RootMeanSquared")]:
        prefix = key[: -len("_firstorder_RootMeanSquared")]
        shift = _voxel_shift(params, prefix)
        mean = values.get(f"{prefix}_firstorder_Mean")
        if not shift or mean is None:
            continue
        rms_shifted = float(values[key])
        mean_square = max(rms_shifted**2 - 2.0 * shift * float(mean) - shift**2, 0.0)
        values[key] = math.sqrt(mean_square)
        energy_key, total_key = f"{prefix}_firstorder_Energy", f"{prefix}_firstorder_TotalEnergy"
        if energy_key in values and rms_shifted > 0:
            energy_shifted = float(values[energy_key])
            count = energy_shifted / rms_shifted**2
            values[energy_key] = count * mean_square
            if total_key in values and energy_shifted != 0:
                values[total_key] = float(values[total_key]) * values[energy_key] / energy_shifted
        corrected = True
    return corrected


def _voxel_shift(params: Mapping[str, Any] | None, prefix: str) -> float:
    if not params:
        return 0.0
    settings = params.get("setting") or {}
    head = prefix.split("-")[0].lower()
    image_type = _IMAGE_TYPE_PREFIXES.get(head, "")
    if head == "lbp" and "-2D" in prefix:
        image_type = "LBP2D"
    custom = (params.get("imageType") or {}).get(image_type) or {}
    return float(custom.get("voxelArrayShift", settings.get("voxelArrayShift", 0)) or 0)


def _shape_voxel_count(values: Mapping[str, Any], params: Mapping[str, Any] | None) -> int | None:
    spacing = values.get("diagnostics_Image-interpolated_Spacing") or values.get(
        "diagnostics_Image-original_Spacing"
    )
    volume = values.get("original_shape_VoxelVolume")
    if volume is not None and spacing is not None:
        voxel = math.prod(_as_floats(spacing))
        if voxel > 0:
            return round(float(volume) / voxel)
    settings = (params or {}).get("setting") or {}
    stages = ("resegmented",) if settings.get("resegmentShape") else ()
    for stage in (*stages, "corrected", "interpolated", "original"):
        count = values.get(f"diagnostics_Mask-{stage}_VoxelNum")
        if count is not None:
            return int(count)
    return None


def _as_floats(value: Any) -> list[float]:
    if isinstance(value, str):
        value = json.loads(value.replace("(", "[").replace(")", "]"))
    return [float(v) for v in value]


# --- one case ------------------------------------------------------------------------------------

_LOCAL = threading.local()


def _extractor(params: Mapping[str, Any], digest: str) -> Any:
    """One extractor per parameter set and thread (construction re-validates the schema)."""
    import radiomics
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    cache: dict[str, Any] = getattr(_LOCAL, "extractors", None) or {}
    _LOCAL.extractors = cache
    if digest not in cache:
        radiomics.setVerbosity(logging.ERROR)
        extractor = RadiomicsFeatureExtractor(copy.deepcopy(dict(params)))
        # Diagnostics feed the provenance table and the voxel count of the axis correction.
        extractor.settings["additionalInfo"] = True
        cache[digest] = extractor
    return cache[digest]


def _run_pyradiomics(image: str, mask: str, params: Mapping[str, Any], digest: str) -> dict[str, Any]:
    """pyradiomics' raw output for one case, as JSON-able Python values."""
    raw = _extractor(params, digest).execute(image, mask)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith(DIAGNOSTIC_PREFIX):
            values[key] = _jsonable(value)
        else:
            # Shape axes come from numpy.linalg.eigvals, which returns complex numbers with a ~1e-16
            # imaginary part for (near-)degenerate eigenvalues of the symmetric covariance matrix.
            values[key] = float(np.real(value))
    return values


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


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
    values = _run_pyradiomics(str(image_path), str(mask_path), params, params_digest(params))
    corrected, applied = ibsi_correct(values, params)
    corrected[CORRECTIONS_DIAGNOSTIC] = ";".join(applied)
    return corrected


def _compute_case(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: one case through pyradiomics; caches the raw values; never raises."""
    start = time.perf_counter()
    try:
        if task.get("itk_threads"):
            import SimpleITK as sitk

            # One case per core already; ITK's own threads would only oversubscribe.
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(task["itk_threads"]))
        values = _run_pyradiomics(task["image"], task["mask"], task["params"], task["params_sha256"])
        if task.get("cache_file"):
            # A cache that cannot be written (e.g. a full disk) costs a recomputation later, not the case.
            with contextlib.suppress(OSError):
                _write_json_atomic(Path(task["cache_file"]), {"key": task["key"], "values": values})
        return {"index": task["index"], "values": values, "error": None, "seconds": time.perf_counter() - start}
    except Exception as exc:
        message = _redact(f"{type(exc).__name__}: {exc}", (task.get("image"), task.get("mask")))
        return {"index": task["index"], "values": None, "error": message, "seconds": time.perf_counter() - start}


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


def _hash_inputs(image: Path | None, mask: Path | None) -> tuple[str | None, str | None, str | None]:
    """(image SHA-256, mask SHA-256, problem); the problem names the file role, never its path."""
    hashes: dict[str, str] = {}
    for label, path in (("image", image), ("mask", mask)):
        if path is None:
            return hashes.get("image"), None, f"{label} path is empty"
        if not path.is_file():
            return hashes.get("image"), None, f"{label} file not found"
        try:
            hashes[label] = hash_file(path)
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


def _cache_key(image_sha: str, mask_sha: str, params_sha: str, version: str) -> str:
    text = f"{CACHE_FORMAT}:{image_sha}:{mask_sha}:{params_sha}:{version}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _cache_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.json"


def _read_cache(path: Path, key: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("values"), dict):
        return None
    return entry["values"]


class OutputWriteError(RuntimeError):
    """The feature tables could not be written (e.g. a full disk); none of them was replaced."""


# Temporary files are named ``.<target>.<pid>-<random>.tmp``: the pid tells a killed run's leftovers
# from the files of a run still writing.
_TEMP_PID = re.compile(r"\.(\d+)-[A-Za-z0-9_]+\.tmp$")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"




def _remove_stale_temp_files(folder: Path, pattern: str) -> None:
    """Delete the temporary files that a killed run left in ``folder`` (those of live processes stay)."""
    for path in folder.glob(pattern):
        match = _TEMP_PID.search(path.name)
        if match and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)


def _write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_cache_dir(out: str | os.PathLike[str]) -> Path:
    """The cache folder used for an output file: ``<out>.cache/`` next to it."""
    out_path = Path(out)
    return out_path.with_name(out_path.name + ".cache")


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
    folder: Path | None = None
    if cache != "off":
        folder = Path(cache_dir) if cache_dir is not None else (default_cache_dir(out) if out else None)
    if out is not None and Path(out).parent.is_dir():
        _remove_stale_temp_files(Path(out).parent, ".*.tmp")
    if folder is not None and folder.is_dir():
        _remove_stale_temp_files(folder, "*/.*.tmp")

    images = [_resolve(v, base) for v in table["image"]]
    masks = [_resolve(v, base) for v in table["mask"]]
    upstream = _upstream_problems(table)
    for index in upstream:
        images[index] = masks[index] = None
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(table)))) as pool:
        hashes = list(pool.map(_hash_inputs, images, masks))
    hashes = [(None, None, upstream[i]) if i in upstream else h for i, h in enumerate(hashes)]

    values: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}
    tasks: list[dict[str, Any]] = []
    parallel = scheduler is not None or workers is None or workers > 1
    cached = 0
    for index, (image_sha, mask_sha, problem) in enumerate(hashes):
        if problem or image_sha is None or mask_sha is None:
            errors[index] = problem or "input not readable"
            continue
        key = _cache_key(image_sha, mask_sha, digest, version)
        cache_file = _cache_file(folder, key) if folder is not None else None
        hit = _read_cache(cache_file, key) if cache_file is not None and cache_file.is_file() else None
        if hit is not None:
            values[index] = hit
            cached += 1
            continue
        tasks.append(
            {
                "index": index,
                "image": str(images[index]),
                "mask": str(masks[index]),
                "params": params,
                "params_sha256": digest,
                "key": key,
                "cache_file": str(cache_file) if cache_file is not None else None,
                "itk_threads": 1 if parallel else 0,
            }
        )

    compute_seconds = 0.0
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
            compute_seconds += float(result["seconds"])
            if result["error"] is None:
                values[result["index"]] = result["values"]
            else:
                errors[result["index"]] = result["error"]

    frame, diagnostics, error_table, n_features = _assemble(
        table, hashes, values, errors, params, digest, version
    )
    corrections = [asdict(c) for c in IBSI_CORRECTIONS]
    summary = {
        "cases": len(table),
        "succeeded": len(table) - len(errors),
        "failed": len(errors),
        "computed": len(tasks),
        "cached": cached,
        "features": n_features,
        "params_sha256": digest,
        "pyradiomics_version": version,
        "cache_dir": str(folder) if folder is not None else None,
        "out": str(out) if out is not None else None,
        "compute_seconds": round(compute_seconds, 3),
        "seconds": 0.0,
    }
    if out is not None:
        metadata = {
            "pacs_workbench_version": __version__,
            "pyradiomics_version": version,
            "params_file": Path(params_file).name,
            "params_sha256": digest,
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
        extra = {METADATA_KEY: json.dumps(metadata, default=str), CORRECTIONS_KEY: json.dumps(corrections)}
        sidecars = sidecar_paths(out)
        small = {METADATA_KEY: json.dumps({"params_sha256": digest, "pyradiomics_version": version})}
        _write_parquet_set(
            [
                (frame, Path(out), extra),
                (diagnostics, sidecars["diagnostics"], small),
                (error_table, sidecars["errors"], small),
            ]
        )
    summary["seconds"] = round(time.perf_counter() - start, 3)
    frame.attrs["summary"] = summary
    frame.attrs["ibsi_corrections"] = corrections
    return frame


def _assemble(
    table: pd.DataFrame,
    hashes: Sequence[tuple[str | None, str | None, str | None]],
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

    Each goes to a temporary file next to its target first; only when every one is complete
    are they renamed into place, so a failure (a full disk) never pairs a new table with old
    sidecars. Raises :class:`OutputWriteError` (temporary files removed) when writing fails.
    """
    written: list[tuple[Path, Path]] = []
    try:
        for frame, path, metadata in parts:
            path.parent.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            merged = dict(table.schema.metadata or {})
            merged.update({k: v.encode("utf-8") for k, v in metadata.items()})
            table = table.replace_schema_metadata(merged)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
            os.close(fd)
            written.append((Path(name), path))
            pq.write_table(table, name)
    except BaseException as exc:
        for temp, _ in written:
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            names = ", ".join(path.name for _, path, _ in parts)
            raise OutputWriteError(f"could not write {names} ({reason}); no output was replaced") from None
        raise
    for temp, target in written:
        os.replace(temp, target)


def read_features_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The workbench metadata stored in a features Parquet file (corrections, parameters, versions)."""
    metadata = pq.read_schema(path).metadata or {}
    return dict(json.loads(metadata.get(METADATA_KEY, b"{}").decode("utf-8")))


# --- IBSI reference check ------------------------------------------------------------------------

IbsiDataset = Literal["phantom", "A"]

_DATASETS: dict[str, dict[str, str]] = {
    "phantom": {
        "data": "dig. phantom",
        "image": "ibsi/digital_phantom/phantom.nii.gz",
        "mask": "ibsi/digital_phantom/mask.nii.gz",
        "params": "ibsi_phantom.yaml",
        "mapping": "",
    },
    "A": {
        "data": "config. A",
        "image": "ibsi/ct_radiomics_phantom/nifti/image_phantom.nii.gz",
        "mask": "ibsi/ct_radiomics_phantom/nifti/mask.nii.gz",
        "params": "ibsi_config_a.yaml",
        "mapping": "ibsi/pyradiomics_mapping/mapping_case1.csv",
    },
}


def within_ibsi_tolerance(value: float, reference: float, tolerance: float) -> bool:
    """IBSI's match rule: ``|value - reference| <= tolerance``.

    A tolerance of 0 (the manual prints "—") means the value must round to the reference at
    3 significant digits.
    """
    if not math.isfinite(value):
        return False
    if tolerance > 0:
        return abs(value - reference) <= tolerance * (1 + 1e-9)
    if reference == 0:
        return abs(value) < 5e-4
    half_unit = 0.5 * 10 ** (math.floor(math.log10(abs(reference))) - 2)
    return abs(value - reference) <= half_unit * (1 + 1e-9)


def _not_computed_reason(family: str, feature: str, aggregation: str) -> str:
    """Why pyradiomics has no value for an IBSI reference row."""
    if aggregation.startswith("2D"):
        return "per-slice 2D aggregation: pyradiomics' force2D gives only the 2.5D (slice-merged) values"
    reasons = {
        "distance zone": "GLDZM family not implemented in pyradiomics",
        "intensity-volume histogram": "intensity-volume histogram not implemented in pyradiomics",
        "local intensity": "local/global intensity peak not implemented in pyradiomics",
        "intensity histogram": "intensity-histogram statistic not in pyradiomics (only entropy and uniformity)",
        "statistical": "statistic not in pyradiomics (median absolute deviation, CoV, QCoD)",
        "morphological": "morphological feature not in pyradiomics",
        "dependence": "NGLDM feature without a pyradiomics GLDM equivalent (dependence count percentage/energy)",
    }
    for needle, reason in reasons.items():
        if needle in family.lower():
            return reason
    return f"no pyradiomics equivalent for {feature!r}"


def _variant_overrides(prefix: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if prefix.startswith("2D"):
        overrides["force2D"] = True
    if "Combined" in prefix:
        overrides["weightingNorm"] = "no_weighting"
    return overrides


def _split_mapped_name(name: str) -> tuple[str, str]:
    """``2D_Combined_original_glcm_Id`` -> (``2D_Combined_``, ``original_glcm_Id``)."""
    prefix = ""
    for part in ("3D_", "2D_", "Combined_"):
        if name[len(prefix) :].startswith(part):
            prefix += part
    return prefix, name[len(prefix) :]


def check_ibsi_reference(
    dataset: IbsiDataset = "phantom", reference: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """Compare the workbench's values with IBSI chapter 1 reference values.

    Parameters
    ----------
    dataset
        ``"phantom"``: the digital phantom (``ibsi_phantom.yaml``); ``"A"``: configuration A on the
        CT radiomics phantom (``ibsi_config_a.yaml``).
    reference
        Reference-data folder (holding ``ibsi/``); default ``$PACS_WORKBENCH_REFERENCE``.

    Returns
    -------
    DataFrame
        One row per IBSI reference value: ``ibsi_tag``, ``family``, ``feature``, ``aggregation``,
        ``reference_value``, ``tolerance``, ``pyradiomics_feature``, ``value`` (workbench),
        ``value_uncorrected`` (pyradiomics), ``status`` (``pass``, ``fail`` or ``not computed``)
        and ``reason`` (for rows pyradiomics does not compute).
    """
    root = Path(reference) if reference is not None else reference_dir()
    if root is None:
        raise ParameterError("set PACS_WORKBENCH_REFERENCE to the reference-data folder")
    spec = _DATASETS[dataset]
    phantom = pd.read_csv(root / "ibsi" / "ibsi1_digital_phantom_reference_values.csv", keep_default_na=False)
    tags = {(str(r.family), str(r.feature), str(r.aggregation)): str(r.ibsi_tag) for r in phantom.itertuples()}
    if dataset == "phantom":
        rows = phantom.rename(columns={"reference_value": "value_ref"})
        mapping = dict(zip(phantom["ibsi_tag"], phantom["pyradiomics_feature"], strict=True))
    else:
        everything = pd.read_csv(root / "ibsi" / "ibsi1_reference_values_all_configs.csv", keep_default_na=False)
        rows = everything[everything["data"] == spec["data"]].rename(
            columns={"feature_name": "feature", "value": "value_ref"}
        )
        rows = rows.assign(
            ibsi_tag=[tags.get((str(r.family), str(r.feature), str(r.aggregation)), "") for r in rows.itertuples()]
        )
        table = pd.read_csv(root / spec["mapping"], keep_default_na=False)
        mapping = {
            t: f for t, f in zip(table["tag"], table["pyradiomics_feature"], strict=True) if "diagnostics" not in f
        }

    wanted = {mapping[t] for t in rows["ibsi_tag"] if mapping.get(t)}
    computed: dict[str, tuple[float, float]] = {}
    for prefix in sorted({_split_mapped_name(name)[0] for name in wanted}):
        overrides = _variant_overrides(prefix)
        params = load_radiomics_params(PARAMS_DIR / spec["params"], overrides)
        raw = _run_pyradiomics(str(root / spec["image"]), str(root / spec["mask"]), params, params_digest(params))
        fixed, _ = ibsi_correct(raw, params)
        for name in wanted:
            head, key = _split_mapped_name(name)
            if head == prefix and key in raw:
                computed[name] = (float(fixed[key]), float(raw[key]))

    records = []
    for r in rows.itertuples():
        name = mapping.get(r.ibsi_tag, "")
        ref, tol = _to_float(r.value_ref), _to_float(r.tolerance, default=0.0)
        record = {
            "ibsi_tag": r.ibsi_tag,
            "family": r.family,
            "feature": r.feature,
            "aggregation": r.aggregation,
            "reference_value": ref,
            "tolerance": tol,
            "pyradiomics_feature": name,
            "value": math.nan,
            "value_uncorrected": math.nan,
            "status": "not computed",
            "reason": "",
        }
        if name in computed:
            value, uncorrected = computed[name]
            passed = within_ibsi_tolerance(value, ref, tol)
            record.update(value=value, value_uncorrected=uncorrected, status="pass" if passed else "fail")
        elif name:
            record["reason"] = "mapped feature missing from pyradiomics output"
        else:
            record["reason"] = _not_computed_reason(str(r.family), str(r.feature), str(r.aggregation))
        records.append(record)
    return pd.DataFrame.from_records(records)


def _to_float(value: Any, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def iter_param_files(folder: Path = PARAMS_DIR) -> Iterator[Path]:
    """The shipped radiomics parameter files."""
    yield from sorted(folder.glob("*.yaml"))
