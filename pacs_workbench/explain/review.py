"""The SHAP review of one modeling run: explain every fold model, rank, cache and describe.

:func:`run_explain` explains the modeling stage's fold models (:mod:`~pacs_workbench.explain.shap`),
ranks features and families (:mod:`~pacs_workbench.explain.importance`), reads the lesion images,
vendors and raw values of the cases (:mod:`~pacs_workbench.explain.cases`) and writes the tables;
a rerun on unchanged model outputs reads them back (the cache key is a fingerprint of the model
files). :class:`ShapReview` holds it all for notebook ``06_shap_review``, which also shows
the scanner check (:mod:`~pacs_workbench.explain.scanner`) and the planted-truth check
(:mod:`~pacs_workbench.explain.truth`). The prose functions turn ``metrics.json`` and the review
into the paragraphs the notebook shows.

Inputs
------
``model_dir``: the output folder of :func:`pacs_workbench.radiomics.run_modeling` (its
``models/`` folder, ``predictions.parquet`` and ``metrics.json``). ``features_file``
(optional): the features table (``case_id``, ``image``, ``mask``, the vendor column such as
`(0008,0070) Manufacturer`, the feature columns), used for the lesion images, the vendor of each
case and the raw feature values.

Outputs (in ``out_dir``, each written atomically)
--------------------------------------------------
``shap.parquet``
    One row per case and repeat: ``row_index``, ``case_id``, ``repeat``, ``outer_fold``,
    ``label``, ``expected_value``, ``raw_output`` (log-odds), ``prob``, then one column per
    model feature holding its SHAP value (0 where that fold's model did not have the feature).
``shap_features.parquet``
    The same keys with the model input value of every feature (NaN where absent).
``shap_importance.csv``
    ``feature``, ``source``, ``family``, ``feature_class``, ``image_type``, ``mean_abs_shap``,
    ``mean_abs_shap_sd`` (over folds), ``rank``, ``fold_rank_median``/``_min``/``_max``,
    ``fold_stability`` (share of folds where the feature is in the top ``top_k``),
    ``in_model_share`` (share of folds whose model had it) and ``unstable``.
``shap_family_importance.csv``
    ``family``, ``n_features``, ``mean_abs_shap`` (of the family's summed contribution),
    ``share``, ``rank``, ``fold_mean_abs_shap_sd``, ``fold_rank_min``, ``fold_rank_max``.
``explain.json``
    Method, input fingerprint (the cache key), per-fold checks (additivity error, agreement with
    ``predictions.parquet``, timing) and the feature descriptions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.files import json_ready, sha256_file, write_atomic, write_text_atomic
from pacs_workbench.core.fmt import format_number
from pacs_workbench.explain.cases import (
    CaseExplanation,
    case_summary,
    explain_case,
    load_cases,
    select_cases,
    top_contributions,
)
from pacs_workbench.explain.families import short_name
from pacs_workbench.explain.importance import family_importance, fold_importance, importance_table
from pacs_workbench.explain.shap import ExplainError, Explanations, explain_model, fold_jobs
from pacs_workbench.radiomics import metrics_table

FORMAT_VERSION = 1


@dataclass
class ShapReview:
    """Everything the SHAP review shows, for one model folder.

    Attributes
    ----------
    explanations : Explanations
    importance : DataFrame
        :func:`importance_table`.
    fold_importance : DataFrame
        :func:`fold_importance`.
    families : DataFrame
        :func:`family_importance`.
    cases : DataFrame
        ``case_id``, ``image``, ``mask``, ``vendor`` from the features table (may be empty).
    raw_values : DataFrame
        Numeric columns of the features table indexed by ``case_id`` (may be empty).
    harmonized_by : str or None
        The batch column the model was harmonized by (from ``metrics.json``), ``None`` if not.
    notes : list of str
        What could not be shown and why.
    paths : dict
        Files written.
    """

    explanations: Explanations
    importance: pd.DataFrame
    fold_importance: pd.DataFrame
    families: pd.DataFrame
    cases: pd.DataFrame
    raw_values: pd.DataFrame
    harmonized_by: str | None = None
    notes: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    from_cache: bool = False
    top_k: int = 10

    @property
    def available(self) -> bool:
        """True when there were fold models to explain."""
        return not self.explanations.shap.empty

    def summary(self) -> pd.DataFrame:
        """:func:`case_summary` with each case's vendor."""
        cases = case_summary(self.explanations)
        vendor = self.cases.set_index("case_id")["vendor"] if len(self.cases) else pd.Series(dtype=str)
        cases["vendor"] = cases["case_id"].map(vendor).fillna("")
        return cases

    def case(self, case_id: str) -> CaseExplanation:
        """:func:`explain_case` with the raw values of the features table."""
        return explain_case(self.explanations, case_id, self.raw_values if len(self.raw_values) else None)

    def lesion(self, case_id: str) -> tuple[str, str]:
        """``(image, mask)`` paths of a case (``""`` when unknown or missing on disk)."""
        rows = self.cases[self.cases["case_id"] == case_id]
        if rows.empty:
            return "", ""
        image, mask = str(rows["image"].iloc[0]), str(rows["mask"].iloc[0])
        if not (image and mask and Path(image).is_file() and Path(mask).is_file()):
            return "", ""
        return image, mask

    def case_studies(self, n: int = 3, threshold: float | None = None) -> pd.DataFrame:
        """:func:`select_cases` with the top contributions and whether the lesion image is available."""
        chosen = select_cases(self.explanations, n, threshold)
        chosen["top_contributions"] = [top_contributions(self.case(c)) for c in chosen["case_id"]]
        chosen["image_available"] = [bool(self.lesion(c)[0]) for c in chosen["case_id"]]
        return chosen

    def typical_cases(self, n: int = 1) -> list[str]:
        """The ``n`` cases whose risk is closest to the median (the static stand-in for the case picker)."""
        cases = case_summary(self.explanations)
        if cases.empty:
            return []
        gap = (cases["risk"] - cases["risk"].median()).abs().to_numpy()
        return [str(c) for c in cases["case_id"].to_numpy()[np.argsort(gap, kind="stable")[:n]]]


