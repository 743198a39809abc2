"""Independent residual-PHI audit of a de-identified folder.

:func:`audit_folder` (``pacs-workbench audit DST [--source SRC] [--phi-list FILE]``)
trusts nothing the de-identification recorded. It reads what is in DST:

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
  the pixels;
* **pixels**: OCR (detection and recognition) of every image that could carry text
  (the same rules as de-identification); any text read is a finding;
* **pseudonyms**: one Patient's Name per Patient ID and back, one patient per study,
  one study per series, file paths that match the header, references (SEG, RTSTRUCT)
  that point to instances present in DST (reported as a count).

The summary holds counts and, per finding, the pseudonymous file path, a category and
a tag: never the PHI value itself (a file whose name leaks is reported without it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacs_workbench.core.executor import map_items
from pacs_workbench.deid.profile import (
    CODE_TO_OPTION,
    REMOVE_UNLISTED,
    Option,
    Profile,
    iod_family,
    tag_label,
)
from pacs_workbench.deid.text import AUDIT_KINDS, GENERIC_WORDS, iter_identifying_values, phi_variants

MIN_TERM = 4
MIN_BULK_TERM = 8
MIN_NUMERIC_TERM = 6
BATCH = 32
MAX_LISTED_FINDINGS = 2000
UID_RE = re.compile(r"^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*$")
BULK_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
#: Values that stand in for a name or an ID without being one (test data, placeholders):
#: not searched, or they would be "found" in every file.
PLACEHOLDER_WORDS = frozenset(
    {
        "anon", "anonymized", "anonymous", "deleted", "demo", "doctor", "dummy", "example", "family", "first",
        "given", "here", "last", "name", "none", "null", "observer", "operator", "other", "patient", "phantom",
        "physician", "removed", "sample", "test", "tester", "text", "unknown", "verifying",
    }
)  # fmt: skip
_BOUND_L = rb"(?<![a-z0-9])"
_BOUND_R = rb"(?![a-z0-9])"


# --- PHI terms ---------------------------------------------------------------------------------


def _trie_regex(words: Iterable[bytes]) -> bytes:
    """One regex alternation for many byte strings, as a trie (fast for thousands of terms)."""
    trie: dict[Any, Any] = {}
    for word in words:
        node = trie
        for byte in word:
            node = node.setdefault(byte, {})
        node[None] = {}

    def build(node: dict[Any, Any]) -> bytes:
        end = None in node
        branches = [
            re.escape(bytes([b])) + build(child)
            for b, child in sorted((k, v) for k, v in node.items() if k is not None)
        ]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        if end:
            return b"(?:" + body + b")?"
        return body

    return build(trie)


@dataclass
class PhiMatcher:
    """Finds known PHI in bytes; ``kinds`` maps each lower-cased encoded term to its kind."""

    pattern: re.Pattern[bytes] | None
    bulk_pattern: re.Pattern[bytes] | None
    kinds: dict[bytes, str]

    def find(self, data: bytes, *, bulk: bool = False) -> list[tuple[int, str]]:
        """``(offset, kind)`` of each PHI term in ``data`` (case-insensitive)."""
        pattern = self.bulk_pattern if bulk else self.pattern
        if pattern is None or not data:
            return []
        lowered = data.lower()
        return [(m.start(), self.kinds.get(m.group(0), "phi")) for m in pattern.finditer(lowered)]


def usable_term(term: str) -> bool:
    """Whether a PHI term is specific enough to search: four or more characters (six for digits
    alone), three of them letters or digits, and not a placeholder or generic word."""
    text = term.strip()
    low = text.lower()
    # Short digit runs (an ID fragment such as "4374") occur by chance in coordinates and
    # measurements; whole IDs, dates and phone numbers are searched in their longer forms.
    if text.isdigit() and len(text) < MIN_NUMERIC_TERM:
        return False
    return (
        len(text) >= MIN_TERM
        and sum(c.isalnum() for c in text) >= 3
        and low not in PLACEHOLDER_WORDS
        and low not in GENERIC_WORDS
    )


def build_matcher(terms: dict[str, str]) -> PhiMatcher:
    """A :class:`PhiMatcher` for ``{term: kind}`` (UTF-8 and Latin-1 encodings)."""
    kinds: dict[bytes, str] = {}
    for term, kind in terms.items():
        for encoding in ("utf-8", "latin-1"):
            try:
                encoded = term.lower().encode(encoding)
            except UnicodeEncodeError:
                continue
            if len(encoded) >= MIN_TERM:
                kinds.setdefault(encoded, kind)
    if not kinds:
        return PhiMatcher(None, None, {})
    words = sorted(kinds)
    pattern = re.compile(_BOUND_L + b"(?:" + _trie_regex(words) + b")" + _BOUND_R)
    long_words = [w for w in words if len(w) >= MIN_BULK_TERM]
    bulk = re.compile(_BOUND_L + b"(?:" + _trie_regex(long_words) + b")" + _BOUND_R) if long_words else None
    return PhiMatcher(pattern, bulk, kinds)


def phi_terms_from_list(path: str | os.PathLike[str]) -> dict[str, str]:
    """Terms (with variants) from a text file of known PHI strings, one a line."""
    terms: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        for variant in [value, *phi_variants(value, "auto", min_component=MIN_TERM)]:
            if usable_term(variant):
                terms.setdefault(variant, "listed")
    return terms


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


def _iter_uids(ds: Any) -> Iterator[str]:
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
                yield from _iter_uids(item)
        elif vr == "UI":
            for text in _values(ds[tag].value):
                text = text.rstrip("\x00")
                if text:
                    yield text


def source_facts(path: str) -> dict[str, Any]:
    """PHI terms, instance UIDs and patient identity of one source file (for the audit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _source_facts(path)


def _source_facts(path: str) -> dict[str, Any]:
    from pacs_workbench.deid.engine import is_well_known_uid, patient_identity

    try:
        ds = _read_header(Path(path).read_bytes())
    except Exception:  # a source file that is not DICOM holds no header PHI
        return {"terms": {}, "uids": [], "patient": None, "kept": []}
    terms: dict[str, str] = {}
    for kind, value in iter_identifying_values(ds):
        if kind not in AUDIT_KINDS:
            continue
        for variant in [value, *phi_variants(value, kind, min_component=MIN_TERM)]:
            if usable_term(variant):
                terms.setdefault(variant.strip(), kind)
    uids = sorted({u for u in _iter_uids(ds) if not is_well_known_uid(u)})
    return {"terms": terms, "uids": uids, "patient": patient_identity(ds) or None, "kept": _kept_values(ds)}


def _kept_values(ds: Any) -> list[str]:
    """Lower-cased values of top-level keep-list attributes (e.g. Manufacturer): the
    profile keeps them, so a "PHI" term equal to one of them is not a leak."""
    from pacs_workbench.deid.profile import load_keep_list

    keep = load_keep_list()
    out: set[str] = set()
    for tag in list(ds.keys()):
        if int(tag) not in keep.tags or int(tag) in keep.free_text:
            continue
        raw = ds.get_item(tag)
        if raw is None or getattr(raw, "VR", None) in ("SQ", "OB", "OW", "UN"):
            continue
        try:
            values = _values(ds[tag].value)
        except Exception:  # an unreadable value keeps nothing
            continue
        out.update(v.strip().lower() for v in values if isinstance(v, str) and len(v.strip()) >= MIN_TERM)
    return sorted(out)


# --- per-file checks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditTask:
    """A batch of files for one worker; the matcher's terms travel with it (in memory only)."""

    root: str
    relpaths: tuple[str, ...]
    terms: tuple[tuple[str, str], ...]
    ocr: bool


@dataclass
class FileFacts:
    """What the audit learnt about one DICOM file in DST."""

    relpath: str
    patient_id: str = ""
    patient_name: str = ""
    study: str = ""
    series: str = ""
    sop: str = ""
    references: list[str] = field(default_factory=list)
    uids: list[str] = field(default_factory=list)
    ocr_checked: bool = False


_MATCHERS: dict[str, PhiMatcher] = {}


def _matcher_for(terms: tuple[tuple[str, str], ...]) -> PhiMatcher:
    digest = hashlib.sha256(json.dumps(terms).encode()).hexdigest()
    matcher = _MATCHERS.get(digest)
    if matcher is None:
        _MATCHERS.clear()
        matcher = build_matcher(dict(terms))
        _MATCHERS[digest] = matcher
    return matcher


def _finding(relpath: str, category: str, tag: str | None = None) -> dict[str, Any]:
    return {"file": relpath, "category": category, "tag": tag}


def _options_of(ds: Any) -> frozenset[Option]:
    codes = {str(item.get("CodeValue", "")) for item in ds.get("DeidentificationMethodCodeSequence", []) or []}
    return frozenset(CODE_TO_OPTION[c] for c in codes if c in CODE_TO_OPTION)


def _check_elements(
    ds: Any,
    profile: Profile,
    family: str | None,
    nested: bool,
    relpath: str,
    findings: list[dict[str, Any]],
    uids: list[str],
    refs: list[str],
) -> None:
    from pydicom.datadict import dictionary_VR

    creators: dict[tuple[int, int], str] = {}
    for tag in list(ds.keys()):
        group, element = tag >> 16, tag & 0xFFFF
        if group % 2 == 1 and 0x10 <= element <= 0xFF:
            creators[(group, element)] = str(ds[tag].value or "").strip(" \x00")
    for tag in list(ds.keys()):
        group, element = tag >> 16, tag & 0xFFFF
        raw = ds.get_item(tag)
        vr = raw.VR
        label = tag_label(tag)
        if vr and _vr_mismatch(tag, vr):
            # the profile's action depends on the type: a date stored as a number is not shifted
            findings.append(_finding(relpath, "vr_mismatch", label))
            continue
        if not vr or " or " in vr:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = "UN"
        if group % 2 == 1:
            if element <= 0xFF:
                continue
            creator = creators.get((group, element >> 8))
            if profile.safe_private(creator, tag) is None:
                findings.append(_finding(relpath, "private_element", label))
                continue
        else:
            action = profile.action(tag, family, nested)
            if action in ("X", REMOVE_UNLISTED):
                findings.append(_finding(relpath, "profile_violation", label))
                continue
            if action == "U" and vr == "UI" and Option.RETAIN_UIDS not in profile.options:
                for value in _values(ds[tag].value):
                    if value and not value.startswith("2.25."):
                        findings.append(_finding(relpath, "uid_not_replaced", label))
        if vr == "SQ":
            for item in ds[tag].value or []:
                _check_elements(item, profile, family, True, relpath, findings, uids, refs)
        elif vr == "UI":
            for value in _values(ds[tag].value):
                if not value:
                    continue
                if len(value) > 64 or not UID_RE.match(value):
                    findings.append(_finding(relpath, "uid_invalid", label))
                uids.append(value)
                if tag == 0x00081155:  # Referenced SOP Instance UID
                    refs.append(value)


def _vr_mismatch(tag: int, vr: str) -> bool:
    """Whether an encoded ``vr`` is not a DICOM VR, or not the dictionary VR of a public ``tag``."""
    from pacs_workbench.dicom.raw import VALID_VRS, dictionary_vrs

    if " or " in vr:
        return False  # pydicom's own ambiguous VR: nothing was encoded
    if vr not in VALID_VRS:
        return True
    if (tag >> 16) % 2 == 1 or tag & 0xFFFF == 0 or vr == "UN":
        return False
    allowed = dictionary_vrs(tag)
    return allowed is not None and vr not in allowed


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value.decode("latin-1") if isinstance(value, bytes) else value.strip()]
    try:
        return [str(v).strip() for v in value]
    except TypeError:
        return [str(value)]


