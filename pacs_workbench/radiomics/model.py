"""Modeling stage: validated risk models from a radiomic feature table.

``run_modeling`` (and ``pacs-workbench model TABLE --label COL --group COL [--time COL] --out DIR``)
fits a LightGBM classifier for a binary outcome, or for a time-to-event outcome at a fixed
horizon, and estimates how well it would do on new patients with repeated, patient-grouped,
nested cross-validation:

- outer folds (``StratifiedGroupKFold``, reshuffled per repeat) give the estimate: every case is
  predicted once per repeat by models that never saw its patient (checked in code:
  :class:`GroupLeakError`);
- inner folds (the same splitter on the outer training part) pick the hyperparameters from a
  small grid (:data:`LIGHTGBM_GRID`, :data:`LASSO_GRID`);
- every data-dependent step is part of the fitted pipeline and so is learned on the training
  part only: median imputation, the near-constant and correlation filters, optional univariate
  selection, optional ComBat harmonization by scanner or vendor (:mod:`pacs_workbench.radiomics.combat`),
  the clinical encoding, the scaler, and optional logistic recalibration (fitted on inner
  out-of-fold predictions).

The in-fold steps are the estimators of :mod:`pacs_workbench.radiomics.transformers`; the
table is read and its columns chosen by :mod:`pacs_workbench.radiomics.table`; the files below
are written by :mod:`pacs_workbench.radiomics.outputs`, the card by :mod:`pacs_workbench.radiomics.card`.

Two baselines are fitted in the same folds: a clinical-only logistic regression (the
``clinical`` columns, e.g. age and smoking) and an L1 logistic regression on the radiomic
features. ``metrics.json`` and the model card say whether the LightGBM model adds anything to
them (paired patient-bootstrap AUC differences, :mod:`pacs_workbench.radiomics.metrics`).

Inputs
------
TABLE: Parquet or CSV (gzip allowed), one row per case. ``label`` holds 0/1 (the event indicator
when ``time`` is given), ``group`` the patient (pseudonymized, e.g. from `(0010,0020) Patient ID`);
optional ``id`` (default ``case_id`` when present), ``batch`` (e.g. `(0008,0070) Manufacturer`)
and ``clinical`` columns. Feature columns: every numeric column except those, the ones named
in ``exclude``, columns named for DICOM attributes (provenance such as `(0018,0050) Slice
Thickness` is not a feature) and pyradiomics ``diagnostics_*`` columns.

With ``time`` and ``horizon``: label = event at or before the horizon; cases without event
followed beyond (or up to) the horizon are 0; cases censored before it are excluded and counted
(``n_excluded_censored``).

Outputs (in DIR, each file written atomically)
----------------------------------------------
``metrics.json``
    ``auc``, ``auc_ci``, ``pr_auc``, ``brier``, calibration, ``n``, ``n_events`` for the LightGBM
    model at the top level; ``models`` with one entry per model (``lightgbm``, ``radiomics_lr``,
    ``clinical_lr``, ``lightgbm_recalibrated``) holding the same metrics plus calibration curve,
    decision curve and risk strata (with ``deep``: ``cnn`` and ``hybrid`` too); ``comparisons``
    (paired AUC differences with bootstrap CIs and DeLong's test), ``settings``, ``warnings``, ``folds``;
    with ``deep``, ``deep`` (the CNN folds: trained or cached, seconds, crops padded).
``predictions.parquet``
    One row per case and repeat: ``row_index`` (0-based row of TABLE as read), ``case_id``,
    ``group``, ``label``, ``repeat``, ``outer_fold``, ``prob_<model>`` per model.
``model_card.md``
    Intended use, data, validation, performance, paired comparisons, limits. Counts only, never identifiers.
``models/`` (for the explain stage: SHAP per outer fold on held-out cases only)
    ``r{repeat}_f{fold}.txt``: the fitted LightGBM booster (``booster.save_model``), whose
    feature names are the preprocessed columns.
    ``r{repeat}_f{fold}.joblib``: a dict with ``pipeline`` (the fitted preprocessing + LightGBM
    pipeline), ``preprocessor`` (its first step: imputation, filters, ComBat, clinical encoding),
    ``feature_columns`` (booster input columns after in-fold filtering), ``feature_sources``
    (the TABLE column each came from), ``input_columns`` (TABLE columns the pipeline reads),
    ``train_rows`` / ``test_rows`` (``row_index`` values), ``best_params`` and ``recalibrator``.
    ``r{repeat}_f{fold}_test.parquet``: the exact booster input for the test fold (harmonized
    when ComBat is on): ``row_index``, ``case_id`` and ``feature_columns``.
    ``folds.parquet``: one row per (repeat, fold) with the file names and sizes.
    ``cnn/`` (with ``deep``): every fold's CNN, the crops and the test rows' embeddings
    (:func:`pacs_workbench.radiomics.outputs.write_cnn_models`), for the saliency maps.
``cache/folds/`` (``cache_dir``)
    Every fold's result and the package's final model, named by the content hash of the table and
    the settings (:mod:`pacs_workbench.radiomics.fold_cache`): a rerun with nothing changed fits nothing,
    and its summary's ``cache`` record says how many folds were fitted and how many read back.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pacs_workbench.core.executor import map_items
from pacs_workbench.radiomics import fold_cache
from pacs_workbench.radiomics import metrics as perf
from pacs_workbench.radiomics.card import added_value_statement
from pacs_workbench.radiomics.cnn import CropSet, make_crops
from pacs_workbench.radiomics.folds import (  # noqa: F401 - the stage's names, re-exported
    COMPARISONS,
    EPV_MINIMUM,
    LASSO_GRID,
    LIGHTGBM_GRID,
    LIGHTGBM_PARAMS,
    MODEL_NAMES,
    EventsPerVariableWarning,
    FoldTask,
    GroupLeakError,
    ModelingConfig,
    build_models,
    check_groups_disjoint,
    fit_fold,
    fit_one,
    fold_plan,
    outer_splits,
)
from pacs_workbench.radiomics.outputs import fold_records, write_cnn_models, write_fold_models, write_results
from pacs_workbench.radiomics.package import PackageSources, fit_final_model, write_package
from pacs_workbench.radiomics.table import ModelingError, label_at_horizon, read_table, select_feature_columns

if TYPE_CHECKING:
    from pacs_workbench.radiomics.deep import DeepConfig, DeepRun

FloatArray = NDArray[np.float64]
T = TypeVar("T")

# --- the stage -----------------------------------------------------------------------------------


def _prepare(
    table: pd.DataFrame, config: ModelingConfig
) -> tuple[pd.DataFrame, dict[str, Any], list[str], list[str]]:
    """Validate the table, derive the label, drop unusable rows; returns cases and counts."""
    needed = [config.label, config.group, config.time, config.batch, config.id_col, *config.clinical]
    missing = [c for c in needed if c is not None and c not in table.columns]
    if missing:
        raise ModelingError(f"column(s) not in the table: {', '.join(missing)}")
    counts: dict[str, Any] = {"n_rows": len(table)}
    data = table.reset_index(drop=True).copy()
    data["_row_index"] = np.arange(len(data))
    raw_label = pd.to_numeric(data[config.label], errors="coerce")
    bad = raw_label.notna() & ~raw_label.isin([0, 1])
    if bad.any():
        values = sorted({str(v) for v in raw_label[bad].unique()})[:5]
        raise ModelingError(f"label column {config.label!r} must hold 0/1; found {', '.join(values)}")
    if config.time is not None:
        if config.horizon is None:
            raise ModelingError("a time-to-event outcome (--time) needs --horizon")
        label, censored = label_at_horizon(raw_label, data[config.time], float(config.horizon))
        counts["n_excluded_censored"] = censored
        counts["horizon"] = float(config.horizon)
    else:
        label = raw_label.astype(float)
    counts["n_excluded_missing_label"] = int(label.isna().sum()) - counts.get("n_excluded_censored", 0)
    data["_label"] = label
    no_group = data[config.group].isna()
    counts["n_excluded_missing_group"] = int((no_group & label.notna()).sum())
    data = data[label.notna() & ~no_group].reset_index(drop=True)
    if config.batch is not None:
        data[config.batch] = data[config.batch].astype(str).where(data[config.batch].notna(), "unknown")
    reserved = [
        c for c in [config.label, config.group, config.time, config.batch, config.id_col] if c is not None
    ]
    reserved += [*config.clinical, *config.exclude, "_row_index", "_label"]
    features, n_ignored = select_feature_columns(data, reserved)
    counts["n_columns_ignored"] = n_ignored
    if not features:
        raise ModelingError("no numeric feature columns left after excluding label, group and metadata")
    y = data["_label"].to_numpy()
    n_pos = int(y.sum())
    n_groups = int(data[config.group].nunique())
    if min(n_pos, len(y) - n_pos) < config.outer_folds:
        raise ModelingError(
            f"{n_pos} events and {len(y) - n_pos} non-events: each outcome needs at least "
            f"{config.outer_folds} cases for {config.outer_folds} outer folds"
        )
    if n_groups < config.outer_folds * config.inner_folds:
        raise ModelingError(
            f"{n_groups} patients: nested CV with {config.outer_folds} x {config.inner_folds} folds needs "
            f"at least {config.outer_folds * config.inner_folds}"
        )
    counts.update({"n": len(y), "n_events": n_pos, "n_groups": n_groups})
    return data, counts, features, list(config.clinical)


def events_per_variable(n_events: int, n_nonevents: int, n_variables: int) -> float:
    """Events per candidate variable (the smaller outcome class counts as the events)."""
    return min(n_events, n_nonevents) / max(n_variables, 1)


def run_modeling(
    table: str | os.PathLike[str] | pd.DataFrame,
    out_dir: str | os.PathLike[str],
    config: ModelingConfig,
    *,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
    save_models: bool = True,
    package: PackageSources | None = None,
    save_package: bool = True,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    deep: DeepConfig | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit, validate and document the models; write metrics, predictions, model card and folds.

    Parameters
    ----------
    table
        Path to the case table (Parquet or CSV, gzip allowed) or a DataFrame.
    out_dir
        Output folder (created).
    config
        What to model and how (:class:`ModelingConfig`).
    workers, scheduler
        Parallelism over (repeat, outer fold) via :func:`pacs_workbench.core.executor.map_items`.
    save_models
        Write ``models/`` (boosters, fitted pipelines, test matrices) for the explain stage.
    package, save_package
        Write ``package/``: the final model fitted on every case (:mod:`pacs_workbench.radiomics.package`),
        freezing the parameter files and cohort folder of ``package`` (``None``: recorded as absent).
    cache, cache_dir
        Reuse fold results (and the package's final model) cached by the content hash of the table and
        the settings (:mod:`pacs_workbench.radiomics.fold_cache`), in ``cache_dir`` (default ``<out_dir>/cache``):
        a rerun with nothing changed fits nothing. ``cache=False`` neither reads nor writes it.
    deep
        Also train a small 3-D CNN on lesion crops (model ``cnn``) and, with ``hybrid``, LightGBM on the
        features plus the CNN's embeddings (model ``hybrid``), in the same outer folds
        (:mod:`pacs_workbench.radiomics.deep`; settings :class:`~pacs_workbench.radiomics.deep.DeepConfig`).
        The table then needs each case's preprocessed ``image`` and lesion ``mask``; a case without a mask
        stops the run with :class:`~pacs_workbench.radiomics.cnn.CropError` before anything is fitted.

    Returns
    -------
    dict
        The summary: ``auc``, ``auc_ci``, ``n``, ``n_events``, per-model AUCs, warnings, paths, and
        ``cache``: ``folds`` (outer folds of the run), ``fitted`` and ``from_cache`` (how many of them were
        fitted now and how many read back), ``final_model`` (``"fitted"``, ``"cached"`` or ``"not fitted"``);
        with ``deep``, ``deep``: the CNN folds trained and read back, seconds, crops padded.
    """
    frame = table if isinstance(table, pd.DataFrame) else read_table(table)
    data, counts, features, clinical = _prepare(frame, config)
    id_col = config.id_col or ("case_id" if "case_id" in data.columns else None)
    deep_config, crops = _deep_inputs(deep, data, id_col)  # a case that cannot be cropped stops the run here
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes = _check_events_per_variable(counts, len(features) + len(clinical))

    case_ids = data[id_col].astype(str).to_numpy() if id_col else data["_row_index"].astype(str).to_numpy()
    input_cols = list(dict.fromkeys([*features, *([config.batch] if config.batch else []), *clinical]))
    y = data["_label"].to_numpy().astype(np.int64)
    groups = data[config.group].astype(str).to_numpy()
    store = FoldStore.open(out, data[input_cols], y, groups, config, features, clinical, cache, cache_dir)
    results = _fit_folds(
        data[input_cols], y, groups, config, features, clinical, workers=workers, scheduler=scheduler,
        progress=progress, store=store,
    )  # fmt: skip
    deep_run = None
    if deep_config is not None and crops is not None:
        from pacs_workbench.radiomics.deep import run_deep_folds

        deep_run = run_deep_folds(
            crops, data[input_cols], y, groups, fold_plan(y, groups, config), config, features, clinical, deep_config,
            out=out, table_key=store.table, cache=cache, cache_dir=cache_dir, workers=workers, scheduler=scheduler,
            progress=progress,
        )  # fmt: skip
        _join_deep(results, deep_run)

    row_index = data["_row_index"].to_numpy()
    names = [m for m in MODEL_NAMES if m in results[0]["probs"]]
    predictions = _predictions(results, names, row_index, case_ids, groups, y)
    metrics = summarize(predictions, names, config, counts, notes, results)
    metrics["folds"] = fold_records(results)
    if deep_run is not None and deep_config is not None:
        metrics["deep"] = deep_run.report
        metrics["settings"]["deep"] = asdict(deep_config)
    if save_models:
        write_fold_models(out / "models", results, row_index, case_ids, input_cols)
        write_cnn_models(out / "models" / "cnn", deep_run, deep_config, row_index, case_ids)
    write_results(out, predictions, metrics)
    if save_package:
        roles = {"features": features, "clinical": clinical, "batch": config.batch, "label": config.label,
                 "group": config.group, "id_col": id_col}  # fmt: skip
        _write_final_package(out / "package", store, config, data[input_cols], y, groups, roles, metrics, package)
    return {
        "auc": metrics["auc"], "auc_ci": metrics["auc_ci"], "n": metrics["n"], "n_events": metrics["n_events"],
        "models": {name: metrics["models"][name]["auc"] for name in names}, "warnings": notes, "out": str(out),
        "cache": store.report() | ({"deep": deep_run.report} if deep_run is not None else {}),
    }  # fmt: skip