def fingerprint(model_dir: str | os.PathLike[str], method: str) -> str:
    """Content hash of the model outputs the explanations depend on (the cache key)."""
    root = Path(model_dir)
    total = hashlib.sha256(f"explain-{FORMAT_VERSION}-{method}".encode())
    files = [root / "models" / "folds.parquet", root / "predictions.parquet"]
    for job in fold_jobs(root, method):
        files += [Path(job.booster), Path(job.bundle), Path(job.test)]
    for file in files:
        total.update(file.name.encode())
        total.update(sha256_file(file).encode() if file.is_file() else b"missing")
    return total.hexdigest()


def _load_cached(out: Path, key: str) -> Explanations | None:
    manifest = out / "explain.json"
    needed = [manifest, out / "shap.parquet", out / "shap_features.parquet"]
    if not all(p.is_file() for p in needed):
        return None
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != key:
        return None
    shap_frame = pd.read_parquet(out / "shap.parquet")
    shap_frame["label"] = shap_frame["label"].astype("Int64")
    features = pd.DataFrame(meta["features"])
    folds = pd.DataFrame(meta["folds"])
    return Explanations(shap_frame, pd.read_parquet(out / "shap_features.parquet"), features, folds, meta["method"])


def _harmonized_by(model_dir: Path) -> str | None:
    """The batch column the modeling stage harmonized by (``metrics.json`` settings), ``None`` if none."""
    try:
        metrics = _read_metrics(model_dir)
    except ValueError:  # an unreadable metrics file only costs the harmonization label
        return None
    batch = (metrics or {}).get("settings", {}).get("batch")
    return str(batch) if batch else None


def run_explain(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    features_file: str | os.PathLike[str] | None = None,
    images_file: str | os.PathLike[str] | None = None,
    vendor_col: str = "Manufacturer",
    method: str = "lightgbm",
    top_k: int = 10,
    min_stability: float = 0.5,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
    missing_ok: bool = False,
    use_cache: bool = True,
) -> ShapReview:
    """Explain every fold model of a modeling run and write the SHAP tables.

    Parameters
    ----------
    model_dir
        Output folder of :func:`pacs_workbench.radiomics.run_modeling`.
    out_dir
        Where ``shap.parquet``, ``shap_features.parquet``, ``shap_importance.csv``,
        ``shap_family_importance.csv`` and ``explain.json`` go; ``None``: nothing written.
    features_file, images_file
        Features table for images, masks, vendors and raw values, and an optional table of image
        and mask paths by ``case_id`` (see :func:`load_cases`).
    vendor_col
        Vendor column of the features table.
    method, workers, scheduler, progress
        See :func:`explain_model`.
    top_k, min_stability
        See :func:`importance_table`.
    missing_ok
        When ``model_dir`` is empty or has no fold models, return an empty review with a note
        instead of raising (the notebook's behaviour before the modeling stage has run).
    use_cache
        Reuse ``out_dir``'s tables when their fingerprint matches the model outputs.

    Returns
    -------
    ShapReview
    """
    cases, raw, notes = load_cases(features_file, vendor_col, images_file)
    reason = _no_fold_models(model_dir)
    if reason:
        if not missing_ok:
            raise ExplainError(reason)
        return _empty_review(method, cases, raw, [reason, *notes])
    root = Path(model_dir)
    key = fingerprint(root, method)
    out = Path(out_dir) if out_dir else None
    expl = _load_cached(out, key) if out is not None and use_cache else None
    from_cache = expl is not None
    if expl is None:
        expl = explain_model(root, method=method, workers=workers, scheduler=scheduler, progress=progress)
    review = ShapReview(
        expl,
        importance_table(expl, top_k=top_k, min_stability=min_stability),
        fold_importance(expl),
        family_importance(expl),
        cases,
        raw,
        _harmonized_by(root),
        notes,
        from_cache=from_cache,
        top_k=top_k,
    )
    explained = set(expl.shap["case_id"].astype(str))
    if len(cases):
        unknown = explained - set(cases["case_id"])
        if unknown:
            review.notes.append(f"{len(unknown)} explained case(s) are not in the features table (no image or vendor).")
    if out is not None:
        review.paths = _write_review(review, out, key, min_stability)
    return review


