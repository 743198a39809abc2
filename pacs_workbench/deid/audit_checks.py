"""The audit's checks of one de-identified file (see :mod:`~pacs_workbench.deid.audit`).

:func:`audit_batch` reads each file of a batch (:class:`AuditTask`) and reports, as
findings that hold a pseudonymous path, a category and a tag but never a value: known
PHI in its bytes, the header against the profile the file declares (removed and
private elements, markers, VRs, UIDs), and OCR text in images that could carry it.
What it learns for the folder-level checks comes back as :class:`FileFacts`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pacs_workbench.deid.phi_match import (
    matcher_for,
    read_dicom,
    search_file,
)
from pacs_workbench.deid.profile import (
    CODE_TO_OPTION,
    REMOVE_UNLISTED,
    Option,
    Profile,
    iod_family,
    tag_label,
)

UID_RE = re.compile(r"^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*$")


@dataclass(frozen=True)
class AuditTask:
    """A batch of files for one worker; the matcher's terms travel with it (in memory only)."""

    root: str
    relpaths: tuple[str, ...]
    terms: tuple[tuple[str, str], ...]
    ocr: bool
    #: ``(relpath, Pixel Data SHA-256)`` of images the de-identification's last OCR check found
    #: free of text: the audit reads such an image again only when its pixels changed.
    verified: tuple[tuple[str, str], ...] = ()
    #: ``(relpath, dates of its own source files)`` for the files the de-identification's
    #: log traces to a source: see :func:`shifted_date_coincidence`.
    own_dates: tuple[tuple[str, tuple[str, ...]], ...] = ()


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


def finding(relpath: str, category: str, tag: str | None = None) -> dict[str, Any]:
    return {"file": relpath, "category": category, "tag": tag}


@lru_cache(maxsize=16)
def _profile(options: frozenset[Option]) -> Profile:
    """One :class:`Profile` per option set and process: building one tabulates every row, and
    its action cache fills as files are checked."""
    return Profile(options)


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
            findings.append(finding(relpath, "vr_mismatch", label))
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
                findings.append(finding(relpath, "private_element", label))
                continue
        else:
            action = profile.action(tag, family, nested)
            if action in ("X", REMOVE_UNLISTED):
                findings.append(finding(relpath, "profile_violation", label))
                continue
            if action == "U" and vr == "UI" and Option.RETAIN_UIDS not in profile.options:
                for value in element_texts(ds[tag].value):
                    if value and not value.startswith("2.25."):
                        findings.append(finding(relpath, "uid_not_replaced", label))
        if vr == "SQ":
            for item in ds[tag].value or []:
                _check_elements(item, profile, family, True, relpath, findings, uids, refs)
        elif vr == "UI":
            for value in element_texts(ds[tag].value):
                if not value:
                    continue
                if len(value) > 64 or not UID_RE.match(value):
                    findings.append(finding(relpath, "uid_invalid", label))
                uids.append(value)
                if tag == 0x00081155:  # Referenced SOP Instance UID
                    refs.append(value)


def _vr_mismatch(tag: int, vr: str) -> bool:
    """Whether an encoded ``vr`` is not a DICOM VR, or not the dictionary VR of a public ``tag``."""
    from pacs_workbench.dicom.raw import vr_problem

    if " or " in vr:
        return False  # pydicom's own ambiguous VR: nothing was encoded
    return vr_problem(tag, vr) is not None


def element_texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value.decode("latin-1") if isinstance(value, bytes) else value.strip()]
    try:
        return [str(v).strip() for v in value]
    except TypeError:
        return [str(value)]


def _element_at(ds: Any, offset: int) -> Any:
    """The top-level tag whose element is the last to start at or before ``offset`` (``None``: none)."""
    best = None
    for tag in list(ds.keys()):
        tell = getattr(ds.get_item(tag), "value_tell", None)
        if tell is not None and tell <= offset:
            best = tag
    return best


def shifted_date_coincidence(ds: Any, tag: Any, offset: int, own_dates: tuple[str, ...]) -> bool:
    """Whether a PHI term found at ``offset`` is a shifted date that only equals someone else's.

    A date element's value that is none of the dates the file's own source files hold (at any
    depth, birth dates in every form) was changed from them, by the date shift: with thousands
    of patients a shifted study date lands on another patient's (0010,0030) Patient's Birth
    Date, or an 8-digit ID, by chance. A term in any other element, or in a date element
    holding one of the file's own source dates, stays a finding.
    ``tag`` is the top-level element at ``offset`` (:func:`_element_at`); its raw value is read
    without converting the element, which would lose the offsets later findings are located by.
    """
    raw = ds.get_item(tag) if tag is not None else None
    if raw is None or getattr(raw, "VR", None) not in ("DA", "DT") or not isinstance(raw.value, bytes):
        return False
    if getattr(raw, "value_tell", None) is None or offset >= int(raw.value_tell) + int(raw.length):
        return False
    values = raw.value.decode("latin-1").split("\\")
    return not any(date in value for value in values for date in own_dates)


