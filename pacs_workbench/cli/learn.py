"""Subcommands that learn from the data and apply what was learnt: features, segment, model, predict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pacs_workbench.cli.base import ErrorTypes, add_parallel_args, print_json, refuses

# --- features ----------------------------------------------------------------------------------


def add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="extract IBSI-consistent radiomic features (pyradiomics) for a table of image/mask cases",
        description=(
            "Run pyradiomics with a YAML parameter file on every case of CASES (CSV or Parquet with "
            "case_id, image, mask and any provenance columns, which are carried through) and write OUT: one "
            "row per case with the features under pyradiomics' names, IBSI-consistent (kurtosis as excess "
            "kurtosis, principal axes from the sample covariance; listed in the file's metadata), plus image, "
            "mask and parameter hashes. Diagnostics go to <stem>.diagnostics.parquet, failed cases to "
            "<stem>.errors.parquet (and an error column). Cases are cached by content hash, so a rerun "
            "computes only what changed. Exits 1 when any case failed (the tables are still complete), 2 when the "
            "case table or the parameter file is unusable."
        ),
    )
    p.add_argument("cases", type=Path, help="case table (CSV or Parquet) with case_id, image, mask")
    p.add_argument(
        "--params", type=Path, required=True,
        help="pyradiomics parameter file, e.g. notebooks/params/radiomics/ct_default.yaml",
    )
    p.add_argument("--out", type=Path, required=True, help="features Parquet file to write")
    add_parallel_args(p)
    p.add_argument("--cache", type=Path, default=None, help="per-case cache folder (default: <OUT>.cache/)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the per-case cache")
    p.set_defaults(handler=_cmd_features)


# An unusable case table or parameter file.
@refuses(lambda: (ValueError, FileNotFoundError), "{command}: {exc}")
def _cmd_features(args: argparse.Namespace) -> int:
    from pacs_workbench.radiomics import extract_features

    frame = extract_features(
        args.cases,
        args.params,
        args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        cache_dir=args.cache,
        cache="off" if args.no_cache else "default",
    )
    summary = frame.attrs["summary"]
    print_json(summary)
    return 0 if summary["failed"] == 0 else 1


# --- segment -----------------------------------------------------------------------------------


def add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="lesion masks for the cases without one: a MONAI U-Net trained on those with one (or --model)",
        description=(
            "Train a small 3-D U-Net on the cases of CASES (the preprocess cases table) that have reference "
            "masks, or load a TorchScript/ONNX model with --model (a YAML beside it declares spacing and "
            "intensity window), segment every case by sliding window, and write DIR/segmentation.parquet "
            "(case, lesion, voxels, volume, mask source reference/model, uncertainty, Dice/HD95 where a "
            "reference exists), DIR/worklist.csv (unlabelled cases, most uncertain first), probability and "
            "uncertainty maps, and one DICOM SEG per segmented series (with --dicom-dir). The checkpoint is "
            "cached by content hash. Exits 1 when a case failed or came out empty, 2 when nothing can be "
            "segmented (no labelled case to train on, a model that does not fit)."
        ),
    )
    p.add_argument("cases", type=Path, help="preprocess cases table (cases.parquet or cases.csv)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--train", action="store_true", help="train on the labelled cases (the default)")
    how.add_argument("--model", type=Path, default=None, help="TorchScript (.pt) or ONNX (.onnx) model to use")
    p.add_argument(
        "--labelled-fraction", type=float, default=1.0,
        help="share of patients whose reference masks training may use; the others only score the model",
    )
    p.add_argument("--dicom-dir", type=Path, default=None, help="DICOM tree of the cases, for the SEG files")
    p.add_argument("--iterations", type=int, default=None, help="training steps (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed of splits and training")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for this small U-Net)")
    p.set_defaults(handler=_cmd_segment)


def _segmentation_error() -> ErrorTypes:
    from pacs_workbench.segment import SegmentationError

    return (SegmentationError,)


@refuses(_segmentation_error, "{command}: {exc}")
def _cmd_segment(args: argparse.Namespace) -> int:
    from pacs_workbench.segment import segment_cases

    config: dict[str, Any] = {"seed": args.seed}
    if args.iterations is not None:
        config["iterations"] = args.iterations
    result = segment_cases(
        args.cases, args.out, dicom_dir=args.dicom_dir, model=args.model,
        labelled_fraction=args.labelled_fraction, config=config, threads=args.threads,
    )
    table = result.table
    summary = {k: v for k, v in result.summary.items() if k not in ("history", "config")}
    summary["status"] = table.groupby("status")["case_id"].nunique().to_dict()
    print_json(summary)
    for row in table[table["status"] != "ok"].drop_duplicates("case_id").itertuples():
        print(f"{row.case_id}: {row.reason}", file=sys.stderr)
    return 0 if (table["status"] == "ok").all() else 1


# --- model -------------------------------------------------------------------------------------


def add_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model",
        help="fit and validate a LightGBM risk model with baselines (patient-grouped nested CV)",
        description=(
            "Fit a LightGBM classifier on a feature table (binary outcome, or event before --horizon when "
            "--time is given) with repeated, patient-grouped nested cross-validation; every data-dependent "
            "step (filters, selection, ComBat by --batch, recalibration) is learned inside the folds. "
            "Clinical-only and L1 logistic regression baselines run in the same folds. Writes "
            "DIR/metrics.json, DIR/predictions.parquet, DIR/model_card.md, DIR/models/ (per-fold "
            "boosters, fitted pipelines and test matrices for SHAP) and DIR/package/: the final model fitted "
            "on every case with the same pipeline, its feature specification, the parameter files given "
            "(--radiomics-params, --preprocessed, --cohort), the lesion U-Net (--segmentation), the model card, "
            "versions and a SHA-256 manifest."
        ),
    )
    p.add_argument("table", type=Path, help="case table: Parquet or CSV (gzip allowed)")
    p.add_argument("--label", required=True, help="outcome column (0/1; the event indicator with --time)")
    p.add_argument("--group", required=True, help="patient column: no patient is split across train and test")
    p.add_argument("--time", default=None, help="time-to-event column; needs --horizon")
    p.add_argument("--horizon", type=float, default=None, help="fixed horizon, in the unit of --time")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--id", dest="id_col", default=None, help="case id column (default: case_id if present)")
    p.add_argument("--batch", default=None, help="scanner/vendor column for in-fold ComBat harmonization")
    p.add_argument("--clinical", default="", help="comma-separated clinical columns (e.g. age,pack_years)")
    p.add_argument("--exclude", default="", help="comma-separated numeric columns that are not features")
    p.add_argument(
        "--radiomics-only", action="store_true", help="keep the clinical columns out of the LightGBM model"
    )
    p.add_argument("--repeats", type=int, default=3, help="repeats of the outer CV (default 3)")
    p.add_argument("--outer-folds", type=int, default=5, help="outer folds, for the estimate (default 5)")
    p.add_argument("--inner-folds", type=int, default=3, help="inner folds, for tuning (default 3)")
    p.add_argument("--random-state", type=int, default=0, help="seed; the same seed gives the same results")
    p.add_argument("--recalibrate", action="store_true", help="also report an in-fold recalibrated LightGBM")
    p.add_argument("--corr-threshold", type=float, default=0.9, help="drop features with |r| above (default 0.9)")
    p.add_argument("--select", type=int, default=None, help="keep the K best features by ANOVA F, in-fold")
    p.add_argument("--risk-cutoffs", default=None, help="LOW,HIGH probabilities for the risk strata")
    p.add_argument("--bootstrap", type=int, default=1000, help="patient bootstrap resamples for CIs")
    p.add_argument("--radiomics-params", type=Path, default=None, help="pyradiomics parameter file of the features")
    p.add_argument("--preprocessed", type=Path, default=None, help="preprocessing folder (its preprocess.parquet)")
    p.add_argument("--cohort", type=Path, default=None, help="cohort folder (its attrition.csv: the criteria)")
    p.add_argument(
        "--segmentation", type=Path, default=None,
        help="segmentation folder (segment.json and the U-Net it names): frozen in the package for `listen`",
    )  # fmt: skip
    add_parallel_args(p, default_workers=1, what="local processes over folds (default 1)")
    p.set_defaults(handler=_cmd_model)


def _modeling_error() -> ErrorTypes:
    from pacs_workbench.radiomics import ModelingError

    return (ModelingError,)


@refuses(_modeling_error, "{command}: {exc}")
def _cmd_model(args: argparse.Namespace) -> int:
    from pacs_workbench.radiomics import ModelingConfig, run_modeling
    from pacs_workbench.radiomics.package import PackageSources

    def columns(text: str) -> tuple[str, ...]:
        return tuple(c.strip() for c in text.split(",") if c.strip())

    cutoffs = None
    if args.risk_cutoffs:
        low, high = (float(v) for v in args.risk_cutoffs.split(","))
        cutoffs = (low, high)
    config = ModelingConfig(
        label=args.label,
        group=args.group,
        time=args.time,
        horizon=args.horizon,
        id_col=args.id_col,
        batch=args.batch,
        clinical=columns(args.clinical),
        exclude=columns(args.exclude),
        clinical_in_model=not args.radiomics_only,
        repeats=args.repeats,
        outer_folds=args.outer_folds,
        inner_folds=args.inner_folds,
        random_state=args.random_state,
        recalibrate=args.recalibrate,
        corr_threshold=args.corr_threshold,
        select_k=args.select,
        n_boot=args.bootstrap,
        risk_cutoffs=cutoffs,
    )
    sources = PackageSources(args.radiomics_params, args.preprocessed, args.cohort, args.segmentation)
    summary = run_modeling(args.table, args.out, config, workers=args.workers, scheduler=args.scheduler,
                           package=sources)  # fmt: skip
    print_json(summary)
    return 0


# --- predict -----------------------------------------------------------------------------------


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="score a new cohort's preprocessed cases with a model package (external validation with --label)",
        description=(
            "Verify PACKAGE (DIR/package of `model`) against its manifest, check that CASES (the preprocessing "
            "stage's cases.parquet) were preprocessed with the package's parameters, extract features with the "
            "package's own radiomics parameters, build rows as in development (clinical columns from --cohort) and "
            "write DIR/predictions.parquet (pseudonymous ids, risk, risk group, flags for values outside the "
            "development data). A manifest that does not match, a parameter-hash mismatch or missing features "
            "refuse (exit 2). With --label, also DIR/07_external_validation.ipynb and .html."
        ),
    )
    p.add_argument("package", type=Path, help="model package folder (model/package)")
    p.add_argument("cases", type=Path, help="case table: the preprocessing stage's cases.parquet")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--label", default=None, help="outcome column (cohort or cases): run the external validation")
    p.add_argument("--cohort", type=Path, default=None, help="the new cohort's cohort.parquet (clinical columns)")
    p.add_argument("--bootstrap", type=int, default=1000, help="patient bootstrap resamples for the AUC CI")
    add_parallel_args(p, default_workers=1, what="local processes for feature extraction (default 1)")
    p.set_defaults(handler=_cmd_predict)


def _predict_error() -> ErrorTypes:
    from pacs_workbench.deploy import PackageError

    return (PackageError, *_modeling_error())


@refuses(_predict_error, "{command}: refused: {exc}")
def _cmd_predict(args: argparse.Namespace) -> int:
    from pacs_workbench.runner.validation import predict_with_report

    summary, _ = predict_with_report(args.package, args.cases, args.out, label=args.label, cohort=args.cohort,
                                     bootstrap=args.bootstrap, workers=args.workers, progress=sys.stderr)  # fmt: skip
    print_json(summary)
    return 0 if summary.get("report", {}).get("status", "ok") == "ok" else 1


