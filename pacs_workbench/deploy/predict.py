"""Applying a model package to a new cohort's preprocessed cases (``pacs-workbench predict``).

:func:`predict_cases` takes the preprocessing stage's case table of another site (or of next
month's studies) and scores it with the package exactly as the development cases were scored:

1. the package is verified against its manifest (:func:`~pacs_workbench.deploy.package.load_package`);
2. the cases' preprocessing parameters (the stage's ``preprocess.parquet`` beside the case
   table) must hash to the package's, per modality; otherwise it refuses;
3. features are extracted by :func:`pacs_workbench.radiomics.extract_features` with the
   package's own parameter file, never the caller's, and their parameter hash is checked;
4. rows are built as the development rows were (``patient``: the model table's index lesion and
   growth, with clinical columns from the cohort); a column the model reads that is missing
   refuses the run, with the names;
5. each row is flagged where it leaves the development data: a value outside the development
   range, a missing value (imputed with the development median), a category or a scanner
   (batch) never seen (not harmonized: :data:`~pacs_workbench.radiomics.package.UNSEEN_BATCH_RULE`).

``predictions.parquet`` holds pseudonymous ids only (``case_id``, ``pseudo_patient_id``), the
risk, the risk group from the package's cut-offs and the flags.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.files import write_atomic, write_json_atomic
from pacs_workbench.deploy.package import ModelPackage, PackageError, load_package
from pacs_workbench.radiomics import build_model_table, extract_features, read_table
from pacs_workbench.radiomics.package import preprocessing_digest

PREDICTIONS_FILE = "predictions.parquet"
ROWS_FILE = "rows.parquet"
SUMMARY_FILE = "predict_summary.json"
CASE_MIX_COLUMNS = ("Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "Modality")
_NO_LABEL = "_no_label"


def check_preprocessing(package: ModelPackage, cases: pd.DataFrame, cases_dir: Path | None) -> int:
    """Refuse cases preprocessed with other parameters than the development cases; returns the number checked."""
    expected: dict[str, str] | None = (package.description.get("preprocessing") or {}).get("sha256_by_modality")
    if not expected:
        return 0
    record = cases_dir / "preprocess.parquet" if cases_dir is not None else None
    if record is None or not record.is_file():
        raise PackageError(
            "cannot check the cases' preprocessing parameters: no preprocess.parquet beside the case table "
            "(give the preprocessing stage's cases.parquet)"
        )
    done = pd.read_parquet(record, columns=["case_id", "Modality", "parameters"]).set_index("case_id")
    unknown = sorted(set(cases["case_id"].astype(str)) - set(done.index.astype(str)))
    if unknown:
        raise PackageError(f"{len(unknown)} case(s) not in preprocess.parquet: their preprocessing is unknown")
    mismatched: dict[str, int] = {}
    for case_id in cases["case_id"].astype(str):
        modality, text = str(done.at[case_id, "Modality"] or "unknown"), str(done.at[case_id, "parameters"])
        if expected.get(modality) != preprocessing_digest(json.loads(text)):
            mismatched[modality] = mismatched.get(modality, 0) + 1
    if mismatched:
        detail = ", ".join(f"{n} {m}" for m, n in sorted(mismatched.items()))
        raise PackageError(
            f"preprocessing parameter hash mismatch: {detail} case(s) were preprocessed with other parameters "
            "than the development cases; preprocess them with the package's preprocessing.json"
        )
    return len(cases)


def package_features(
    package: ModelPackage, cases: pd.DataFrame, cases_file: Path, out: Path, workers: int | None, progress: bool
) -> pd.DataFrame:
    """The package's radiomic features of every case, checked to come from the package's parameters."""
    params_file = package.radiomics_params_file
    assert params_file is not None
    # The file, not the frame: relative image paths resolve against the case table's folder.
    frame = extract_features(cases_file, params_file, out / "features.parquet", workers=workers, progress=progress)
    digest = package.description["radiomics_params"]["params_sha256"]
    if frame.attrs["summary"]["params_sha256"] != digest:
        raise PackageError("radiomics parameter hash mismatch between the package and the extracted features")
    # Paths back for the model table (extract_features carries every other column through).
    return frame.merge(cases[["case_id", "image", "mask"]], on="case_id", how="left")


def build_rows(
    package: ModelPackage, cases: pd.DataFrame, features: pd.DataFrame | None, cohort: pd.DataFrame | None,
    label: str | None,
) -> pd.DataFrame:
    """The rows to score, built as the development rows were (one per patient, or one per case)."""
    rows = features if features is not None else cases
    if package.description["rows"] == "patient":
        if cohort is None:
            raise PackageError(
                "this package scores one row per patient with clinical columns from the cohort: give --cohort"
            )
        if label is None:
            cohort = cohort.assign(**{_NO_LABEL: 0})
        rows = build_model_table(rows, cohort, label=label or _NO_LABEL).drop(columns=[_NO_LABEL], errors="ignore")
    elif cohort is not None and "pseudo_patient_id" in rows.columns:
        extra = [c for c in cohort.columns if c not in rows.columns and c != "pseudo_patient_id"]
        baseline = cohort.drop_duplicates("pseudo_patient_id")[["pseudo_patient_id", *extra]]
        rows = rows.merge(baseline, on="pseudo_patient_id", how="left")
    missing = [c for c in package.input_columns if c not in rows.columns]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise PackageError(f"missing features: {len(missing)} column(s) the model reads are not in the cases ({shown})")
    if label is not None and label not in rows.columns:
        raise PackageError(f"label column {label!r} is neither in the cases nor in the cohort")
    return rows.reset_index(drop=True)


def flag_rows(package: ModelPackage, rows: pd.DataFrame) -> pd.DataFrame:
    """Per row: ``flags`` (list of ``kind:column``), ``n_out_of_range``, ``unseen_batch``."""
    flags: list[list[str]] = [[] for _ in range(len(rows))]
    batch = package.description.get("batch")
    for spec in package.features:
        name, values = spec["name"], rows[spec["name"]]
        if name == batch:
            seen = set(package.description.get("batches_seen", []))
            for i in np.flatnonzero(~values.astype(str).isin(seen).to_numpy()):
                flags[i].append(f"unseen_batch:{name}")
        elif "categories" in spec:
            known = set(spec["categories"])
            for i in np.flatnonzero((values.notna() & ~values.astype(str).isin(known)).to_numpy()):
                flags[i].append(f"unseen_category:{name}")
        else:
            v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            for i in np.flatnonzero(~np.isfinite(v)):
                flags[i].append(f"missing_value:{name}")
            if "min" in spec:
                with np.errstate(invalid="ignore"):
                    outside = (v < spec["min"]) | (v > spec["max"])
                for i in np.flatnonzero(outside):
                    flags[i].append(f"out_of_range:{name}")
    return pd.DataFrame(
        {
            "flags": flags,
            "n_out_of_range": [sum(f.startswith("out_of_range:") for f in row) for row in flags],
            "unseen_batch": [any(f.startswith("unseen_batch:") for f in row) for row in flags],
        }
    )


def risk_groups(risk: np.ndarray, cutoffs: list[float]) -> list[str]:
    """``low`` / ``intermediate`` / ``high`` with the package's cut-offs (as the model card's strata)."""
    lo, hi = float(cutoffs[0]), float(cutoffs[1])
    return ["low" if r < lo else "intermediate" if r < hi else "high" for r in risk]


def score_rows(package: ModelPackage, rows: pd.DataFrame, label: str | None) -> pd.DataFrame:
    """Risks, risk groups and flags of the rows: the ``predictions.parquet`` table."""
    with warnings.catch_warnings():
        # Unseen batches are flagged per row; ComBat's own warning would say it once, without the rows.
        warnings.filterwarnings("ignore", message=".*not seen in fit left unharmonized")
        risk = package.pipeline.predict_proba(rows[package.input_columns])[:, 1]
    ids = [c for c in ("case_id", "pseudo_patient_id") if c in rows.columns]
    out = rows[ids].copy() if ids else pd.DataFrame({"case_id": rows.index.astype(str)})
    out["risk"] = risk
    if package.recalibrator is not None:
        out["risk_recalibrated"] = package.recalibrator.predict(risk)
    out["risk_group"] = risk_groups(risk, package.description["risk_cutoffs"])
    out = pd.concat([out, flag_rows(package, rows)], axis=1)
    for column in CASE_MIX_COLUMNS:
        if column in rows.columns:
            out[column] = rows[column].astype(str).where(rows[column].notna(), None)
    if label is not None:
        out["label"] = pd.to_numeric(rows[label], errors="coerce")
    return out


def predict_cases(
    package_dir: str | os.PathLike[str],
    cases: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    label: str | None = None,
    cohort: str | os.PathLike[str] | None = None,
    workers: int | None = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a new cohort with a model package; write ``predictions.parquet`` and a summary.

    Parameters
    ----------
    package_dir
        ``model/package`` of a modeling run.
    cases
        The preprocessing stage's ``cases.parquet`` (``case_id``, ``image``, ``mask``, provenance),
        with its ``preprocess.parquet`` beside it; for a package made from a table alone, a
        table holding the model's columns.
    out_dir
        Receives ``predictions.parquet``, ``predict_summary.json``, ``rows.parquet`` (the model's
        input as scored) and ``features.parquet`` (with its cache).
    label
        Outcome column (in the cohort or the cases) for an external validation.
    cohort
        The new site's ``cohort.parquet`` (clinical columns, and the outcome with ``label``).

    Returns
    -------
    dict
        Counts (cases, rows scored, flagged), the files written and warnings.

    Raises
    ------
    PackageError
        A package that does not match its manifest, a parameter-hash mismatch, missing features.
    """
    package = load_package(package_dir)
    cases_path = Path(cases)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = read_table(cases_path)
    features = None
    if package.radiomics_params_file is not None:
        if not {"case_id", "image", "mask"} <= set(table.columns):
            raise PackageError("the package extracts its own features: the cases need case_id, image and mask")
        check_preprocessing(package, table, cases_path.parent)
        features = package_features(package, table, cases_path, out, workers, progress)
    cohort_table = read_table(Path(cohort)) if cohort is not None else None
    rows = build_rows(package, table, features, cohort_table, label)
    predictions = score_rows(package, rows, label)
    write_atomic(out / PREDICTIONS_FILE, lambda temp: predictions.to_parquet(temp, index=False))
    # The model's input as scored (pseudonymous ids and features, no paths): the report's feature shift.
    scored = rows[[c for c in ("case_id", "pseudo_patient_id", *package.input_columns) if c in rows.columns]]
    write_atomic(out / ROWS_FILE, lambda temp: scored.to_parquet(temp, index=False))
    failed = int(features["error"].notna().sum()) if features is not None and "error" in features else 0
    warnings_out = []
    if predictions["unseen_batch"].any():
        warnings_out.append(
            f"{int(predictions['unseen_batch'].sum())} row(s) from a scanner the package never saw: not harmonized "
            "(flag unseen_batch)"
        )
    summary = {
        "cases": len(table),
        "features_failed": failed,
        "rows_scored": len(predictions),
        "rows": package.description["rows"],
        "flagged_out_of_range": int((predictions["n_out_of_range"] > 0).sum()),
        "unseen_batch": int(predictions["unseen_batch"].sum()),
        "label": label,
        "predictions": PREDICTIONS_FILE,
        "warnings": warnings_out,
    }
    write_json_atomic(out / SUMMARY_FILE, summary, indent=2)
    return summary | {"out": str(out)}