def _ocr_findings(ds: Any, relpath: str, verified_sha256: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """OCR findings of one image and how it was checked: ``""`` (needs no check), ``"ocr"`` or
    ``"reused"`` (its Pixel Data has the hash the de-identification verified free of text)."""
    from pacs_workbench.deid.pixels import (
        PixelCleaningError,
        assess_pixel_risk,
        decoded_frames,
        pixel_data_sha256,
        read_text,
        render_frame,
        sample_frames,
    )

    if not assess_pixel_risk(ds):
        return [], ""
    if verified_sha256 and pixel_data_sha256(ds) == verified_sha256:
        return [], "reused"
    try:
        arr, photometric = decoded_frames(ds)
    except PixelCleaningError:
        return [finding(relpath, "ocr_unchecked", "(7FE0,0010)")], ""
    out = []
    for i in sample_frames(arr.shape[0]):
        try:
            lines = read_text(render_frame(arr[i], photometric))
        except Exception:  # an image that cannot be read by OCR is not shown clean
            return [finding(relpath, "ocr_unchecked", "(7FE0,0010)")], "ocr"
        # any line read with some confidence and a letter or digit in it counts as text
        if any(score >= 0.5 and any(c.isalnum() for c in text) for _, text, score in lines):
            out.append(finding(relpath, "ocr_text", "(7FE0,0010)"))
            break
    return out, "ocr"


def audit_batch(task: AuditTask) -> dict[str, Any]:
    """Audit a batch of files in DST; returns findings and per-file facts (no PHI values)."""
    with warnings.catch_warnings():
        # pydicom warns about each non-conforming value; the findings say what matters
        warnings.simplefilter("ignore")
        return _audit_batch(task)


def _audit_batch(task: AuditTask) -> dict[str, Any]:
    matcher = matcher_for(task.terms)
    findings: list[dict[str, Any]] = []
    facts: list[FileFacts] = []
    n_dicom = n_other = n_ocr = n_reused = n_coincidences = 0
    verified = dict(task.verified)
    own_dates = dict(task.own_dates)
    root = Path(task.root)
    for relpath in task.relpaths:
        try:
            data = (root / relpath).read_bytes()
        except OSError:
            findings.append(finding(relpath, "unreadable_file"))
            continue
        ds = None
        if relpath.endswith(".dcm") or data[128:132] == b"DICM":
            try:
                ds = read_dicom(data)
            except Exception:  # a .dcm in DST that is not DICOM is itself a finding
                findings.append(finding(relpath, "not_dicom"))
        own = own_dates.get(relpath)
        for offset, _kind in search_file(matcher, data, ds):
            tag = _element_at(ds, offset) if ds is not None else None
            if own is not None and shifted_date_coincidence(ds, tag, offset, own):
                n_coincidences += 1
                continue
            findings.append(finding(relpath, "phi_bytes", tag_label(tag) if tag is not None else None))
        if ds is None:
            n_other += 1
            continue
        n_dicom += 1
        file_findings: list[dict[str, Any]] = []
        options = _options_of(ds)
        if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES" or "DeidentificationMethodCodeSequence" not in ds:
            file_findings.append(finding(relpath, "markers_missing", "(0012,0062)"))
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            file_findings.append(finding(relpath, "burned_in_flag", "(0028,0301)"))
        profile = _profile(options)
        uids: list[str] = []
        refs: list[str] = []
        try:
            _check_elements(ds, profile, iod_family(ds.get("SOPClassUID")), False, relpath, file_findings, uids, refs)
        except Exception:
            file_findings.append(finding(relpath, "unparseable_element"))
        if task.ocr:
            ocr, how = _ocr_findings(ds, relpath, verified.get(relpath))
            file_findings.extend(ocr)
            n_ocr += int(how == "ocr")
            n_reused += int(how == "reused")
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
        "n_ocr_reused": n_reused,
        "n_date_coincidences": n_coincidences,
    }