def _no_fold_models(model_dir: str | os.PathLike[str] | None) -> str:
    """Why a modeling run's folder has no fold models to explain ("" when it has)."""
    if not model_dir:
        return "No model folder given."
    if not (Path(model_dir) / "models" / "folds.parquet").is_file():
        return f"No fold models in {Path(model_dir).name}/models: the modeling stage has not written any."
    return ""


def _empty_review(method: str, cases: pd.DataFrame, raw: pd.DataFrame, notes: list[str]) -> ShapReview:
    """The review of a run without fold models: empty tables, the cases table and why."""
    empty = Explanations.empty(method)
    return ShapReview(
        empty,
        importance_table(empty),
        fold_importance(empty),
        family_importance(empty),
        cases,
        raw,
        None,
        notes,
    )


def _write_review(review: ShapReview, out: Path, key: str, min_stability: float) -> dict[str, str]:
    """Write the review's tables to ``out`` (the SHAP values and manifest only when not read from there)."""
    expl = review.explanations
    paths = {"importance": out / "shap_importance.csv", "families": out / "shap_family_importance.csv"}
    write_atomic(paths["importance"], lambda temp: review.importance.to_csv(temp, index=False))
    write_atomic(paths["families"], lambda temp: review.families.to_csv(temp, index=False))
    paths.update({"shap": out / "shap.parquet", "features": out / "shap_features.parquet"})
    paths["manifest"] = out / "explain.json"
    if review.from_cache:
        del paths["features"]
    else:
        write_atomic(paths["shap"], lambda temp: expl.shap.to_parquet(temp, index=False))
        write_atomic(paths["features"], lambda temp: expl.values.to_parquet(temp, index=False))
        manifest = json.dumps(json_ready(_manifest(review, key, min_stability)), indent=2) + "\n"
        write_text_atomic(paths["manifest"], manifest)
    return {name: str(path) for name, path in paths.items()}


def _manifest(review: ShapReview, key: str, min_stability: float) -> dict[str, Any]:
    """``explain.json``: how the SHAP values were made, from which inputs, and their per-fold checks."""
    expl = review.explanations
    return {
        "format": FORMAT_VERSION,
        "method": expl.method,
        "fingerprint": key,
        "n_cases": int(expl.shap["case_id"].nunique()),
        "n_rows": len(expl.shap),
        "n_folds": len(expl.folds),
        "harmonized_by": review.harmonized_by,
        "top_k": review.top_k,
        "min_stability": min_stability,
        "additivity_max_error": float(expl.folds["additivity_max_error"].max()),
        "prediction_max_diff": float(expl.folds["prediction_max_diff"].max()),
        "folds": expl.folds.to_dict(orient="records"),
        "features": expl.features.to_dict(orient="records"),
    }


# --- prose: the model, its stability and the limits of the explanations -------------------------


