"""Subcommands that bring data in and make it safe: synth, index, retrieve, keygen, deid, audit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pacs_workbench.cli.base import ErrorTypes, add_parallel_args, print_json, refuses, requests_error

# --- synth -------------------------------------------------------------------------------------


def add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic PACS export (DICOM, EHR, reports, ground truth)",
        description=(
            "Write a synthetic research extract that behaves like a real one: CT chest studies with "
            "nodules and follow-ups from four vendors (or, with --modality MR, brain MR studies of T1, T2, "
            "FLAIR, DWI/ADC and post-contrast T1, classic and enhanced multi-frame), SEG and RTSTRUCT "
            "segmentations, localizers, "
            "dose screens with burned-in text, FHIR and CSV EHR exports, free-text radiology reports, "
            "and planted PHI. The ground truth (outcome drivers, every planted PHI string) goes to "
            "OUT/truth/, apart from the data. The same seed always gives the same files."
        ),
    )
    p.add_argument("out", type=Path, help="folder to write the extract into")
    p.add_argument("--patients", type=int, default=120, help="number of patients (default 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same extract (default 0)")
    p.add_argument(
        "--modality", choices=["CT", "MR"], default="CT", type=str.upper,
        help="CT: chest CT with nodules (default); MR: brain MR, multi-sequence studies with a lesion",
    )
    p.add_argument(
        "--site", choices=["development", "external"], default="development",
        help="external: another hospital network for external validation, with another vendor mix and "
        "shifted intensities (CT only; default development)",
    )  # fmt: skip
    p.set_defaults(handler=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from pacs_workbench.synth import generate

    summary = generate(args.out, patients=args.patients, seed=args.seed, modality=args.modality, site=args.site)
    print_json(summary)
    return 0


# --- index -------------------------------------------------------------------------------------


def add_index(sub: argparse._SubParsersAction) -> None:
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
    add_parallel_args(p)
    p.set_defaults(handler=_cmd_index)


# A PACS that cannot be reached: one line, the old index kept.
@refuses(
    requests_error,
    "pacs-workbench {command}: error: PACS query failed ({exc_type}); the previous index is unchanged",
)
def _cmd_index(args: argparse.Namespace) -> int:
    from pacs_workbench.cohort import build_index

    summary = build_index(args.src, args.out, workers=args.workers, scheduler=args.scheduler)
    print_json(summary)
    return 0


# --- retrieve ----------------------------------------------------------------------------------


def add_retrieve(sub: argparse._SubParsersAction) -> None:
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
    print_json(summary.to_dict())
    if not summary.ok:
        print(
            f"pacs-workbench retrieve: {len(summary.missing)} of {summary.requested} series missing "
            "after retries (see 'missing' above)",
            file=sys.stderr,
        )
    return 0 if summary.ok else 1


# --- keygen ------------------------------------------------------------------------------------


def add_keygen(sub: argparse._SubParsersAction) -> None:
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


def add_deid(sub: argparse._SubParsersAction) -> None:
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
    add_parallel_args(p)
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
    print_json(summary)
    return 0


def add_audit(sub: argparse._SubParsersAction) -> None:
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
    add_parallel_args(p)
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
    print_json(summary)
    return 0 if summary["ok"] else 1