def _write_final_package(
    folder: Path,
    store: FoldStore,
    config: ModelingConfig,
    X: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    roles: dict[str, Any],
    metrics: dict[str, Any],
    package: PackageSources | None,
) -> None:
    """The final LightGBM pipeline fitted on every case (or read back from the cache) into ``package/``."""
    features, clinical = list(roles["features"]), list(roles["clinical"])
    final = store.final_model(
        lambda: fit_final_model(
            *build_models(config, features, clinical, config.random_state)["lightgbm"], X, y, groups,
            inner_folds=config.inner_folds, random_state=config.random_state, recalibrate=config.recalibrate,
        )
    )  # fmt: skip
    write_package(folder, final, X, roles, metrics, package)


def _deep_inputs(
    deep: DeepConfig | dict[str, Any] | None, data: pd.DataFrame, id_col: str | None
) -> tuple[DeepConfig | None, CropSet | None]:
    """The CNN settings and every case's crop (``None``, ``None`` without ``deep``)."""
    if deep is None:
        return None, None
    from pacs_workbench.radiomics.deep import DeepConfig

    config = DeepConfig.coerce(deep)
    started = time.perf_counter()
    crops = make_crops(data, config.crops(), id_col=id_col or "_row_index", image_col=config.image_col,
                       mask_col=config.mask_col)  # fmt: skip
    crops.seconds = time.perf_counter() - started
    return config, crops


