"""Independent residual-PHI audit of a de-identified folder.

:func:`audit_folder` (``pacs-workbench audit DST [--source SRC] [--phi-list FILE]``)
trusts nothing the de-identification recorded but one OCR verdict per image whose pixels are
unchanged (see **pixels**). It reads what is in DST:

* **profile**: every element of every DICOM file, at any depth, against Table E.1-1
  with the options the file declares in (0012,0064) De-identification Method Code
  Sequence: nothing the profile removes is present, no private element outside the
  safe list, the de-identification markers are there, Burned In Annotation is not
  ``YES``, and every encoded VR is a DICOM VR that agrees with the data dictionary for
  a public tag (``vr_mismatch``: a date stored as a number escapes the date shift);
* **UIDs**: every UI value is a valid UID (at most 64 characters, digits and dots, no
  leading zeros), every ``U`` attribute is under ``2.25.`` (unless Retain UIDs), and
  with ``--source`` no instance UID of the source survives;
* **bytes**: every byte of every file in DST (DICOM, the Parquet logs, anything) and
  every file and folder name, searched case-insensitively for the known PHI strings:
  those of the source headers (names, IDs, birth dates, addresses, telephone numbers,
  accession numbers, institution) and of ``--phi-list``, in their usual variants (name
  components of four or more characters on their own, dates in several formats, phone
  numbers as digits), in UTF-8 and Latin-1. Terms match between non-alphanumeric
  boundaries, so a number is not "found" inside a 40-digit UID nor a name inside a
  random pseudonym. Inside Pixel Data and other bulk values, where short strings
  occur by chance, only terms of eight or more characters are searched; OCR covers
  the pixels. A term found as the value of a top-level date element is not a finding
  when DST's log traces the file to its source files and none of them holds that date
  anywhere: the value is one of the file's own dates, shifted, that lands on another
  patient's birth date (or a number of theirs) by chance (counted as ``date_coincidences``);
* **pixels**: OCR (detection and recognition) of every image that could carry text
  (the same rules as de-identification); any text read is a finding. One record of the
  de-identification is used, when DST has its log: an image whose Pixel Data still has
  the SHA-256 that the de-identification's last OCR check found free of text
  (``pixel_verified_sha256``) is not read again (``reuse_deid_ocr=False`` reads every one);
  any other image, and any image whose pixels changed since, is read;
* **pseudonyms**: one Patient's Name per Patient ID and back, one patient per study,
  one study per series, file paths that match the header, references (SEG, RTSTRUCT)
  that point to instances present in DST (reported as a count).

The summary holds counts and, per finding, the pseudonymous file path, a category and
a tag: never the PHI value itself (a file whose name leaks is reported without it).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacs_workbench.core.executor import map_items
from pacs_workbench.deid.audit_checks import AuditTask, audit_batch, element_texts, finding
from pacs_workbench.deid.phi_match import (
    MIN_TERM,
    PhiMatcher,
    build_matcher,
    phi_terms_from_list,
    usable_term,
)
from pacs_workbench.deid.text import AUDIT_KINDS, iter_identifying_values, phi_variants

BATCH = 32
MAX_BATCH = 1024
# Enough tasks to keep a few dozen workers busy to the end.
TASKS = 64
MAX_LISTED_FINDINGS = 2000


# --- PHI terms ---------------------------------------------------------------------------------


def _read_header(data: bytes) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except InvalidDicomError:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
            if "SOPInstanceUID" not in ds:
                raise
            return ds


def _iter_values(ds: Any, vrs: frozenset[str]) -> Iterator[str]:
    """The texts of every element with a VR in ``vrs``, at any depth."""
    from pydicom.datadict import dictionary_VR

    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = raw.VR
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr == "SQ":
            for item in ds[tag].value or []:
                yield from _iter_values(item, vrs)
        elif vr in vrs:
            for text in element_texts(ds[tag].value):
                text = text.rstrip("\x00").strip()
                if text:
                    yield text


def source_facts(path: str) -> dict[str, Any]:
    """PHI terms, instance UIDs and patient identity of one source file (for the audit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _source_facts(path)


def _source_facts(path: str) -> dict[str, Any]:
    from pacs_workbench.deid.keyed import is_well_known_uid, patient_identity

    data = Path(path).read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        ds = _read_header(data)
    except Exception:  # a source file that is not DICOM holds no header PHI
        return {"terms": {}, "uids": [], "patient": None, "kept": [], "sha256": sha256, "dates": []}
    terms: dict[str, str] = {}
    for kind, value in iter_identifying_values(ds):
        if kind not in AUDIT_KINDS:
            continue
        for variant in [value, *phi_variants(value, kind, min_component=MIN_TERM)]:
            if usable_term(variant):
                terms.setdefault(variant.strip(), kind)
    uids = sorted({u for u in _iter_values(ds, frozenset({"UI"})) if not is_well_known_uid(u)})
    # every date the file holds (a DT by its date), and its birth date terms in every form
    dates = {d[:8] for d in _iter_values(ds, frozenset({"DA", "DT"}))} | {t for t, k in terms.items() if k == "date"}
    return {"terms": terms, "uids": uids, "patient": patient_identity(ds), "kept": _kept_values(ds),
            "sha256": sha256, "dates": sorted(dates)}  # fmt: skip


def _dictionary_keywords() -> list[str]:
    """The keywords of pydicom's data dictionary (e.g. ``Modality``)."""
    from pydicom.datadict import keyword_dict

    return list(keyword_dict)


def _kept_values(ds: Any) -> list[str]:
    """Lower-cased values of top-level keep-list attributes (e.g. Manufacturer): the
    profile keeps them, so a "PHI" term equal to one of them is not a leak."""
    from pacs_workbench.deid.profile import load_keep_list

    keep = load_keep_list()
    out: set[str] = set()
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        coded = getattr(raw, "VR", None) == "CS"  # a code string is a coded value, never a person
        if not coded and (int(tag) not in keep.tags or int(tag) in keep.free_text):
            continue
        if raw is None or getattr(raw, "VR", None) in ("SQ", "OB", "OW", "UN"):
            continue
        try:
            values = element_texts(ds[tag].value)
        except Exception:  # an unreadable value keeps nothing
            continue
        out.update(v.strip().lower() for v in values if isinstance(v, str) and len(v.strip()) >= MIN_TERM)
    out.update(_coding_scheme_texts(ds))
    return sorted(out)


def _coding_scheme_texts(ds: Any) -> set[str]:
    """Lower-cased texts of (0008,0110) Coding Scheme Identification Sequence and their
    comma-separated parts: they describe a coding scheme and the organization responsible
    for it (e.g. a vendor's address), public facts of the scheme and not of a patient."""
    out: set[str] = set()
    for item in ds.get("CodingSchemeIdentificationSequence", None) or []:
        for element in item:
            if element.VR in ("SQ", "OB", "OW", "UN"):
                continue
            for text in element_texts(element.value):
                if not isinstance(text, str):
                    continue
                for part in [text, *text.split(",")]:
                    if len(part.strip()) >= MIN_TERM:
                        out.add(part.strip().lower())
    return out


# --- per-file checks ---------------------------------------------------------------------------


# --- folder ------------------------------------------------------------------------------------


def list_files(dst: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(dst):
        dirs.sort()
        for name in sorted(files):
            out.append((Path(root) / name).relative_to(dst).as_posix())
    return out


def list_names(dst: Path) -> list[str]:
    out = set()
    for rel in list_files(dst):
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return sorted(out)


def audit_folder(
    dst: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    phi_list: str | os.PathLike[str] | None = None,
    *,
    ocr: bool = True,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
    reuse_deid_ocr: bool = True,
) -> dict[str, Any]:
    """Audit a de-identified folder; the summary's ``ok`` is ``False`` on any finding.

    Parameters
    ----------
    dst
        The de-identified folder (output of ``deid``).
    source
        The identified source folder, for its header PHI and instance UIDs.
    phi_list
        Text file of known PHI strings, one a line.
    ocr
        OCR the images that could carry text.
    workers, scheduler
        Parallelism (:func:`~pacs_workbench.core.executor.map_items`).
    progress
        Show progress bars.
    reuse_deid_ocr
        Take the de-identification's verified OCR result (``deid_log.parquet``) for an
        image whose Pixel Data hash is unchanged, instead of reading it again.

    Returns
    -------
    dict
        ``files_checked``, ``other_files_checked``, ``images_ocr_checked`` (read by OCR
        or verified by hash), ``images_ocr_reused`` (verified by hash),
        ``phi_terms``, ``findings_by_category``, ``findings`` (file, category, tag),
        ``dangling_references``, ``date_coincidences``, ``ok``. Counts and pseudonymous paths only.
    """
    dst_path = Path(dst)
    if not dst_path.is_dir():
        raise FileNotFoundError(f"not a folder: {dst_path}")
    terms: dict[str, str] = phi_terms_from_list(phi_list) if phi_list is not None else {}
    sources = SourceFacts()
    if source is not None:
        sources = _add_source_facts(terms, Path(source), workers, scheduler, progress)
    log = _log_columns(dst_path, ["output", "pixel_verified_sha256", "source_sha256"])
    names_matcher = build_matcher(terms)
    findings = _name_findings(names_matcher, dst_path)
    leaked_names = len(findings)
    facts_all, counts = _audit_files(
        findings, dst_path, terms, ocr, workers, scheduler, progress,
        verified=_verified_images(log) if ocr and reuse_deid_ocr else {},
        own_dates=_own_dates(log, sources.dates_by_sha) if source is not None else {},
    )  # fmt: skip
    # withheld names: never echo a leaking path in another finding either
    if leaked_names:
        for f in findings:
            if names_matcher.find(str(f["file"]).encode("utf-8", "replace")):
                f["file"] = "<name withheld>"

    findings.extend(_consistency(facts_all, sources.uids, sources.patients))
    findings.sort(key=lambda f: (f["category"], f["file"], f["tag"] or ""))
    by_category = Counter(f["category"] for f in findings)
    return {
        "files_checked": counts["n_dicom"],
        "other_files_checked": counts["n_other"],
        "images_ocr_checked": counts["n_ocr"] + counts["n_ocr_reused"],
        "images_ocr_reused": counts["n_ocr_reused"],
        "phi_terms": len(terms),
        "source_given": source is not None,
        "findings_by_category": dict(sorted(by_category.items())),
        "n_findings": len(findings),
        "findings": findings[:MAX_LISTED_FINDINGS],
        "dangling_references": _dangling_references(facts_all),
        "date_coincidences": counts["n_date_coincidences"],
        "checks": ["profile", "uids", "bytes", "file names", *(["ocr"] if ocr else []), "pseudonyms"],
        "ok": not findings,
    }


def _dangling_references(facts: list[dict[str, Any]]) -> int:
    """How many references (SEG, RTSTRUCT) point to no instance, series or study in DST."""
    from pacs_workbench.deid.keyed import is_well_known_uid

    present = {f[level] for f in facts for level in ("sop", "study", "series")}
    return sum(1 for f in facts for r in f["references"] if r not in present and not is_well_known_uid(r))


@dataclass
class SourceFacts:
    """What the audit takes from the identified source folder (in memory only)."""

    #: Instance UIDs, none of which may survive.
    uids: set[str] = field(default_factory=set)
    #: Patient identities (the count a pseudonym split is judged against).
    patients: set[str] = field(default_factory=set)
    #: Each source file's dates (:func:`source_facts`), by the file's SHA-256.
    dates_by_sha: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _add_source_facts(
    terms: dict[str, str], source: Path, workers: int | None, scheduler: str | None, progress: bool
) -> SourceFacts:
    """Add the source headers' PHI terms to ``terms`` (minus kept values); the rest of their facts."""
    from pacs_workbench.deid.run import iter_input_files

    out = SourceFacts()
    kept: set[str] = set()
    paths = [str(p) for p in iter_input_files(source)]
    for facts in map_items(
        source_facts,
        paths,
        workers=workers,
        scheduler=scheduler,
        desc="audit source files",
        total=len(paths),
        progress=progress,
    ):
        for term, kind in facts["terms"].items():
            terms.setdefault(term, kind)
        kept.update(facts["kept"])
        out.uids.update(facts["uids"])
        out.dates_by_sha[facts["sha256"]] = tuple(facts["dates"])
        if facts["patient"] is not None:
            # "" (a DICOM file without patient identity) is one more patient: such files
            # share one pseudonym
            out.patients.add(facts["patient"])
    # a DICOM keyword (e.g. a placeholder name "Modality") is the workbench's own vocabulary,
    # found in every log: not a leak of the person it stood for
    kept.update(k.lower() for k in _dictionary_keywords())
    for term in [t for t in terms if t.strip().lower() in kept]:
        del terms[term]
    return out


def _name_findings(names_matcher: PhiMatcher, dst: Path) -> list[dict[str, Any]]:
    """One ``phi_filename`` finding per file or folder name that holds PHI (the name withheld)."""
    findings: list[dict[str, Any]] = []
    for name in list_names(dst):
        component = name.rsplit("/", 1)[-1].encode("utf-8", "replace")
        if names_matcher.find(component):
            # the path itself is withheld: it holds PHI
            findings.append(finding(f"<name withheld #{len(findings) + 1}>", "phi_filename"))
    return findings


def _log_columns(dst: Path, columns: list[str]) -> dict[str, list[Any]]:
    """``columns`` of DST's de-identification log; empty when there is none or it cannot be read."""
    from pacs_workbench.deid.run import LOG_NAME

    log = dst / LOG_NAME
    if not log.is_file():
        return {}
    try:
        import pyarrow.parquet as pq

        return dict(pq.read_table(log, columns=columns).to_pydict())
    except Exception:  # an old or unreadable log: the audit trusts none of it
        return {}


def _verified_images(log: dict[str, list[Any]]) -> dict[str, str]:
    """Output path -> Pixel Data SHA-256 the de-identification verified free of text (from its log)."""
    pairs = zip(log.get("output", []), log.get("pixel_verified_sha256", []), strict=True)
    return {str(out): str(sha) for out, sha in pairs if out and sha}


def _own_dates(log: dict[str, list[Any]], dates_by_sha: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Output path -> the dates of the source files the log traces it to (every one found).

    An output with any source not found in the source folder is left out: none of its date
    findings can be shown to be a coincidence.
    """
    own: dict[str, set[str]] = defaultdict(set)
    untraced: set[str] = set()
    for out, sha in zip(log.get("output", []), log.get("source_sha256", []), strict=True):
        if not out:
            continue
        if sha in dates_by_sha:
            own[str(out)].update(dates_by_sha[sha])
        else:
            untraced.add(str(out))
    return {out: tuple(sorted(dates)) for out, dates in own.items() if out not in untraced}


def batch_size(n_files: int) -> int:
    """Files per audit task: about :data:`TASKS` tasks, :data:`BATCH` to :data:`MAX_BATCH` files each.

    Every task carries the cohort's PHI terms and builds (or finds) its matcher from them, a cost
    that grows with the cohort; a fixed number of tasks keeps it from growing with the cohort twice.
    """
    return max(BATCH, min(MAX_BATCH, n_files // TASKS))


def _audit_files(
    findings: list[dict[str, Any]],
    dst: Path,
    terms: dict[str, str],
    ocr: bool,
    workers: int | None,
    scheduler: str | None,
    progress: bool,
    *,
    verified: dict[str, str],
    own_dates: dict[str, tuple[str, ...]],
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Audit every file of DST in batches: findings added to ``findings``; per-file facts and counts.

    ``verified`` and ``own_dates`` are what DST's log says per output (:class:`AuditTask`).
    """
    files = list_files(dst)
    term_items = tuple(sorted(terms.items()))
    batches = []
    size = batch_size(len(files))
    for i in range(0, len(files), size):
        relpaths = tuple(files[i : i + size])
        known = tuple((r, verified[r]) for r in relpaths if r in verified)
        dates = tuple((r, own_dates[r]) for r in relpaths if r in own_dates)
        batches.append(AuditTask(str(dst.resolve()), relpaths, term_items, ocr, known, dates))
    facts_all: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for result in map_items(
        audit_batch,
        batches,
        workers=workers,
        scheduler=scheduler,
        desc="audit batches",
        total=len(batches),
        progress=progress,
    ):
        findings.extend(result["findings"])
        facts_all.extend(result["facts"])
        for name in ("n_dicom", "n_other", "n_ocr", "n_ocr_reused", "n_date_coincidences"):
            counts[name] += result[name]
    return facts_all, counts


def _consistency(facts: list[dict[str, Any]], source_uids: set[str], source_patients: set[str]) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = []
    names_of: dict[str, set[str]] = defaultdict(set)
    ids_of: dict[str, set[str]] = defaultdict(set)
    patient_of_study: dict[str, set[str]] = defaultdict(set)
    study_of_series: dict[str, set[str]] = defaultdict(set)
    for f in facts:
        names_of[f["patient_id"]].add(f["patient_name"])
        ids_of[f["patient_name"]].add(f["patient_id"])
        patient_of_study[f["study"]].add(f["patient_id"])
        study_of_series[f["series"]].add(f["study"])
        parts = f["relpath"].split("/")
        expected = [
            f["patient_id"] or "NOPATIENT",
            f["study"] or "NOSTUDY",
            f["series"] or "NOSERIES",
            (f["sop"] or "NOINSTANCE") + ".dcm",
        ]
        if parts != expected:
            findings.append(finding(f["relpath"], "path_mismatch"))
        leaked = sorted(set(f["uids"]) & source_uids)
        if leaked:
            findings.append(finding(f["relpath"], "source_uid_present"))
    for pid, names in names_of.items():
        if len(names) > 1:
            findings.extend(
                finding(f["relpath"], "pseudonym_inconsistent", "(0010,0010)") for f in facts if f["patient_id"] == pid
            )
    for name, ids in ids_of.items():
        if len(ids) > 1:
            findings.extend(
                finding(f["relpath"], "pseudonym_inconsistent", "(0010,0020)")
                for f in facts
                if f["patient_name"] == name
            )
    for study, pids in patient_of_study.items():
        if len(pids) > 1:
            findings.extend(
                finding(f["relpath"], "pseudonym_inconsistent", "(0020,000D)") for f in facts if f["study"] == study
            )
    for series, studies in study_of_series.items():
        if len(studies) > 1:
            findings.extend(
                finding(f["relpath"], "pseudonym_inconsistent", "(0020,000E)") for f in facts if f["series"] == series
            )
    if source_patients and len(names_of) > len(source_patients):
        # one person cannot become two: more pseudonymous patients than source patients is a split
        findings.append(finding("<summary>", "pseudonym_split", "(0010,0020)"))
    return findings


# --- leak counting (benchmarks, comparisons) ---------------------------------------------------