def _read_metrics(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    if not model_dir:
        return None
    file = Path(model_dir) / "metrics.json"
    if not file.is_file():
        return None
    data: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return data


def describe_model(model_dir: str | os.PathLike[str], review: ShapReview | None = None) -> str:
    """One paragraph (Markdown) on what the model is and how well it does, from ``metrics.json``."""
    metrics = _read_metrics(model_dir)
    if metrics is None:
        return (
            "No model metrics found (`metrics.json` missing): the modeling stage has not run on this data, "
            "so there is nothing to explain yet."
        )
    s = metrics.get("settings", {})
    clinical = [str(c) for c in s.get("clinical", []) or []]
    n_feat = metrics.get("n_features_candidate", "?")
    lo, hi = (metrics.get("auc_ci") or [None, None])[:2]
    parts = [
        f"The model is a LightGBM classifier (gradient-boosted shallow trees) predicting `{s.get('label', 'label')}` "
        f"from {n_feat} candidate radiomic features"
        + (f" and the clinical covariates {', '.join(f'`{c}`' for c in clinical)}" if clinical else "")
        + (
            f", harmonized with ComBat by `{s['batch']}` inside each training fold"
            if s.get("batch")
            else ", without harmonization"
        )
        + f". It was validated by {s.get('repeats', '?')} repeat(s) of {s.get('outer_folds', '?')}-fold "
        f"patient-grouped nested cross-validation on {metrics.get('n', '?')} cases ({metrics.get('n_events', '?')} "
        f"events) from {metrics.get('n_groups', '?')} patients.",
        f"Out-of-fold ROC AUC {format_number(metrics.get('auc'))} "
        f"(95% CI {format_number(lo)}-{format_number(hi)}), PR AUC {format_number(metrics.get('pr_auc'))}, "
        f"Brier score {format_number(metrics.get('brier'))}, "
        f"calibration slope {format_number(metrics.get('calibration_slope'), 2)}.",
        str(metrics.get("added_value", "")),
    ]
    if review is not None and review.available:
        folds = review.explanations.folds
        parts.append(
            f"Every explanation below comes from the model of the outer fold that held the case out "
            f"({len(folds)} fold models; TreeSHAP via "
            f"{'LightGBM pred_contrib' if review.explanations.method == 'lightgbm' else 'shap.TreeExplainer'}, "
            f"log-odds scale; largest additivity error {folds['additivity_max_error'].max():.1e})."
        )
    return " ".join(p for p in parts if p)


def headline_metrics(model_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The headline metrics of each model in ``metrics.json`` (LightGBM and its baselines)."""
    metrics = _read_metrics(model_dir)
    if metrics is None or not metrics.get("models"):
        return pd.DataFrame()
    labels = {
        "lightgbm": "LightGBM (explained here)",
        "lightgbm_recalibrated": "LightGBM, recalibrated",
        "radiomics_lr": "L1 logistic regression, radiomics",
        "clinical_lr": "logistic regression, clinical only",
        "cnn": "3-D CNN on lesion crops (saliency in section 8)",
        "hybrid": "LightGBM on features + CNN embeddings",
    }
    return metrics_table(metrics).rename(index=labels)


def stability_summary(review: ShapReview, top: int = 12) -> str:
    """A few sentences on how stable the explanations are over the fold models (Markdown)."""
    if not review.available:
        return "No fold models: nothing to assess."
    imp = review.importance
    folds = review.explanations.folds
    head = imp.head(top)
    unstable = head[head["unstable"]]
    always = head[head["fold_stability"] == 1.0]
    lines = [
        f"{len(folds)} fold models ({folds['repeat'].nunique()} repeat(s) of {folds['outer_fold'].nunique()} outer "
        f"folds), each explaining only the cases it held out ({int(folds['n_test'].sum())} case explanations).",
        f"Of the top {len(head)} features, {len(always)} rank in the top {review.top_k} of every fold model"
        + (
            f"; {len(unstable)} rank high in some folds but not in most (unstable): "
            + ", ".join(f"`{short_name(str(f))}`" for f in unstable["feature"])
            + "."
            if len(unstable)
            else "; none is unstable."
        ),
        f"Features used by every fold model: {int((imp['in_model_share'] == 1).sum())} of {len(imp)} (the in-fold "
        "filters can drop a feature or keep a correlated look-alike instead).",
        f"TreeSHAP additivity (expected value plus contributions against the booster's raw output): largest "
        f"error {folds['additivity_max_error'].max():.1e}.",
    ]
    return " ".join(lines)


def limitations(review: ShapReview, model_dir: str | os.PathLike[str] | None = None) -> str:
    """Markdown bullets: what these explanations can and cannot say, with this run's numbers."""
    bullets = [
        "SHAP values explain the model, not the disease: a feature with a large contribution is one the "
        "model relies on, which need not be causal or even specific to the lesion.",
        "Contributions are on the log-odds scale and are conditional on the other features; correlated "
        "features share credit, and the in-fold correlation filter keeps one of each correlated set, so "
        "credit can move between look-alike features from fold to fold.",
        "TreeSHAP here uses the trees' own coverage (tree-path-dependent), not an interventional background.",
        "Internal cross-validation only: these explanations describe models fitted on this cohort's scanners "
        "and protocols.",
    ]
    if review.available:
        unstable = int(review.importance["unstable"].sum())
        n_folds = len(review.explanations.folds)
        bullets.append(
            f"{unstable} feature(s) rank high in some of the {n_folds} fold models but not in most (flagged "
            "unstable): do not read them as findings."
        )
    metrics = _read_metrics(model_dir) if model_dir else None
    for note in (metrics or {}).get("warnings", []):
        bullets.append(f"Modeling warning: {note}")
    bullets += [f"Not shown: {n}" for n in review.notes]
    return "\n".join(f"- {b}" for b in bullets)