def _join_deep(results: list[dict[str, Any]], deep_run: DeepRun) -> None:
    """Add the CNN's and the hybrid's test probabilities to LightGBM's fold results (the same folds)."""
    for res, extra in zip(results, deep_run.results, strict=True):
        same = (res["repeat"], res["fold"]) == (extra["repeat"], extra["fold"])
        if not (same and np.array_equal(res["test"], extra["test"]) and np.array_equal(res["train"], extra["train"])):
            raise GroupLeakError("the CNN's folds differ from LightGBM's: the comparison would not be paired")
        res["probs"] = {**res["probs"], **extra["probs"]}


def _check_events_per_variable(counts: dict[str, Any], n_vars: int) -> list[str]:
    """Record the events per variable in ``counts``; warn (and return the note) when too few."""
    epv = events_per_variable(counts["n_events"], counts["n"] - counts["n_events"], n_vars)
    counts["events_per_variable"] = epv
    if epv >= EPV_MINIMUM:
        return []
    message = (
        f"events per variable is {epv:.2f} ({min(counts['n_events'], counts['n'] - counts['n_events'])} "
        f"cases in the smaller outcome class for {n_vars} candidate variables; at least "
        f"{EPV_MINIMUM:.0f} is advised): the models may overfit and the estimate is uncertain; "
        "read the confidence interval and prefer fewer, pre-specified features"
    )
    # stacklevel 3: the warning points at the caller of run_modeling.
    warnings.warn(message, EventsPerVariableWarning, stacklevel=3)
    return [message]


