"""Plain Python values of selected attributes of one file: the fast path first, pydicom otherwise.

:func:`read_tag_values` (by tag) and :func:`read_values` (by keyword) read a few top-level
attributes of one file with :func:`~pacs_workbench.dicom.scan.scan_header` when it applies
and with :func:`~pacs_workbench.dicom.read.read_header` otherwise; both paths apply the same
checks (:func:`validate_scan` for the fast one) and convert values with
:func:`~pacs_workbench.dicom.read.raw_to_python` (:func:`scan_values`), so the result does
not depend on which path read the file. :func:`dataset_values` does the same for selected
elements of a pydicom data set.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from pacs_workbench.dicom.read import (
    CHARSET_TAG,
    SOP_CLASS_TAG,
    SOP_INSTANCE_TAG,
    TEXT_CHARSET,
    TEXT_DEFAULT,
    DicomReadError,
    EmptyFileError,
    PathLike,
    TruncatedDicomError,
    check_identity,
    describe_os_error,
    encodings_from_raw,
    first_text,
    meta_text,
    open_anonymous,
    raw_to_python,
    read_open,
    split_text,
    tags_for_keywords,
    to_python,
)
from pacs_workbench.dicom.scan import HeaderScan, scan_header


def validate_scan(scan: HeaderScan) -> None:
    """Apply :func:`read_header`'s checks to a :func:`~pacs_workbench.dicom.scan.scan_header` result.

    Identity first, then Pixel Data truncation.

    Raises
    ------
    UnidentifiedDicomError, TruncatedDicomError
    """
    check_identity(
        first_text(_scan_value(scan, SOP_CLASS_TAG)),
        first_text(_scan_value(scan, SOP_INSTANCE_TAG)),
        scan.media_sop_class,
        scan.media_sop_instance,
        part10=True,
    )
    if scan.pixel_problem:
        raise TruncatedDicomError(scan.pixel_problem)


def _scan_value(scan: HeaderScan, tag: int) -> Any:
    raw = scan.elements.get(tag)
    if raw is None:
        return None
    return raw_to_python(tag, raw[0], raw[1], is_implicit_vr=scan.implicit_vr)


def scan_values(scan: HeaderScan) -> dict[int, Any]:
    """Every element of a scan converted with :func:`raw_to_python` (with its Specific Character Set)."""
    charset = scan.elements.get(CHARSET_TAG)
    encodings = encodings_from_raw(charset[1]) if charset else None
    out: dict[int, Any] = {}
    for tag, (vr, value) in scan.elements.items():
        # Inline the commonest case of raw_to_python (same result): plain ASCII text.
        if value and (vr in TEXT_DEFAULT or (vr in TEXT_CHARSET and value.isascii() and b"\x1b" not in value)):
            out[tag] = split_text(value.decode("latin-1"), vr)
        else:
            out[tag] = raw_to_python(tag, vr, value, is_implicit_vr=scan.implicit_vr, encodings=encodings)
    return out


@dataclass(frozen=True)
class HeaderValues:
    """Plain Python values of selected tags of one file, from :func:`read_tag_values`.

    Attributes
    ----------
    values
        ``tag -> value`` for the requested tags present in the file.
    transfer_syntax, media_sop_class, media_sop_instance
        (0002,0010), (0002,0002) and (0002,0003) from the File Meta Information.
    size, mtime_ns
        ``os.fstat`` of the file as it was read.
    fast
        Whether :func:`scan_header` read it (``False``: pydicom did).
    """

    values: dict[int, Any]
    transfer_syntax: str | None
    media_sop_class: str | None
    media_sop_instance: str | None
    size: int
    mtime_ns: int
    fast: bool


def read_tag_values(path: PathLike, tags: Collection[int]) -> HeaderValues:
    """Read selected top-level tags of one file: fast path, else :func:`read_header`.

    Both paths apply the same checks (empty, not DICOM, truncated, unidentified) and
    convert values with :func:`raw_to_python`, so the result does not depend on which
    path read the file.

    Raises
    ------
    DicomReadError
        Or a subclass, with a message that never quotes the path.
    """
    try:
        handle = open_anonymous(path)
    except OSError as error:
        raise DicomReadError(describe_os_error(error)) from None
    try:
        with handle:
            stat = os.fstat(handle.fileno())
            size = stat.st_size
            if size == 0:
                raise EmptyFileError("empty file")
            scan = scan_header(handle, size, tags)
            if scan is not None:
                validate_scan(scan)
                return HeaderValues(
                    values=scan_values(scan),
                    transfer_syntax=scan.transfer_syntax,
                    media_sop_class=scan.media_sop_class,
                    media_sop_instance=scan.media_sop_instance,
                    size=size,
                    mtime_ns=stat.st_mtime_ns,
                    fast=True,
                )
            handle.seek(0)
            head = handle.read(132)
            handle.seek(0)
            ds = read_open(handle, size, head, True, list(tags))
    except OSError as error:
        raise DicomReadError(describe_os_error(error)) from None
    return HeaderValues(
        values=_values_by_tag(ds, tags),
        transfer_syntax=meta_text(ds, "TransferSyntaxUID"),
        media_sop_class=meta_text(ds, "MediaStorageSOPClassUID"),
        media_sop_instance=meta_text(ds, "MediaStorageSOPInstanceUID"),
        size=size,
        mtime_ns=stat.st_mtime_ns,
        fast=False,
    )


def read_values(
    path: PathLike, keywords: Iterable[str], *, convert: Callable[[Any], Any] = to_python
) -> dict[str, Any]:
    """Read a few attributes of one file as plain Python, keyed by keyword.

    Uses the fast path when it applies, :func:`read_header` otherwise; raises
    :class:`DicomReadError` like :func:`read_header`. Missing attributes give ``None``.
    """
    keyword_tags = tags_for_keywords(keywords)
    header = read_tag_values(path, keyword_tags.values())
    return {k: convert(header.values.get(t)) for k, t in keyword_tags.items()}


def dataset_values(ds: Dataset, keyword_tags: Mapping[str, int]) -> dict[str, Any]:
    """Plain Python values of selected top-level elements of a pydicom data set.

    Raw elements (as read from a file) are converted with :func:`raw_to_python`, the
    same conversion the fast path uses; elements already converted (built in memory,
    or from the DICOM JSON model) go through :func:`to_python`. A value that cannot be
    converted, and an empty one, give ``None``.
    """
    by_tag = _values_by_tag(ds, keyword_tags.values())
    return {keyword: by_tag.get(tag) for keyword, tag in keyword_tags.items()}


def _values_by_tag(ds: Dataset, tags: Iterable[int]) -> dict[int, Any]:
    encodings: list[str] | None = None
    charset = ds._dict.get(pydicom.tag.BaseTag(CHARSET_TAG))
    if isinstance(charset, RawDataElement):
        encodings = encodings_from_raw(charset.value)
    elif isinstance(charset, DataElement) and charset.value:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                encodings = list(convert_encodings(charset.value))
            except Exception:  # unknown character set: the default repertoire applies
                encodings = None
    out: dict[int, Any] = {}
    for tag in tags:
        elem = ds._dict.get(pydicom.tag.BaseTag(tag))
        if elem is None:
            continue
        if isinstance(elem, RawDataElement):
            value = raw_to_python(
                tag,
                elem.VR,
                elem.value,
                is_little_endian=elem.is_little_endian,
                is_implicit_vr=elem.is_implicit_VR,
                encodings=encodings,
            )
        else:
            try:
                value = to_python(elem.value)
            except Exception:  # a value pydicom cannot convert is unknown, not fatal
                value = None
            if value == "" or value == []:
                value = None
        if value is not None:
            out[tag] = value
    return out