def _bulk_ranges(ds: Any, size: int) -> list[tuple[int, int]]:
    """Byte ranges of top-level bulk values (Pixel Data, other OB/OW) in the file."""
    elements = []
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        tell = getattr(raw, "value_tell", None)
        if tell is not None:
            elements.append((int(tell), tag, raw))
    elements.sort(key=lambda e: e[0])
    out = []
    for i, (tell, tag, raw) in enumerate(elements):
        length = getattr(raw, "length", None)
        vr = getattr(raw, "VR", None)
        if length is None or (vr not in BULK_VRS and tag != 0x7FE00010):
            continue
        if length == 0xFFFFFFFF:  # encapsulated: runs to the next element (or the end)
            end = elements[i + 1][0] - 12 if i + 1 < len(elements) else size
        else:
            end = tell + int(length)
        if end - tell >= 256:
            out.append((tell, min(end, size)))
    return out


def _locate(ds: Any, offset: int) -> str | None:
    best = None
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        tell = getattr(raw, "value_tell", None)
        if tell is not None and tell <= offset:
            best = tag
    return tag_label(best) if best is not None else None


def _ocr_findings(ds: Any, relpath: str) -> tuple[list[dict[str, Any]], bool]:
    from pacs_workbench.deid.pixels import (
        PixelCleaningError,
        _frames_array,
        _sample_frames,
        assess_pixel_risk,
        read_text,
        render_frame,
    )

    if not assess_pixel_risk(ds):
        return [], False
    try:
        arr = _frames_array(ds)
    except PixelCleaningError:
        return [_finding(relpath, "ocr_unchecked", "(7FE0,0010)")], False
    photometric = str(ds.PhotometricInterpretation).strip()
    photometric = "RGB" if photometric.startswith("YBR") else photometric
    out = []
    for i in _sample_frames(arr.shape[0]):
        try:
            lines = read_text(render_frame(arr[i], photometric))
        except Exception:  # an image that cannot be read by OCR is not shown clean
            return [_finding(relpath, "ocr_unchecked", "(7FE0,0010)")], True
        # any line read with some confidence and a letter or digit in it counts as text
        if any(score >= 0.5 and any(c.isalnum() for c in text) for _, text, score in lines):
            out.append(_finding(relpath, "ocr_text", "(7FE0,0010)"))
            break
    return out, True