def _fit_folds(
    X: pd.DataFrame,
    y: NDArray[np.int64],
    groups: NDArray[Any],
    config: ModelingConfig,
    features: list[str],
    clinical: list[str],
    *,
    workers: int | None,
    scheduler: str | None,
    progress: bool,
    store: FoldStore | None = None,
) -> list[dict[str, Any]]:
    """Every (repeat, outer fold) fitted or read from ``store``, sorted.

    Raises :class:`ModelingError` when a fold failed.
    """
    tasks = [
        FoldTask(r, f, X, y, groups, tr, te, config, features, clinical, seed)
        for r, f, tr, te, seed in fold_plan(y, groups, config)
    ]
    cached = {(t.repeat, t.fold): hit for t in tasks if store is not None and (hit := store.read(t)) is not None}
    todo = [t for t in tasks if (t.repeat, t.fold) not in cached]
    results = list(cached.values())
    fitted = list(
        map_items(
            fit_fold, todo, workers=workers if len(todo) > 1 else 1, scheduler=scheduler, desc="model folds",
            total=len(todo), progress=progress and bool(todo),
        )
    )  # fmt: skip
    failed = [r for r in fitted if "error" in r]
    if failed:
        detail = "; ".join(f"repeat {r['repeat']} fold {r['fold']}: {r['error']}" for r in failed[:3])
        raise ModelingError(f"{len(failed)} of {len(tasks)} folds failed ({detail})")
    if store is not None:
        by_fold = {(t.repeat, t.fold): t for t in tasks}
        for res in fitted:
            store.write(by_fold[(res["repeat"], res["fold"])], res)
        store.finish(tasks)
    results += fitted
    results.sort(key=lambda r: (r["repeat"], r["fold"]))
    return results


