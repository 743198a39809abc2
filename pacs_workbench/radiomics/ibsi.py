"""IBSI consistency: the corrections of pyradiomics' values and the check against IBSI references.

pyradiomics departs from the Image Biomarker Standardisation Initiative (IBSI, chapter 1) in a
few documented places; :func:`ibsi_correct` undoes the ones that can be undone from the computed
values (excess kurtosis, sample-covariance principal axes, the optional intensity shift of
energy and RMS) under the same feature names, and every output says which corrections it
applied (:data:`IBSI_CORRECTIONS`). Deviations that cannot be corrected after the fact are
listed in :data:`IBSI_UNCORRECTED`. :func:`check_ibsi_reference` runs the IBSI phantoms and
compares every value pyradiomics computes with the published reference and tolerance.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from pacs_workbench.core.params import ParameterError, reference_dir
from pacs_workbench.dicom.attributes import to_float, to_floats
from pacs_workbench.radiomics.extractor import DIAGNOSTIC_PREFIX, run_pyradiomics
from pacs_workbench.radiomics.params import PARAMS_DIR, load_radiomics_params, params_digest

CORRECTIONS_DIAGNOSTIC = "diagnostics_Workbench_IbsiCorrections"
"""Diagnostic entry listing the corrections applied to a case (``;``-separated ids)."""


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
        sizes = to_floats(_parse_vector(spacing))
        voxel = math.prod(sizes) if sizes else 0.0
        if voxel > 0:
            return round(float(volume) / voxel)
    settings = (params or {}).get("setting") or {}
    stages = ("resegmented",) if settings.get("resegmentShape") else ()
    for stage in (*stages, "corrected", "interpolated", "original"):
        count = values.get(f"diagnostics_Mask-{stage}_VoxelNum")
        if count is not None:
            return int(count)
    return None


def _parse_vector(value: Any) -> Any:
    """A diagnostics vector as a list: pyradiomics' tuples may arrive as text (``"(0.8, 0.8, 2.0)"``)."""
    if isinstance(value, str):
        return json.loads(value.replace("(", "[").replace(")", "]"))
    return value


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
    rows, mapping = _reference_rows(root, dataset)
    computed = _compute_mapped(root, spec, {mapping[t] for t in rows["ibsi_tag"] if mapping.get(t)})
    records = [_reference_record(r, mapping.get(str(r.ibsi_tag), ""), computed) for r in rows.itertuples()]
    return pd.DataFrame.from_records(records)


def _reference_rows(root: Path, dataset: IbsiDataset) -> tuple[pd.DataFrame, dict[str, str]]:
    """The reference values of ``dataset`` (``value_ref`` column) and their IBSI tag -> pyradiomics name."""
    phantom = pd.read_csv(root / "ibsi" / "ibsi1_digital_phantom_reference_values.csv", keep_default_na=False)
    if dataset == "phantom":
        rows = phantom.rename(columns={"reference_value": "value_ref"})
        return rows, dict(zip(phantom["ibsi_tag"], phantom["pyradiomics_feature"], strict=True))
    tags = {(str(r.family), str(r.feature), str(r.aggregation)): str(r.ibsi_tag) for r in phantom.itertuples()}
    everything = pd.read_csv(root / "ibsi" / "ibsi1_reference_values_all_configs.csv", keep_default_na=False)
    rows = everything[everything["data"] == _DATASETS[dataset]["data"]].rename(
        columns={"feature_name": "feature", "value": "value_ref"}
    )
    rows = rows.assign(
        ibsi_tag=[tags.get((str(r.family), str(r.feature), str(r.aggregation)), "") for r in rows.itertuples()]
    )
    table = pd.read_csv(root / _DATASETS[dataset]["mapping"], keep_default_na=False)
    mapping = {t: f for t, f in zip(table["tag"], table["pyradiomics_feature"], strict=True) if "diagnostics" not in f}
    return rows, mapping


def _compute_mapped(root: Path, spec: Mapping[str, str], wanted: set[str]) -> dict[str, tuple[float, float]]:
    """(corrected, pyradiomics) value per mapped name: one extraction per 2D/3D/merged variant."""
    computed: dict[str, tuple[float, float]] = {}
    for prefix in sorted({_split_mapped_name(name)[0] for name in wanted}):
        overrides = _variant_overrides(prefix)
        params = load_radiomics_params(PARAMS_DIR / spec["params"], overrides)
        raw = run_pyradiomics(str(root / spec["image"]), str(root / spec["mask"]), params, params_digest(params))
        fixed, _ = ibsi_correct(raw, params)
        for name in wanted:
            head, key = _split_mapped_name(name)
            if head == prefix and key in raw:
                computed[name] = (float(fixed[key]), float(raw[key]))
    return computed


def _reference_record(row: Any, name: str, computed: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """One output row of :func:`check_ibsi_reference`: the reference, the values and the verdict."""
    ref = to_float(row.value_ref)
    ref = math.nan if ref is None else ref
    tol = to_float(row.tolerance) or 0.0
    record = {
        "ibsi_tag": row.ibsi_tag,
        "family": row.family,
        "feature": row.feature,
        "aggregation": row.aggregation,
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
        record["reason"] = _not_computed_reason(str(row.family), str(row.feature), str(row.aggregation))
    return record