def audit_batch(task: AuditTask) -> dict[str, Any]:
    """Audit a batch of files in DST; returns findings and per-file facts (no PHI values)."""
    with warnings.catch_warnings():
        # pydicom warns about each non-conforming value; the findings say what matters
        warnings.simplefilter("ignore")
        return _audit_batch(task)


def _audit_batch(task: AuditTask) -> dict[str, Any]:
    import pydicom

    matcher = _matcher_for(task.terms)
    findings: list[dict[str, Any]] = []
    facts: list[FileFacts] = []
    n_dicom = n_other = n_ocr = 0
    root = Path(task.root)
    for relpath in task.relpaths:
        try:
            data = (root / relpath).read_bytes()
        except OSError:
            findings.append(_finding(relpath, "unreadable_file"))
            continue
        ds = None
        if relpath.endswith(".dcm") or data[128:132] == b"DICM":
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(io.BytesIO(data))
            except Exception:  # a .dcm in DST that is not DICOM is itself a finding
                findings.append(_finding(relpath, "not_dicom"))
        bulk = _bulk_ranges(ds, len(data)) if ds is not None else []
        # bytes outside bulk values: every term; inside: long terms only
        cursor = 0
        pieces: list[tuple[int, bytes, bool]] = []
        for start, end in sorted(bulk):
            pieces.append((cursor, data[cursor:start], False))
            pieces.append((start, data[start:end], True))
            cursor = end
        pieces.append((cursor, data[cursor:], False))
        for base, chunk, is_bulk in pieces:
            for offset, _kind in matcher.find(chunk, bulk=is_bulk):
                tag = _locate(ds, base + offset) if ds is not None else None
                findings.append(_finding(relpath, "phi_bytes", tag))
        if ds is None:
            n_other += 1
            continue
        n_dicom += 1
        file_findings: list[dict[str, Any]] = []
        options = _options_of(ds)
        if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES" or "DeidentificationMethodCodeSequence" not in ds:
            file_findings.append(_finding(relpath, "markers_missing", "(0012,0062)"))
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            file_findings.append(_finding(relpath, "burned_in_flag", "(0028,0301)"))
        profile = Profile(options)
        uids: list[str] = []
        refs: list[str] = []
        try:
            _check_elements(ds, profile, iod_family(ds.get("SOPClassUID")), False, relpath, file_findings, uids, refs)
        except Exception:
            file_findings.append(_finding(relpath, "unparseable_element"))
        if task.ocr:
            ocr, checked = _ocr_findings(ds, relpath)
            file_findings.extend(ocr)
            n_ocr += int(checked)
        findings.extend(file_findings)
        facts.append(
            FileFacts(
                relpath=relpath,
                patient_id=str(ds.get("PatientID", "")),
                patient_name=str(ds.get("PatientName", "")),
                study=str(ds.get("StudyInstanceUID", "")),
                series=str(ds.get("SeriesInstanceUID", "")),
                sop=str(ds.get("SOPInstanceUID", "")),
                references=sorted(set(refs)),
                uids=sorted(set(uids)),
            )
        )
    return {
        "findings": findings,
        "facts": [f.__dict__ for f in facts],
        "n_dicom": n_dicom,
        "n_other": n_other,
        "n_ocr": n_ocr,
    }