@dataclass
class FoldStore:
    """The fold cache of one run (:mod:`pacs_workbench.radiomics.fold_cache`) and what it served.

    ``folder`` ``None`` is a run without cache: nothing is read or written, every fold is fitted.
    """

    folder: Path | None
    table: str
    settings: str
    fitted: int = 0
    from_cache: int = 0
    final: str = "not fitted"

    @classmethod
    def open(
        cls,
        out: Path,
        X: pd.DataFrame,
        y: NDArray[np.int64],
        groups: NDArray[Any],
        config: ModelingConfig,
        features: list[str],
        clinical: list[str],
        cache: bool,
        cache_dir: str | os.PathLike[str] | None,
    ) -> FoldStore:
        folder = fold_cache.cache_folder(out, cache_dir, "folds") if cache else None
        table = fold_cache.table_digest(X, y, groups)
        settings = fold_cache.settings_digest(asdict(config), features, clinical)
        return cls(folder, table, settings)

    def key(self, task: FoldTask) -> str:
        return fold_cache.fold_key(self.table, self.settings, task.repeat, task.fold, task.seed, task.train, task.test)

    def read(self, task: FoldTask) -> dict[str, Any] | None:
        if self.folder is None:
            return None
        key = self.key(task)
        hit = fold_cache.read_entry(fold_cache.entry_path(self.folder, key), key)
        if hit is not None:
            self.from_cache += 1
        return hit

    def write(self, task: FoldTask, result: dict[str, Any]) -> None:
        self.fitted += 1
        if self.folder is not None:
            key = self.key(task)
            fold_cache.write_entry(fold_cache.entry_path(self.folder, key), key, result)

    def finish(self, tasks: Sequence[FoldTask]) -> None:
        """Drop the entries of earlier runs that this run did not use (the final model's stays)."""
        if self.folder is not None:
            fold_cache.prune(self.folder, [self.key(t) for t in tasks] + [self.final_key()])

    def final_key(self) -> str:
        return fold_cache.settings_digest({"final": True}, self.table, self.settings)

    def final_model(self, fit: Callable[[], T]) -> T:
        """The package's final model: read back, or ``fit()`` and stored."""
        key = self.final_key()
        path = fold_cache.entry_path(self.folder, key) if self.folder is not None else None
        if path is not None and (hit := fold_cache.read_entry(path, key)) is not None:
            self.final = "cached"
            return hit  # type: ignore[no-any-return]
        model = fit()
        self.final = "fitted"
        if path is not None:
            fold_cache.write_entry(path, key, model)
        return model

    def report(self) -> dict[str, Any]:
        return {"folds": self.fitted + self.from_cache, "fitted": self.fitted, "from_cache": self.from_cache,
                "final_model": self.final, "folder": str(self.folder) if self.folder else None}  # fmt: skip


