"""Tolerant DICOM reading with pydicom.

Every stage that opens DICOM files goes through this module (or the fast path of
:mod:`~pacs_workbench.dicom.values` built on it) so that a bad file fails the same way
everywhere: with a :class:`DicomReadError` (or one of its subclasses) whose message says
what is wrong, never with a stray ``struct.error`` halfway through a crawl.

:func:`read_header` reads a file with pydicom (forcing only after
:func:`~pacs_workbench.dicom.raw.sniff_dicom` said the bytes look like DICOM), then checks
what pydicom does not: truncation (an element or the Pixel Data running past the end of
the file, :func:`~pacs_workbench.dicom.scan.pixel_data_problem`) and identity
(:func:`check_identity`: a parsed data set must carry a syntactically valid (0008,0016)
SOP Class UID or (0008,0018) SOP Instance UID, or their (0002,0002)/(0002,0003) File Meta
counterparts), so random bytes that happen to parse never pass as an instance.

:func:`raw_to_python` converts the raw bytes of one element (for pydicom's raw elements
and the fast path alike, so both give the same values); :func:`to_python` turns pydicom
values into plain, JSON-able Python values; :func:`tags_for_keywords` and
:func:`is_valid_uid` are small helpers around the data dictionary and UID syntax.

pydicom warnings quote file names and element values, which may be identifying; the
readers here capture them instead of letting them reach a log, and the ``pydicom``
logger does not propagate to the root logger once this module is imported.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import struct
import warnings
import zlib
from collections.abc import Collection, Iterable
from typing import Any, BinaryIO

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import IS, DSdecimal, DSfloat, PersonName

from pacs_workbench.dicom.raw import DEFLATED_LE, UNDEFINED, dictionary_vr, sniff_dicom
from pacs_workbench.dicom.scan import pixel_data_problem

__all__ = [
    "DicomReadError",
    "EmptyFileError",
    "NotDicomError",
    "TruncatedDicomError",
    "UnidentifiedDicomError",
    "check_identity",
    "is_valid_uid",
    "raw_to_python",
    "read_header",
    "tags_for_keywords",
    "to_python",
]

# Messages from pydicom can quote identifying values; keep them out of any handler the
# application configures on the root logger.
logging.getLogger("pydicom").propagate = False

PathLike = str | os.PathLike[str]

CHARSET_TAG = 0x00080005
SOP_CLASS_TAG = 0x00080016
SOP_INSTANCE_TAG = 0x00080018

# Text VRs from the default repertoire (ISO-IR 6): decoding never depends on the
# Specific Character Set.
TEXT_DEFAULT = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
# Text VRs that Specific Character Set applies to.
TEXT_CHARSET = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
# Text VRs with VM 1 only: a backslash is part of the value.
TEXT_SINGLE = frozenset({"LT", "ST", "UT", "UR"})
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


# --- errors ------------------------------------------------------------------------------------


class DicomReadError(Exception):
    """A file that cannot be read as a DICOM instance.

    Attributes
    ----------
    kind
        Short category for counting (``"empty"``, ``"not_dicom"``, ``"truncated"``,
        ``"invalid"``, ``"unreadable"``); never holds a value from the file.
    """

    kind = "unreadable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyFileError(DicomReadError):
    """A file of zero bytes."""

    kind = "empty"


class NotDicomError(DicomReadError):
    """Bytes that are not DICOM (no preamble and no plausible data set start)."""

    kind = "not_dicom"


class TruncatedDicomError(DicomReadError):
    """A DICOM file that ends before its last element does."""

    kind = "truncated"


class UnidentifiedDicomError(DicomReadError):
    """A DICOM file that parses but does not identify an instance."""

    kind = "invalid"


# --- values ------------------------------------------------------------------------------------


def is_valid_uid(value: Any) -> bool:
    """Whether ``value`` is a string of dot-separated digits (a UID's syntax, PS3.5 9.1)."""
    return isinstance(value, str) and 0 < len(value) <= 128 and _UID_RE.match(value) is not None


def to_python(value: Any) -> Any:
    """Convert a pydicom element value to plain, JSON-able Python.

    ``MultiValue`` becomes ``list``, ``DSfloat``/``DSdecimal`` ``float``, ``IS`` ``int``,
    ``PersonName`` and ``UID`` ``str``, a ``Sequence`` a list of ``{keyword: value}``
    dicts, bytes a base64 string (as in the DICOM JSON model's InlineBinary), numpy
    scalars and arrays plain numbers and lists. Empty strings stay empty strings.
    """
    if value is None or (isinstance(value, bool | int | float) and not isinstance(value, IS | DSfloat)):
        return value
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, DSfloat | DSdecimal):
        return float(value)
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, DicomSequence):
        return [_dataset_to_dict(item) for item in value]
    if isinstance(value, MultiValue | list | tuple):
        return [to_python(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def _dataset_to_dict(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in ds:
        out[elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"] = to_python(elem.value)
    return out


def tags_for_keywords(keywords: Iterable[str]) -> dict[str, int]:
    """Map DICOM keywords to integer tags, e.g. ``"Rows"`` -> ``0x00280010``.

    Raises
    ------
    KeyError
        For a keyword that is not in pydicom's data dictionary.
    """
    out: dict[str, int] = {}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(f"not a DICOM keyword: {keyword}")
        out[keyword] = int(tag)
    return out


def split_text(text: str, vr: str) -> str | list[str]:
    """Text of one element as pydicom gives it: padding removed, split at backslashes.

    Trailing spaces and NULs pad a value to even length ((0008,0018) SOP Instance UID
    is padded with a NUL); they are not part of the value, of any of its values.
    """
    text = text.rstrip(" \0")
    if vr in TEXT_SINGLE or "\\" not in text:
        return text
    return [value.rstrip(" \0") for value in text.split("\\")]


def raw_to_python(
    tag: int,
    vr: str | None,
    value: bytes | None,
    *,
    is_little_endian: bool = True,
    is_implicit_vr: bool = False,
    encodings: list[str] | None = None,
) -> Any:
    """Convert the raw bytes of one element to plain Python.

    Text becomes ``str`` (a ``list`` of ``str`` when multi-valued; numbers in DS/IS stay
    strings so that callers decide how tolerant to be), binary numbers ``int``/``float``
    (a ``list`` when multi-valued). Text outside ASCII, and any VR not handled here
    (including UN), is converted by pydicom with the data set's character set, so the
    result matches what pydicom would give. Unconvertible values give ``None``.

    Parameters
    ----------
    tag
        The element's tag as an integer.
    vr
        The VR as read (``None`` for implicit VR: looked up in the data dictionary).
    value
        The value bytes; ``None`` or empty gives ``None``.
    is_little_endian, is_implicit_vr
        The encoding the bytes were read with.
    encodings
        Python codecs for (0008,0005) Specific Character Set
        (``pydicom.charset.convert_encodings``); ``None`` means the default repertoire.
    """
    if not value:
        return None
    if vr is None or vr == "UN":
        vr = dictionary_vr(tag)
    if vr in TEXT_DEFAULT or (vr in TEXT_CHARSET and value.isascii() and b"\x1b" not in value):
        return split_text(value.decode("latin-1"), vr)
    fmt = _BINARY_FORMATS.get(vr)
    if fmt is not None:
        size = struct.calcsize(fmt)
        if len(value) % size == 0:
            numbers = struct.unpack(("<" if is_little_endian else ">") + fmt * (len(value) // size), value)
            return numbers[0] if len(numbers) == 1 else list(numbers)
    raw = RawDataElement(pydicom.tag.BaseTag(tag), vr, len(value), value, 0, is_implicit_vr, is_little_endian)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = convert_raw_data_element(raw, encoding=encodings or ["iso8859"]).value
    except Exception:  # pydicom raises many types for bad values; the value is just unknown
        return None
    return to_python(converted)


def encodings_from_raw(value: bytes | None) -> list[str] | None:
    if not value:
        return None
    text = value.decode("latin-1").strip(" \0")
    if not text:
        return None
    names: str | list[str] = [t.strip() for t in text.split("\\")] if "\\" in text else text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return list(convert_encodings(names))
        except Exception:  # unknown character set: pydicom falls back to the default too
            return None


# --- identity and truncation checks ------------------------------------------------------------


def first_text(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    text = str(value).strip(" \0")
    return text or None


def check_identity(
    sop_class_uid: Any,
    sop_instance_uid: Any,
    media_sop_class_uid: Any,
    media_sop_instance_uid: Any,
    *,
    part10: bool,
) -> None:
    """Refuse a parsed data set that does not identify a DICOM instance.

    At least one of (0008,0016) SOP Class UID, (0008,0018) SOP Instance UID,
    (0002,0002) Media Storage SOP Class UID or (0002,0003) Media Storage SOP Instance
    UID must be a syntactically valid UID.

    Raises
    ------
    NotDicomError
        For a forced read of a file without preamble (the bytes only looked like DICOM).
    UnidentifiedDicomError
        For a Part 10 file (``DICM`` present) that identifies nothing.
    """
    for value in (sop_class_uid, sop_instance_uid, media_sop_class_uid, media_sop_instance_uid):
        if is_valid_uid(first_text(value)):
            return
    if part10:
        raise UnidentifiedDicomError(
            "invalid DICOM: a Part 10 file without a valid (0008,0016) SOP Class UID, (0008,0018) "
            "SOP Instance UID or File Meta equivalent (data set missing or cut off)"
        )
    raise NotDicomError(
        "not a DICOM file (no DICM preamble, and the bytes parsed as a data set carry no valid "
        "SOP Class UID or SOP Instance UID)"
    )


def _short_element(ds: Dataset, depth: int = 0) -> str | None:
    """Describe the first raw element whose value is shorter than its stated length."""
    for tag, elem in ds._dict.items():
        if isinstance(elem, RawDataElement):
            value = elem.value
            if value is not None and elem.length != UNDEFINED and len(value) < elem.length:
                return (
                    f"truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) has {len(value)} of {elem.length} bytes"
                )
        elif isinstance(elem, DataElement) and elem.VR == "SQ" and depth < 32:
            for item in elem.value or []:
                found = _short_element(item, depth + 1)
                if found:
                    return found
    return None


# --- values of a fast-path scan ----------------------------------------------------------------


# --- pydicom reader ----------------------------------------------------------------------------


def open_anonymous(path: PathLike) -> io.BufferedReader:
    # A reader opened from a file descriptor is named by the number, not the path, so no
    # pydicom message can quote the path (which may hold a patient's name).
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        return io.BufferedReader(io.FileIO(fd, "rb", closefd=True))
    except Exception:
        os.close(fd)
        raise


def describe_os_error(error: OSError) -> str:
    reason = error.strerror or type(error).__name__
    return f"unreadable: {reason}"


def read_header(
    path: PathLike,
    *,
    stop_before_pixels: bool = True,
    specific_tags: Collection[int | str] | None = None,
) -> FileDataset:
    """Read a DICOM file tolerantly and check it is a complete instance.

    Parameters
    ----------
    path
        The file.
    stop_before_pixels
        Stop at (7FE0,0010) Pixel Data (and the float variants); the element's length is
        still checked against the file size.
    specific_tags
        Read only these tags (ints or keywords) plus SOP Class/Instance UID and
        (0008,0005) Specific Character Set; faster for indexing.

    Returns
    -------
    pydicom.dataset.FileDataset
        The data set; elements stay raw until accessed, as pydicom reads them.

    Raises
    ------
    EmptyFileError, NotDicomError, TruncatedDicomError, UnidentifiedDicomError, DicomReadError
        With a message that never quotes the path (it may be identifying).
    """
    try:
        handle = open_anonymous(path)
    except OSError as error:
        raise DicomReadError(describe_os_error(error)) from None
    with handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(132)
            handle.seek(0)
        except OSError as error:
            raise DicomReadError(describe_os_error(error)) from None
        return read_open(handle, size, head, stop_before_pixels, specific_tags)


def read_open(
    handle: BinaryIO,
    size: int,
    head: bytes,
    stop_before_pixels: bool,
    specific_tags: Collection[int | str] | None,
) -> FileDataset:
    if size == 0:
        raise EmptyFileError("empty file")
    encoding = sniff_dicom(head)
    if encoding is None:
        raise NotDicomError("not a DICOM file (no DICM preamble and no valid group 0002/0008 start)")
    tags: list[Any] | None = None
    if specific_tags is not None:
        tags = [*specific_tags, SOP_CLASS_TAG, SOP_INSTANCE_TAG]
    tracker = _TrackingReader(handle)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(
                tracker,  # type: ignore[arg-type]
                stop_before_pixels=stop_before_pixels,
                force=encoding != "part10",
                specific_tags=tags,
            )
        except zlib.error as error:
            raise TruncatedDicomError(f"truncated: deflated data set is incomplete ({error})") from None
        except Exception as error:  # pydicom raises many types for malformed files
            # A parse error after a read came up short is the end of a cut file.
            if tracker.hit_eof or isinstance(error, EOFError):
                raise TruncatedDicomError(f"truncated: {_sanitize(error)}") from None
            raise DicomReadError(f"unreadable DICOM: {type(error).__name__}: {_sanitize(error)}") from None
    for warning in caught:
        text = str(warning.message)
        if "End of file" in text or "EOF" in text:
            raise TruncatedDicomError("truncated: end of file reached inside an element")
    requested, got = tracker.last_read
    if requested == 8 and 0 < got < 8:
        # pydicom ends a data set quietly on a partial element header.
        raise TruncatedDicomError(f"truncated: the file ends inside an element header ({got} of 8 bytes)")
    # A deflated data set is read from an inflated copy; the file position says nothing.
    deflated = encoding == "part10" and meta_text(ds, "TransferSyntaxUID") == DEFLATED_LE
    position = size if deflated else handle.tell()
    if position > size:
        # pydicom seeks past values it skips (specific_tags), even past the end.
        raise TruncatedDicomError(f"truncated: an element extends {position - size} bytes past the end of the file")
    short = _short_element(ds)
    if short:
        raise TruncatedDicomError(short)
    check_identity(
        _raw_text(ds, SOP_CLASS_TAG),
        _raw_text(ds, SOP_INSTANCE_TAG),
        meta_text(ds, "MediaStorageSOPClassUID"),
        meta_text(ds, "MediaStorageSOPInstanceUID"),
        part10=encoding == "part10",
    )
    if stop_before_pixels and position < size:
        is_implicit, is_little = _read_encoding(ds)
        problem = pixel_data_problem(handle, position, size, little=is_little, explicit=not is_implicit)
        if problem:
            raise TruncatedDicomError(problem)
    return ds


class _TrackingReader:
    """A file wrapper that remembers short reads, which pydicom passes over silently."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.last_read = (0, 0)
        self.hit_eof = False

    def read(self, n: int = -1) -> bytes:
        data = self._handle.read(n)
        self.last_read = (n, len(data))
        if n >= 0 and len(data) < n:
            self.hit_eof = True
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


def _read_encoding(ds: Dataset) -> tuple[bool, bool]:
    """(implicit VR, little endian) as the data set was actually read.

    pydicom follows the data when it contradicts the Transfer Syntax (an implicit VR
    data set under an explicit syntax) but reports the syntax's encoding; the raw
    elements carry what the reader really used.
    """
    for elem in ds._dict.values():
        if isinstance(elem, RawDataElement):
            return bool(elem.is_implicit_VR), bool(elem.is_little_endian)
    is_implicit, is_little = ds.original_encoding
    return bool(is_implicit), bool(is_little)


def _sanitize(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:197] + "..."


def meta_text(ds: Dataset, keyword: str) -> str | None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return first_text(to_python(meta.get(keyword)))
    except Exception:
        return None


def _raw_text(ds: Dataset, tag: int) -> str | None:
    try:
        elem = ds.get_item(tag)
    except Exception:
        return None
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        return first_text(
            raw_to_python(
                tag,
                elem.VR,
                elem.value,
                is_little_endian=elem.is_little_endian,
                is_implicit_vr=elem.is_implicit_VR,
            )
        )
    return first_text(to_python(elem.value))


# --- one file, fast path first ----------------------------------------------------------------


# --- convenience -------------------------------------------------------------------------------
