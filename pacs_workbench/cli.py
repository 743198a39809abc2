"""The ``pacs-workbench`` command.

Each subcommand is a thin layer over one stage package: it parses arguments, calls the
stage's function and turns its summary into an exit code. Stage imports happen inside
the handlers so ``--help`` stays fast. The errors a user can fix (a bad input, a missing
file, an unreachable PACS) end a command with one line on stderr and exit code 2 (1 where
noted); which errors those are is declared on each handler with :func:`refuses`, and
:func:`main` is the one place that turns them into exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]
ErrorTypes = tuple[type[BaseException], ...]


@dataclass(frozen=True)
class Refusal:
    """Errors a command reports in one line instead of a traceback, and with which exit code.

    ``errors`` returns the exception types; it is called only once an exception has happened
    (the handler has imported the stage by then), so declaring it costs ``--help`` nothing.
    ``message`` is formatted with ``command``, ``exc``, ``exc_type`` (its class name) and ``args``.
    """

    errors: Callable[[], ErrorTypes]
    message: str
    code: int = 2


# Input problems the user can fix, for every command: one clear line, no traceback.
GENERAL_REFUSAL = Refusal(
    lambda: (ValueError, PermissionError, FileNotFoundError, FileExistsError, RuntimeError),
    "pacs-workbench {command}: error: {exc}",
)


def refuses(errors: Callable[[], ErrorTypes], message: str, code: int = 2) -> Callable[[Handler], Handler]:
    """Declare errors of a handler that :func:`main` reports as ``message`` with exit ``code``.

    Checked in the order declared, before :data:`GENERAL_REFUSAL`.
    """

    def declare(handler: Handler) -> Handler:
        refusals: list[Refusal] = getattr(handler, "refusals", [])
        # Decorators apply bottom-up: prepend, so the topmost declaration is checked first.
        handler.refusals = [Refusal(errors, message, code), *refusals]  # type: ignore[attr-defined]
        return handler

    return declare


def _requests_error() -> ErrorTypes:
    import requests

    return (requests.RequestException,)


def _print_json(summary: Any) -> None:
    print(json.dumps(summary, indent=2, default=str))


def _add_parallel_args(
    p: argparse.ArgumentParser,
    default_workers: int | None = None,
    what: str = "local worker processes (default: every core)",
) -> None:
    """``--workers`` and ``--scheduler``: every stage that runs over many items takes both."""
    p.add_argument("--workers", type=int, default=default_workers, help=what)
    p.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")


# --- synth -------------------------------------------------------------------------------------


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic PACS export (DICOM, EHR, reports, ground truth)",
        description=(
            "Write a synthetic research extract that behaves like a real one: CT chest studies with "
            "nodules and follow-ups from four vendors, SEG and RTSTRUCT segmentations, localizers, "
            "dose screens with burned-in text, FHIR and CSV EHR exports, free-text radiology reports, "
            "and planted PHI. The ground truth (outcome drivers, every planted PHI string) goes to "
            "OUT/truth/, apart from the data. The same seed always gives the same files."
        ),
    )
    p.add_argument("out", type=Path, help="folder to write the extract into")
    p.add_argument("--patients", type=int, default=120, help="number of patients (default 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same extract (default 0)")
    p.set_defaults(handler=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from pacs_workbench.synth import generate

    summary = generate(args.out, patients=args.patients, seed=args.seed)
    _print_json(summary)
    return 0


# --- index -------------------------------------------------------------------------------------


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="crawl DICOM folders (or query a PACS) into a queryable Parquet index",
        description=(
            "Read the header of every file under each SRC and write DIR/instances.parquet (one row per "
            "readable DICOM instance, with the attributes cohort building needs) and DIR/errors.parquet "
            "(one row per file that is not readable DICOM, with the reason). Every file lands in exactly "
            "one of the two. A rerun reads only new or changed files. A PACS source (DICOMweb or DIMSE) is "
            "queried in full and its instances are indexed from their headers (path = the instance's URL)."
        ),
    )
    p.add_argument(
        "src", nargs="+", help="folders to crawl, or PACS URLs: dicomweb+http://HOST:PORT/dicom-web, dimse://AET@HOST:PORT"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for instances.parquet and errors.parquet")
    _add_parallel_args(p)
    p.set_defaults(handler=_cmd_index)


# A PACS that cannot be reached: one line, the old index kept.
@refuses(
    _requests_error,
    "pacs-workbench {command}: error: PACS query failed ({exc_type}); the previous index is unchanged",
)
def _cmd_index(args: argparse.Namespace) -> int:
    from pacs_workbench.cohort import build_index

    summary = build_index(args.src, args.out, workers=args.workers, scheduler=args.scheduler)
    _print_json(summary)
    return 0


# --- retrieve ----------------------------------------------------------------------------------


def _add_retrieve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrieve",
        help="fetch the series of a cohort from a PACS (DICOMweb or DIMSE), resumably",
        description=(
            "Fetch every series listed in the cohort FILE (Parquet or CSV with StudyInstanceUID and "
            "SeriesInstanceUID columns) from the PACS into DIR/<StudyInstanceUID>/<SeriesInstanceUID>/"
            "<SOPInstanceUID>.dcm. What is already on disk is not fetched again; failures are retried "
            "with backoff. Prints a JSON summary (also DIR/retrieve_summary.json) and exits 1 when any "
            "series is still missing."
        ),
    )
    p.add_argument(
        "--pacs", required=True, help="dicomweb+http://HOST:PORT/dicom-web or dimse://AET@HOST:PORT"
    )
    p.add_argument("--cohort", type=Path, required=True, help="table of the series to fetch")
    p.add_argument("--out", type=Path, required=True, help="folder for the DICOM files (identified zone)")
    p.add_argument("--aet", default="PACSWB", help="our AE title for DIMSE (default PACSWB)")
    p.add_argument(
        "--method", choices=["get", "move"], default="get", help="DIMSE retrieve: C-GET (default) or C-MOVE"
    )
    p.add_argument("--move-port", type=int, default=None, help="port of our storage SCP for C-MOVE")
    p.add_argument("--listen-host", default="0.0.0.0", help="address our C-MOVE storage SCP binds")
    p.add_argument("--connections", type=int, default=2, help="series fetched at once (default 2)")
    p.add_argument("--rate-limit", type=float, default=None, help="requests per second (default: no limit)")
    p.add_argument("--retries", type=int, default=3, help="further attempts per series (default 3)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in s, doubling (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in s (default 60)")
    p.add_argument("--refresh", action="store_true", help="list each series on the PACS again")
    p.set_defaults(handler=_cmd_retrieve)


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from pacs_workbench.dicom.net.retrieve import read_series_list, retrieve_series

    summary = retrieve_series(
        args.pacs,
        read_series_list(args.cohort),
        args.out,
        calling_aet=args.aet,
        method=args.method,
        move_port=args.move_port,
        listen_host=args.listen_host,
        max_connections=args.connections,
        rate_limit=args.rate_limit,
        retries=args.retries,
        backoff=args.backoff,
        timeout=args.timeout,
        refresh=args.refresh,
    )
    _print_json(summary.to_dict())
    if not summary.ok:
        print(
            f"pacs-workbench retrieve: {len(summary.missing)} of {summary.requested} series missing "
            "after retries (see 'missing' above)",
            file=sys.stderr,
        )
    return 0 if summary.ok else 1


# --- keygen ------------------------------------------------------------------------------------


def _add_keygen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keygen",
        help="create a new pseudonymization key file (mode 0600)",
        description=(
            "Create the project key that turns patient IDs, accession numbers and UIDs into stable "
            "pseudonyms. Keep it outside the data you share: whoever holds it can re-link pseudonyms. "
            "An existing file is never overwritten."
        ),
    )
    p.add_argument("file", type=Path, help="where to write the key")
    p.set_defaults(handler=_cmd_keygen)


@refuses(lambda: (FileExistsError,), "refusing to overwrite existing key file {args.file}", code=1)
def _cmd_keygen(args: argparse.Namespace) -> int:
    from pacs_workbench.core.pseudonym import generate_key

    path = generate_key(args.file)
    print(f"wrote key file {path} (mode 0600)")
    return 0


# --- deid / audit ------------------------------------------------------------------------------


def _add_deid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deid",
        help="de-identify DICOM to PS3.15 Annex E (keyed pseudonyms, UID remap, date shift, pixel text)",
        description=(
            "De-identify every file under SRC into DST with the PS3.15 Table E.1-1 (2026c) profile and the "
            "chosen options: keyed pseudonyms for patients and accession numbers, keyed UID remapping, one "
            "date shift per patient, cleaned free text, burned-in text found by OCR and blanked. Output "
            "names are pseudonymous (DST/<patient>/<study>/<series>/<instance>.dcm). Files that cannot be "
            "de-identified safely go to the quarantine folder (default <DST>.quarantine), never to DST. "
            "DST/deid_log.parquet accounts for every input file. The same key, input and options give "
            "byte-identical output, so an interrupted run is finished by running it again."
        ),
    )
    p.add_argument("src", type=Path, help="folder of identified DICOM files")
    p.add_argument("--out", type=Path, required=True, help="output folder (DST); must not be inside SRC")
    p.add_argument("--key-file", type=Path, default=None, help="project key (default: $PACS_WORKBENCH_KEY_FILE)")
    p.add_argument(
        "--options",
        default=None,
        help=(
            "comma-separated PS3.15 options: clean-pixel-data, clean-graphics, clean-structured-content, "
            "clean-descriptors, retain-long-full-dates, retain-long-modified-dates, retain-patient-chars, "
            "retain-device-id, retain-uids, retain-safe-private, retain-institution-id; 'basic' for none, "
            "'research' for the default (retain-long-modified-dates, retain-patient-chars, clean-descriptors, "
            "retain-safe-private, clean-pixel-data)"
        ),
    )
    p.add_argument("--quarantine", type=Path, default=None, help="folder for refused files (default <DST>.quarantine)")
    _add_parallel_args(p)
    p.add_argument(
        "--mapping",
        type=Path,
        default=None,
        help="write the escrow table original -> pseudonym here (.csv or .parquet; refused inside DST)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_deid)


def _deid_errors() -> ErrorTypes:
    from pacs_workbench.core.pseudonym import KeyFileError
    from pacs_workbench.deid import DeidRunError, OptionsError

    return (DeidRunError, OptionsError, KeyFileError)


@refuses(_deid_errors, "{command}: {exc}")
def _cmd_deid(args: argparse.Namespace) -> int:
    from pacs_workbench.deid import deidentify_folder

    summary = deidentify_folder(
        args.src,
        args.out,
        key_file=args.key_file,
        options=args.options,
        quarantine=args.quarantine,
        workers=args.workers,
        scheduler=args.scheduler,
        mapping=args.mapping,
        progress=not args.quiet,
    )
    _print_json(summary)
    return 0


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="check a de-identified folder for residual PHI (exit 1 when anything is found)",
        description=(
            "Independently check every file of DST: each element against the PS3.15 profile and options "
            "the file declares, every byte and file name for the known PHI strings (from the source "
            "headers with --source, and from --phi-list), OCR of every image that could carry text, UID "
            "validity and pseudonym consistency. Prints a JSON summary with counts and, per finding, the "
            "pseudonymous file, a category and a tag (never the PHI value). Exits 1 on any finding."
        ),
    )
    p.add_argument("dst", type=Path, help="de-identified folder to audit")
    p.add_argument("--source", type=Path, default=None, help="the identified source folder (its header PHI)")
    p.add_argument("--phi-list", type=Path, default=None, help="text file of known PHI strings, one a line")
    p.add_argument("--no-ocr", action="store_true", help="skip OCR of the images (faster, weaker)")
    _add_parallel_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_audit)


@refuses(lambda: (FileNotFoundError,), "{command}: {exc}")
def _cmd_audit(args: argparse.Namespace) -> int:
    from pacs_workbench.deid import audit_folder

    summary = audit_folder(
        args.dst,
        source=args.source,
        phi_list=args.phi_list,
        ocr=not args.no_ocr,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.quiet,
    )
    _print_json(summary)
    return 0 if summary["ok"] else 1


# --- features ----------------------------------------------------------------------------------


def _add_features(sub: argparse._SubParsersAction) -> None:
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
    _add_parallel_args(p)
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
    _print_json(summary)
    return 0 if summary["failed"] == 0 else 1


# --- segment -----------------------------------------------------------------------------------


def _add_segment(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--workers", type=int, default=2, help="torch threads")
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
        labelled_fraction=args.labelled_fraction, config=config, workers=args.workers,
    )
    table = result.table
    summary = {k: v for k, v in result.summary.items() if k not in ("history", "config")}
    summary["status"] = table.groupby("status")["case_id"].nunique().to_dict()
    _print_json(summary)
    for row in table[table["status"] != "ok"].drop_duplicates("case_id").itertuples():
        print(f"{row.case_id}: {row.reason}", file=sys.stderr)
    return 0 if (table["status"] == "ok").all() else 1


# --- model -------------------------------------------------------------------------------------


def _add_model(sub: argparse._SubParsersAction) -> None:
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
            "(--radiomics-params, --preprocessed, --cohort), the model card, versions and a SHA-256 manifest."
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
    _add_parallel_args(p, default_workers=1, what="local processes over folds (default 1)")
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
    sources = PackageSources(args.radiomics_params, args.preprocessed, args.cohort)
    summary = run_modeling(args.table, args.out, config, workers=args.workers, scheduler=args.scheduler,
                           package=sources)  # fmt: skip
    _print_json(summary)
    return 0


# --- predict -----------------------------------------------------------------------------------


def _add_predict(sub: argparse._SubParsersAction) -> None:
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
    _add_parallel_args(p, default_workers=1, what="local processes for feature extraction (default 1)")
    p.set_defaults(handler=_cmd_predict)


def _predict_error() -> ErrorTypes:
    from pacs_workbench.deploy import PackageError

    return (PackageError, *_modeling_error())


@refuses(_predict_error, "{command}: refused: {exc}")
def _cmd_predict(args: argparse.Namespace) -> int:
    from pacs_workbench.deploy import predict_cases
    from pacs_workbench.runner.run import run_command_notebook

    summary = predict_cases(args.package, args.cases, args.out, label=args.label, cohort=args.cohort,
                            workers=args.workers)  # fmt: skip
    if args.label:
        values = {"predictions_file": str((args.out / "predictions.parquet").absolute()),
                  "package_dir": str(args.package.absolute()), "bootstrap": args.bootstrap}  # fmt: skip
        record = run_command_notebook("07_external_validation", values, args.out)
        summary["report"] = {"status": record.status, "html": record.html, "error": record.error}
    _print_json(summary)
    return 0 if summary.get("report", {}).get("status", "ok") == "ok" else 1


# --- run / demo --------------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run every numbered notebook with papermill and render HTML reports",
        description=(
            "Execute notebooks/01_*.ipynb, 02_*.ipynb, ... in order from one YAML parameter file, render "
            "each executed notebook to HTML for reviewers (code hidden) and write OUT/index.html with the "
            "run's provenance. A failing notebook still gets its HTML; later notebooks are marked not run "
            "and the command exits non-zero."
        ),
    )
    p.add_argument(
        "--params", type=Path, default=None, help="YAML parameter file (default: notebooks/params/default.yaml)"
    )
    p.add_argument("--out", type=Path, default=None, help="report folder (default: reports/<run-id>)")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from pacs_workbench.runner import run_notebooks, run_summary

    result = run_notebooks(params_file=args.params, out_dir=args.out, progress=sys.stderr)
    print(run_summary(result))
    return 0 if result.ok else 1


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate the demo extract into data/demo and run every notebook into reports/demo",
        description=(
            "Generate the synthetic demo extract (data/demo), a project key, and run every notebook with "
            "the default parameters into reports/demo/ (open reports/demo/index.html)."
        ),
    )
    p.add_argument("--patients", type=int, default=120, help="number of synthetic patients (default 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pacs_workbench.runner import run_demo, run_summary

    result = run_demo(patients=args.patients, seed=args.seed, progress=sys.stderr)
    print(run_summary(result))
    return 0 if result.ok else 1


# Stage subcommands register here, in the order data flows.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth,
    _add_index,
    _add_retrieve,
    _add_keygen,
    _add_deid,
    _add_audit,
    _add_features,
    _add_segment,
    _add_model,
    _add_predict,
    _add_run,
    _add_demo,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pacs-workbench",
        description=(
            "Research workbench for radiology PACS data: build a cohort, de-identify it to DICOM PS3.15, "
            "preprocess images, extract radiomic features, fit validated risk models and review them "
            "with SHAP. Each step is reproducible and leaves a report."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pacs-workbench``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except Exception as exc:
        for refusal in [*getattr(handler, "refusals", []), GENERAL_REFUSAL]:
            if isinstance(exc, refusal.errors()):
                message = refusal.message.format(command=args.command, exc=exc, exc_type=type(exc).__name__, args=args)
                print(message, file=sys.stderr)
                return int(refusal.code)
        raise


if __name__ == "__main__":
    sys.exit(main())