def _predictions(
    results: Sequence[dict[str, Any]],
    names: Sequence[str],
    row_index: NDArray[Any],
    case_ids: NDArray[Any],
    groups: NDArray[Any],
    y: NDArray[np.int64],
) -> pd.DataFrame:
    """``predictions.parquet``: one row per case and repeat, a probability column per model."""
    parts = []
    for res in results:
        te = res["test"]
        part = pd.DataFrame(
            {
                "row_index": row_index[te],
                "case_id": case_ids[te],
                "group": groups[te],
                "label": y[te],
                "repeat": res["repeat"],
                "outer_fold": res["fold"],
            }
        )
        for name in names:
            part[f"prob_{name}"] = res["probs"][name]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def summarize(
    predictions: pd.DataFrame,
    names: Sequence[str],
    config: ModelingConfig,
    counts: dict[str, Any],
    notes: list[str],
    results: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """metrics.json content from the out-of-fold predictions."""
    wide = predictions.sort_values(["repeat", "row_index"])
    repeats = sorted(wide["repeat"].unique())
    first = wide[wide["repeat"] == repeats[0]]
    y = first["label"].to_numpy()
    boot_w = perf.group_bootstrap_weights(first["group"].to_numpy(), config.n_boot, config.random_state)
    folds = np.vstack([wide.loc[wide["repeat"] == r, "outer_fold"].to_numpy() for r in repeats])
    models: dict[str, Any] = {}
    boots: dict[str, FloatArray] = {}
    oof: dict[str, FloatArray] = {}
    for name in names:
        oof[name] = np.vstack([wide.loc[wide["repeat"] == r, f"prob_{name}"].to_numpy() for r in repeats])
        models[name], boots[name] = perf.summarize_model(
            y, oof[name], folds, boot_w, risk_cutoffs=config.risk_cutoffs
        )
    # DeLong assumes independent cases: it applies to one case per patient.
    independent = bool(first["group"].is_unique)
    comparisons: dict[str, Any] = {}
    for a, b in COMPARISONS:
        if a in models and b in models:
            comparisons[f"{a}_vs_{b}"] = perf.compare_auc(boots[a], boots[b], models[a]["auc"], models[b]["auc"]) | {
                "delong": perf.delong_repeats(y, oof[a], oof[b], independent)
            }
    main = models["lightgbm"]
    n_features = [r["n_features_after_filter"] for r in results]
    settings = {
        k: v for k, v in asdict(config).items() if k not in {"lightgbm_params"}
    } | {"lightgbm_params": {k: v for k, v in config.lightgbm_params.items()}}
    return {
        "auc": main["auc"],
        "auc_ci": main["auc_ci"],
        "pr_auc": main["pr_auc"],
        "brier": main["brier"],
        "calibration_slope": main["calibration_slope"],
        "calibration_intercept": main["calibration_intercept"],
        **counts,
        "n_features_candidate": int(sum(1 for _ in results[0]["pipeline"].named_steps["prep"].features_)),
        "n_features_after_filter_median": float(np.median(n_features)),
        "primary_model": "lightgbm",
        "models": models,
        "comparisons": comparisons,
        "added_value": added_value_statement(models, comparisons),
        "warnings": notes,
        "settings": settings,
    }