# --- folder ------------------------------------------------------------------------------------


def _list_files(dst: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(dst):
        dirs.sort()
        for name in sorted(files):
            out.append((Path(root) / name).relative_to(dst).as_posix())
    return out


def _list_names(dst: Path) -> list[str]:
    out = set()
    for rel in _list_files(dst):
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

    Returns
    -------
    dict
        ``files_checked``, ``other_files_checked``, ``images_ocr_checked``,
        ``phi_terms``, ``findings_by_category``, ``findings`` (file, category, tag),
        ``dangling_references``, ``ok``. Counts and pseudonymous paths only.
    """
    from pacs_workbench.deid.engine import is_well_known_uid
    from pacs_workbench.deid.run import iter_input_files

    dst_path = Path(dst)
    if not dst_path.is_dir():
        raise FileNotFoundError(f"not a folder: {dst_path}")
    terms: dict[str, str] = {}
    source_uids: set[str] = set()
    source_patients: set[str] = set()
    kept: set[str] = set()
    if phi_list is not None:
        terms.update(phi_terms_from_list(phi_list))
    if source is not None:
        paths = [str(p) for p in iter_input_files(Path(source))]
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
            source_uids.update(facts["uids"])
            if facts["patient"]:
                source_patients.add(facts["patient"])

    terms = {t: k for t, k in terms.items() if t.strip().lower() not in kept}
    findings: list[dict[str, Any]] = []
    names_matcher = build_matcher(terms)
    leaked_names = 0
    for name in _list_names(dst_path):
        component = name.rsplit("/", 1)[-1].encode("utf-8", "replace")
        if names_matcher.find(component):
            leaked_names += 1
            # the path itself is withheld: it holds PHI
            findings.append(_finding(f"<name withheld #{leaked_names}>", "phi_filename"))

    files = _list_files(dst_path)
    term_items = tuple(sorted(terms.items()))
    batches = [
        AuditTask(str(dst_path.resolve()), tuple(files[i : i + BATCH]), term_items, ocr)
        for i in range(0, len(files), BATCH)
    ]
    facts_all: list[dict[str, Any]] = []
    n_dicom = n_other = n_ocr = 0
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
        n_dicom += result["n_dicom"]
        n_other += result["n_other"]
        n_ocr += result["n_ocr"]
    # withheld names: never echo a leaking path in another finding either
    if leaked_names:
        for f in findings:
            if names_matcher.find(str(f["file"]).encode("utf-8", "replace")):
                f["file"] = "<name withheld>"

    findings.extend(_consistency(facts_all, source_uids, source_patients))
    sop_set = {f["sop"] for f in facts_all} | {f["study"] for f in facts_all} | {f["series"] for f in facts_all}
    dangling = sum(1 for f in facts_all for r in f["references"] if r not in sop_set and not is_well_known_uid(r))
    findings.sort(key=lambda f: (f["category"], f["file"], f["tag"] or ""))
    by_category = Counter(f["category"] for f in findings)
    return {
        "files_checked": n_dicom,
        "other_files_checked": n_other,
        "images_ocr_checked": n_ocr,
        "phi_terms": len(terms),
        "source_given": source is not None,
        "findings_by_category": dict(sorted(by_category.items())),
        "n_findings": len(findings),
        "findings": findings[:MAX_LISTED_FINDINGS],
        "dangling_references": dangling,
        "checks": ["profile", "uids", "bytes", "file names", *(["ocr"] if ocr else []), "pseudonyms"],
        "ok": not findings,
    }


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
            findings.append(_finding(f["relpath"], "path_mismatch"))
        leaked = sorted(set(f["uids"]) & source_uids)
        if leaked:
            findings.append(_finding(f["relpath"], "source_uid_present"))
    for pid, names in names_of.items():
        if len(names) > 1:
            findings.extend(
                _finding(f["relpath"], "pseudonym_inconsistent", "(0010,0010)") for f in facts if f["patient_id"] == pid
            )
    for name, ids in ids_of.items():
        if len(ids) > 1:
            findings.extend(
                _finding(f["relpath"], "pseudonym_inconsistent", "(0010,0020)")
                for f in facts
                if f["patient_name"] == name
            )
    for study, pids in patient_of_study.items():
        if len(pids) > 1:
            findings.extend(
                _finding(f["relpath"], "pseudonym_inconsistent", "(0020,000D)") for f in facts if f["study"] == study
            )
    for series, studies in study_of_series.items():
        if len(studies) > 1:
            findings.extend(
                _finding(f["relpath"], "pseudonym_inconsistent", "(0020,000E)") for f in facts if f["series"] == series
            )
    if source_patients and len(names_of) > len(source_patients):
        # one person cannot become two: more pseudonymous patients than source patients is a split
        findings.append(_finding("<summary>", "pseudonym_split", "(0010,0020)"))
    return findings


# --- leak counting (benchmarks, comparisons) ---------------------------------------------------


@dataclass(frozen=True)
class _LeakTask:
    root: str
    relpaths: tuple[str, ...]
    terms: tuple[tuple[str, str], ...]
    ocr: bool


def _normalized(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _leak_batch(task: _LeakTask) -> set[str]:
    """Ids of the PHI strings found in a batch of files (bytes, or OCR text of their pixels)."""
    import pydicom

    from pacs_workbench.deid.pixels import (
        PixelCleaningError,
        _frames_array,
        _sample_frames,
        assess_pixel_risk,
        read_text,
        render_frame,
    )

    matcher = _matcher_for(task.terms)
    ocr_terms = [(_normalized(term), ident) for term, ident in task.terms if len(_normalized(term)) >= MIN_TERM]
    found: set[str] = set()
    root = Path(task.root)
    for relpath in task.relpaths:
        data = (root / relpath).read_bytes()
        ds = None
        if data[128:132] == b"DICM":
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(io.BytesIO(data))
            except Exception:  # unreadable: still searched as bytes
                ds = None
        bulk = _bulk_ranges(ds, len(data)) if ds is not None else []
        cursor = 0
        for start, end in sorted(bulk):
            found.update(kind for _, kind in matcher.find(data[cursor:start]))
            found.update(kind for _, kind in matcher.find(data[start:end], bulk=True))
            cursor = end
        found.update(kind for _, kind in matcher.find(data[cursor:]))
        if not task.ocr or ds is None or not assess_pixel_risk(ds):
            continue
        try:
            arr = _frames_array(ds)
        except PixelCleaningError:
            continue
        photometric = str(ds.PhotometricInterpretation).strip()
        photometric = "RGB" if photometric.startswith("YBR") else photometric
        for i in _sample_frames(arr.shape[0]):
            text = _normalized(" ".join(t for _, t, _ in read_text(render_frame(arr[i], photometric))))
            found.update(ident for term, ident in ocr_terms if term in text)
    return found


def leaked_phi_strings(
    dst: str | os.PathLike[str],
    phi_list: str | os.PathLike[str],
    *,
    ocr: bool = True,
    workers: int | None = 1,
    progress: bool = False,
) -> dict[str, int]:
    """How many strings of a PHI list can still be found in a folder (any tool's output).

    A string counts as leaked when one of its variants occurs in the bytes of any file,
    in a file or folder name, or in the OCR text of an image that could carry text.
    Used to compare de-identification tools; returns counts only.
    """
    root = Path(dst)
    lines = [v.strip() for v in Path(phi_list).read_text(encoding="utf-8").splitlines() if v.strip()]
    terms: dict[str, str] = {}
    for i, value in enumerate(lines):
        for variant in {value, *phi_variants(value, "auto", min_component=MIN_TERM)}:
            if usable_term(variant):
                terms.setdefault(variant, f"L{i}")
    matcher = build_matcher(terms)
    found: set[str] = set()
    for name in _list_names(root):
        found.update(kind for _, kind in matcher.find(name.rsplit("/", 1)[-1].encode("utf-8", "replace")))
    files = _list_files(root)
    items = tuple(sorted(terms.items()))
    tasks = [
        _LeakTask(str(root.resolve()), tuple(files[i : i + BATCH]), items, ocr) for i in range(0, len(files), BATCH)
    ]
    for result in map_items(
        _leak_batch, tasks, workers=workers, desc="leak check", total=len(tasks), progress=progress
    ):
        found |= result
    return {"phi_strings": len(lines), "leaked": len(found)}
