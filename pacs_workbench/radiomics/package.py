"""The model package: the final model fitted on all development data, frozen with what it needs.

``pacs-workbench model`` validates the model with nested cross-validation and then fits it once
more on every development case, with the same pipeline and tuning the folds used (imputation,
filters, ComBat, selection, clinical encoding, LightGBM; the inner grid search picks the
hyperparameters on all cases). :func:`write_package` freezes the result in ``model/package/``:

``pipeline.joblib``
    ``pipeline`` (the fitted preprocessing + LightGBM pipeline), ``recalibrator`` (or ``None``),
    ``best_params``.
``booster.txt``
    The LightGBM booster as text (``booster.save_model``).
``features.json``
    The feature specification: every input column in the order the pipeline reads it, with its
    role (radiomic, clinical, batch), dtype and the development distribution (min, max, mean,
    sd, median; categories for categorical columns).
``radiomics_params.yaml``, ``preprocessing.json``
    The pyradiomics parameter file and the preprocessing parameters (per modality, as the
    preprocessing stage recorded them for every case), with their content hashes in
    ``package.json``. A package made from a table alone records their absence.
``cohort_attrition.csv``
    The cohort criteria as applied (the cohort stage's attrition table: steps and counts).
``segmentation/unet.pt``, ``segmentation/unet.json``
    The lesion U-Net of the segmentation stage (its state dict, a few hundred kB) and its
    settings (network, patch, smallest lesion, checkpoint SHA-256), when the run had one: what
    ``pacs-workbench listen`` segments incoming studies with.
``model_card.md``, ``versions.json``
    The model card of the validated model and the versions of the packages it ran with.
``package.json``
    What the model predicts and how: label, rows (``patient``: one row per patient built as the
    model table is built; ``case``: one row per case), risk cut-offs, the harmonization rule,
    the development case mix, the parts the run did not use (segmentation model, CNN).
``manifest.json``
    SHA-256 of every other file; ``predict`` refuses a package whose files do not match it.

ComBat on scanners the package never saw follows one rule (:data:`UNSEEN_BATCH_RULE`): the
case's features are used unharmonized and the case is flagged; the harmonization is never
refitted on new data.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from pacs_workbench.core.files import json_ready, sha256_file, write_bytes_atomic, write_json_atomic, write_text_atomic
from pacs_workbench.radiomics.card import render_model_card
from pacs_workbench.radiomics.params import load_radiomics_params, params_digest
from pacs_workbench.radiomics.table import GROWTH_COLUMN, ModelingError
from pacs_workbench.radiomics.transformers import LogitRecalibrator

PACKAGE_FORMAT = 1
MANIFEST_FILE = "manifest.json"
RADIOMICS_PARAMS_FILE = "radiomics_params.yaml"
PREPROCESSING_FILE = "preprocessing.json"
SEGMENTATION_FILE = "segmentation/unet.pt"
SEGMENTATION_SETTINGS_FILE = "segmentation/unet.json"
UNSEEN_BATCH_RULE = (
    "a case from a scanner or vendor (batch) not seen in development is not harmonized: its "
    "features enter the model as measured and the case is flagged unseen_batch; ComBat is never "
    "refitted on new data"
)
VERSIONED = ("pacs-workbench", "lightgbm", "scikit-learn", "numpy", "pandas", "pyradiomics", "SimpleITK", "joblib")


@dataclass(frozen=True)
class PackageSources:
    """Where the development data came from: the files a package freezes beside the model.

    Parameters
    ----------
    radiomics_params_file
        The pyradiomics parameter file the features were extracted with.
    preprocessed_dir
        The preprocessing stage's folder (its ``preprocess.parquet`` records each case's parameters).
    cohort_dir
        The cohort stage's folder (``attrition.csv``: the criteria as applied).
    segmentation_dir
        The segmentation stage's folder (``segment.json`` names the U-Net checkpoint in ``model/``).
    """

    radiomics_params_file: str | os.PathLike[str] | None = None
    preprocessed_dir: str | os.PathLike[str] | None = None
    cohort_dir: str | os.PathLike[str] | None = None
    segmentation_dir: str | os.PathLike[str] | None = None


def fit_final_model(
    pipe: Pipeline,
    grid: dict[str, list[Any]],
    X: pd.DataFrame,
    y: NDArray[np.int64],
    groups: NDArray[Any],
    *,
    inner_folds: int,
    random_state: int,
    recalibrate: bool,
) -> tuple[Pipeline, dict[str, Any], LogitRecalibrator | None]:
    """Tune and fit ``pipe`` on every development case as each outer fold was fitted on its part."""
    inner = StratifiedGroupKFold(n_splits=inner_folds, shuffle=True, random_state=random_state)
    best: dict[str, Any] = {}
    if grid:
        search = GridSearchCV(pipe, grid, scoring="roc_auc", cv=inner, refit=True, n_jobs=1, error_score="raise")
        search.fit(X, y, groups=groups)
        model: Pipeline = search.best_estimator_
        best = {k.split("__", 1)[-1]: v for k, v in search.best_params_.items()}
    else:
        model = clone(pipe).fit(X, y)
    recalibrator = None
    if recalibrate:
        oof = cross_val_predict(clone(model), X, y, groups=groups, cv=inner, method="predict_proba")[:, 1]
        recalibrator = LogitRecalibrator().fit(oof, y)
    return model, best, recalibrator


def feature_spec(X: pd.DataFrame, features: list[str], clinical: list[str], batch: str | None) -> list[dict[str, Any]]:
    """One record per input column (in pipeline order): role, dtype and development distribution."""
    roles = {**{c: "radiomic" for c in features}, **{c: "clinical" for c in clinical}}
    if batch:
        roles[batch] = "batch"
    spec = []
    for col in X.columns:
        values = X[col]
        record: dict[str, Any] = {"name": str(col), "role": roles.get(col, "radiomic"), "dtype": str(values.dtype)}
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if numeric and record["role"] != "batch":
            v = values.to_numpy(dtype=float)
            finite = v[np.isfinite(v)]
            if finite.size:
                record.update(
                    min=float(finite.min()), max=float(finite.max()), mean=float(finite.mean()),
                    sd=float(finite.std(ddof=1)) if finite.size > 1 else 0.0, median=float(np.median(finite)),
                )
            record["missing"] = int((~np.isfinite(v)).sum())
        else:
            record["categories"] = {str(k): int(n) for k, n in values.astype(str).value_counts().items()}
        spec.append(record)
    return spec


def _preprocessing_parameters(folder: Path) -> dict[str, Any]:
    """The preprocessing parameters per modality of the cases the stage finished (``preprocess.parquet``)."""
    table = pd.read_parquet(folder / "preprocess.parquet", columns=["status", "Modality", "parameters"])
    done = table[table["status"] == "ok"]
    by_modality: dict[str, Any] = {}
    for modality, text in zip(done["Modality"].fillna("unknown"), done["parameters"], strict=True):
        value = json.loads(text)
        if by_modality.setdefault(str(modality), value) != value:
            raise ModelingError(f"development {modality} cases were preprocessed with different parameters")
    return by_modality


def preprocessing_digest(parameters: dict[str, Any]) -> str:
    """SHA-256 of preprocessing parameters (canonical JSON), as :func:`params_digest` hashes radiomics ones."""
    return params_digest(parameters)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _segmentation(folder: Path, segmentation_dir: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """Copy the segmentation stage's U-Net checkpoint and settings into ``folder/segmentation``.

    ``None`` when the stage left no trained U-Net (no ``segment.json``, or a model brought along).
    The checkpoint is the file in ``model/`` whose SHA-256 ``segment.json`` records.
    """
    for stale in (SEGMENTATION_FILE, SEGMENTATION_SETTINGS_FILE):  # from an earlier package in this folder
        (folder / stale).unlink(missing_ok=True)
    if segmentation_dir is None or not (Path(segmentation_dir) / "segment.json").is_file():
        return None
    record = Path(segmentation_dir) / "segment.json"
    summary = json.loads(record.read_text(encoding="utf-8"))
    digest = summary.get("checkpoint_sha256")
    if summary.get("model") != "unet" or not digest:
        return None
    found = next((p for p in sorted((record.parent / "model").glob("unet-*.pt")) if sha256_file(p) == digest), None)
    if found is None:
        raise ModelingError(f"segmentation checkpoint {digest[:12]} named by segment.json is not in its model folder")
    (folder / SEGMENTATION_FILE).parent.mkdir(exist_ok=True)
    write_bytes_atomic(folder / SEGMENTATION_FILE, found.read_bytes())
    settings = {
        "config": summary.get("config") or {},
        "min_lesion_mm3": summary.get("min_lesion_mm3"),
        "checkpoint_sha256": digest,
    }
    write_json_atomic(folder / SEGMENTATION_SETTINGS_FILE, settings, indent=2, sort_keys=True)
    return {"file": SEGMENTATION_FILE, "settings": SEGMENTATION_SETTINGS_FILE, "checkpoint_sha256": digest}


def _sources(folder: Path, sources: PackageSources) -> dict[str, Any]:
    """Copy the parameter files and criteria into the package; what was absent is recorded as such."""
    info: dict[str, Any] = {"radiomics_params": None, "preprocessing": None, "cohort_criteria": None}
    info["segmentation"] = _segmentation(folder, sources.segmentation_dir)
    if sources.radiomics_params_file is not None:
        path = Path(sources.radiomics_params_file)
        write_bytes_atomic(folder / RADIOMICS_PARAMS_FILE, path.read_bytes())
        digest = params_digest(load_radiomics_params(folder / RADIOMICS_PARAMS_FILE))
        info["radiomics_params"] = {"file": RADIOMICS_PARAMS_FILE, "source_name": path.name, "params_sha256": digest}
    if sources.preprocessed_dir is not None and (Path(sources.preprocessed_dir) / "preprocess.parquet").is_file():
        parameters = _preprocessing_parameters(Path(sources.preprocessed_dir))
        write_json_atomic(folder / PREPROCESSING_FILE, parameters, indent=2, sort_keys=True)
        info["preprocessing"] = {
            "file": PREPROCESSING_FILE,
            "sha256_by_modality": {m: preprocessing_digest(p) for m, p in parameters.items()},
        }
    attrition = Path(sources.cohort_dir) / "attrition.csv" if sources.cohort_dir is not None else None
    if attrition is not None and attrition.is_file():
        write_bytes_atomic(folder / "cohort_attrition.csv", attrition.read_bytes())
        info["cohort_criteria"] = {"file": "cohort_attrition.csv"}
    return info


def write_package(
    folder: Path,
    model: tuple[Pipeline, dict[str, Any], LogitRecalibrator | None],
    X: pd.DataFrame,
    roles: dict[str, Any],
    metrics: dict[str, Any],
    sources: PackageSources | None = None,
) -> Path:
    """Write the package folder (see the module docstring) and its manifest, last.

    Parameters
    ----------
    folder
        ``model/package`` (created).
    model
        ``(pipeline, best_params, recalibrator)`` from :func:`fit_final_model`.
    X
        The development input columns, in pipeline order.
    roles
        ``features``, ``clinical``, ``batch``, ``label``, ``group``, ``id_col`` of the run.
    metrics
        The run's ``metrics.json`` content (cross-validated performance, risk cut-offs, counts).
    sources
        The parameter files and cohort folder to freeze (:class:`PackageSources`).
    """
    pipeline, best, recalibrator = model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # a package being rewritten is never valid
    buffer = io.BytesIO()
    joblib.dump({"pipeline": pipeline, "recalibrator": recalibrator, "best_params": best}, buffer)
    write_bytes_atomic(folder / "pipeline.joblib", buffer.getvalue())
    write_text_atomic(folder / "booster.txt", pipeline.named_steps["clf"].booster_.model_to_string())
    features, clinical, batch = list(roles["features"]), list(roles["clinical"]), roles.get("batch")
    write_json_atomic(folder / "features.json", json_ready(feature_spec(X, features, clinical, batch)), indent=1)
    write_text_atomic(folder / "model_card.md", render_model_card(metrics))
    write_json_atomic(folder / "versions.json", _versions(), indent=2)
    main = metrics["models"]["lightgbm"]
    frozen = _sources(folder, sources or PackageSources())
    not_used = {"cnn": "validated beside LightGBM in the same folds (metrics.json), not packaged"
                if metrics.get("deep") else "not part of this run"}
    if frozen["segmentation"] is None:
        not_used["segmentation_model"] = "masks came with the data"
    description = {
        "format": PACKAGE_FORMAT,
        "model": "lightgbm",
        "label": roles["label"],
        "group": roles["group"],
        "id_col": roles.get("id_col"),
        "rows": "patient" if GROWTH_COLUMN in features else "case",
        "input_columns": list(X.columns),
        "batch": batch,
        "batches_seen": sorted(X[batch].astype(str).unique().tolist()) if batch else [],
        "unseen_batch_rule": UNSEEN_BATCH_RULE if batch else None,
        "risk_cutoffs": main["risk_cutoffs"],
        "best_params": best,
        "recalibrated": recalibrator is not None,
        "development": {k: metrics.get(k) for k in ("n", "n_events", "n_groups", "auc", "auc_ci", "brier")}
        | {"calibration_slope": main["calibration_slope"], "calibration_intercept": main["calibration_intercept"]},
        "not_used": not_used,
        **frozen,
    }
    write_json_atomic(folder / "package.json", json_ready(description), indent=2)
    write_manifest(folder)
    return folder


def write_manifest(folder: Path) -> dict[str, str]:
    """``manifest.json``: SHA-256 of every file of the package but itself."""
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith(".")
    }
    write_json_atomic(folder / MANIFEST_FILE, {"algorithm": "sha256", "files": files}, indent=2)
    return files
