"""Tolerant DICOM reading helpers.

Every stage that opens DICOM files goes through this module so that a bad file fails
the same way everywhere: with a :class:`DicomReadError` (or one of its subclasses)
whose message says what is wrong, never with a stray ``struct.error`` halfway through a
crawl. Three layers:

* :func:`sniff_dicom` / :func:`is_dicom_file` decide from the first bytes whether a file
  can be DICOM at all (Part 10 ``DICM`` preamble, or a bare data set that starts in
  group 0002 or 0008).
* :func:`read_header` reads a file with pydicom (forcing only after the sniff said the
  bytes look like DICOM), then checks what pydicom does not: truncation (an element or
  the Pixel Data running past the end of the file) and identity (a parsed data set must
  carry a syntactically valid (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID,
  or their (0002,0002)/(0002,0003) File Meta counterparts), so random bytes that happen
  to parse never pass as an instance.
* :func:`scan_header` is a fast path for the common case (Part 10 file, explicit or
  implicit VR little endian): it walks element headers over a small read window and
  keeps the raw bytes of the requested tags only. Whenever anything is unusual it
  returns ``None`` and the caller uses :func:`read_header`, so pydicom stays the
  authority on every odd file and both paths give the same values
  (:func:`raw_to_python` converts raw bytes for both).

:func:`read_tag_values` (by tag) and :func:`read_values` (by keyword) read a few
attributes of one file, fast path first. :func:`to_python` turns pydicom values into
plain, JSON-able Python values; :func:`dataset_values` does the same for selected
elements of a data set.

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
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import IS, DSdecimal, DSfloat, PersonName

__all__ = [
    "PIXEL_DATA_TAGS",
    "DicomReadError",
    "EmptyFileError",
    "HeaderScan",
    "HeaderValues",
    "NotDicomError",
    "TruncatedDicomError",
    "UnidentifiedDicomError",
    "check_identity",
    "dataset_values",
    "is_dicom_file",
    "is_valid_uid",
    "raw_to_python",
    "read_header",
    "read_tag_values",
    "read_values",
    "scan_header",
    "sniff_dicom",
    "tags_for_keywords",
    "to_python",
]

# Messages from pydicom can quote identifying values; keep them out of any handler the
# application configures on the root logger.
logging.getLogger("pydicom").propagate = False

PathLike = str | os.PathLike[str]

#: (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data.
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_CHARSET_TAG = 0x00080005
_SOP_CLASS_TAG = 0x00080016
_SOP_INSTANCE_TAG = 0x00080018
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"

# Explicit VR element headers: these VRs use a 2-byte reserved field and a 4-byte length.
_VR_LONG = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_VR_SHORT = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
_VALID_VRS = _VR_LONG | _VR_SHORT

# Text VRs from the default repertoire (ISO-IR 6): decoding never depends on the
# Specific Character Set.
_TEXT_DEFAULT = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
# Text VRs that Specific Character Set applies to.
_TEXT_CHARSET = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
# Text VRs with VM 1 only: a backslash is part of the value.
_TEXT_SINGLE = frozenset({"LT", "ST", "UT", "UR"})
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_WINDOW = 32 * 1024  # bytes read per window; most headers fit in the first one

_HH_LE = struct.Struct("<HH").unpack_from
_H_LE = struct.Struct("<H").unpack_from
_L_LE = struct.Struct("<L").unpack_from
_EXPLICIT_HEADER = struct.Struct("<HH2sH").unpack_from
_IMPLICIT_HEADER = struct.Struct("<HHL").unpack_from


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


# --- sniffing ----------------------------------------------------------------------------------


def sniff_dicom(head: bytes) -> str | None:
    """Guess how a file is encoded from its first bytes.

    Parameters
    ----------
    head
        At least the first 132 bytes of the file (fewer when the file is shorter).

    Returns
    -------
    str or None
        ``"part10"`` when bytes 128-131 are ``DICM``; ``"explicit_le"``,
        ``"implicit_le"`` or ``"explicit_be"`` for a bare data set whose first element
        is in group 0002 (File Meta) or 0008 (the usual first group, e.g. (0008,0005)
        Specific Character Set); ``None`` when the bytes cannot start a DICOM data set.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "part10"
    if len(head) < 8:
        return None
    group_le, _ = _HH_LE(head, 0)
    vr = head[4:6]
    if group_le in (0x0002, 0x0008):
        if vr in _VALID_VRS:
            return "explicit_le"
        (length,) = _L_LE(head, 4)
        # An implicit VR first element is short (Specific Character Set, Image Type,
        # group length); a huge length means these bytes are something else.
        if not (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B) and length < 0x10000:
            return "implicit_le"
        return None
    if struct.unpack_from(">H", head, 0)[0] == 0x0008 and vr in _VALID_VRS:
        return "explicit_be"
    return None


def is_dicom_file(path: PathLike) -> bool:
    """Whether a file's first bytes look like DICOM (see :func:`sniff_dicom`).

    Cheap (reads 132 bytes); a ``True`` does not promise the rest of the file parses,
    use :func:`read_header` for that. Unreadable paths give ``False``.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return sniff_dicom(head) is not None


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


def _split_text(text: str, vr: str) -> str | list[str]:
    if vr in _TEXT_SINGLE or "\\" not in text:
        return text
    return text.split("\\")


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
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    if vr in _TEXT_DEFAULT or (vr in _TEXT_CHARSET and value.isascii() and b"\x1b" not in value):
        return _split_text(value.decode("latin-1"), vr)
    fmt = _BINARY_FORMATS.get(vr)
    if fmt is not None:
        size = struct.calcsize(fmt)
        if len(value) % size == 0:
            numbers = struct.unpack(("<" if is_little_endian else ">") + fmt * (len(value) // size), value)
            return numbers[0] if len(numbers) == 1 else list(numbers)
    raw = RawDataElement(
        pydicom.tag.BaseTag(tag), vr, len(value), value, 0, is_implicit_vr, is_little_endian
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = convert_raw_data_element(raw, encoding=encodings or ["iso8859"]).value
    except Exception:  # pydicom raises many types for bad values; the value is just unknown
        return None
    return to_python(converted)


def _encodings_from_raw(value: bytes | None) -> list[str] | None:
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


def _first_text(value: Any) -> str | None:
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
        if is_valid_uid(_first_text(value)):
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


def _check_pixel_data(handle: BinaryIO, pos: int, size: int, *, little: bool, explicit: bool) -> str | None:
    """Return a truncation message when the Pixel Data element at ``pos`` runs past EOF."""
    handle.seek(pos)
    header = handle.read(12)
    end = "<" if little else ">"
    if len(header) < 8:
        return f"truncated: Pixel Data element header cut off ({size - pos} bytes left)"
    group, elem = struct.unpack_from(end + "HH", header, 0)
    if (group << 16 | elem) not in PIXEL_DATA_TAGS:
        return None
    if explicit and header[4:6] not in _VALID_VRS:
        explicit = False  # an implicit VR data set under an explicit syntax
    if explicit:
        if len(header) < 12:
            return f"truncated: Pixel Data element header cut off ({size - pos} bytes left)"
        if header[4:6] in _VR_LONG:
            (length,) = struct.unpack_from(end + "L", header, 8)
            value_pos = pos + 12
        else:
            (length,) = struct.unpack_from(end + "H", header, 6)
            value_pos = pos + 8
    else:
        (length,) = struct.unpack_from(end + "L", header, 4)
        value_pos = pos + 8
    if length != _UNDEFINED:
        return _pixel_length_problem(value_pos, length, size)
    return _check_fragments(handle, value_pos, size, end)


def _pixel_length_problem(value_pos: int, length: int, size: int) -> str | None:
    if value_pos + length > size:
        return f"truncated: Pixel Data needs {length} bytes but only {size - value_pos} remain"
    return None


def _check_fragments(handle: BinaryIO, pos: int, size: int, end: str) -> str | None:
    """Walk the items of encapsulated Pixel Data up to the Sequence Delimitation Item."""
    unpack = struct.Struct(end + "HHL").unpack_from
    n_items = 0
    while True:
        handle.seek(pos)
        header = handle.read(8)
        if len(header) < 8:
            return f"truncated: encapsulated Pixel Data ends after {n_items} items without a delimiter"
        group, elem, length = unpack(header, 0)
        tag = group << 16 | elem
        if tag == _SEQUENCE_DELIMITER:
            return None
        if tag != _ITEM or length == _UNDEFINED:
            return f"truncated: encapsulated Pixel Data item {n_items} is malformed"
        if pos + 8 + length > size:
            return (
                f"truncated: encapsulated Pixel Data item {n_items} needs {length} bytes "
                f"but only {size - pos - 8} remain"
            )
        pos += 8 + length
        n_items += 1


def _short_element(ds: Dataset, depth: int = 0) -> str | None:
    """Describe the first raw element whose value is shorter than its stated length."""
    for tag, elem in ds._dict.items():
        if isinstance(elem, RawDataElement):
            value = elem.value
            if value is not None and elem.length != _UNDEFINED and len(value) < elem.length:
                return (
                    f"truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) has {len(value)} "
                    f"of {elem.length} bytes"
                )
        elif isinstance(elem, DataElement) and elem.VR == "SQ" and depth < 32:
            for item in elem.value or []:
                found = _short_element(item, depth + 1)
                if found:
                    return found
    return None


# --- pydicom reader ----------------------------------------------------------------------------


def _open_anonymous(path: PathLike) -> io.BufferedReader:
    # A reader opened from a file descriptor is named by the number, not the path, so no
    # pydicom message can quote the path (which may hold a patient's name).
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        return io.BufferedReader(io.FileIO(fd, "rb", closefd=True))
    except Exception:
        os.close(fd)
        raise


def _describe_os_error(error: OSError) -> str:
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
        handle = _open_anonymous(path)
    except OSError as error:
        raise DicomReadError(_describe_os_error(error)) from None
    with handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(132)
            handle.seek(0)
        except OSError as error:
            raise DicomReadError(_describe_os_error(error)) from None
        return _read_open(handle, size, head, stop_before_pixels, specific_tags)


def _read_open(
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
        raise NotDicomError(
            "not a DICOM file (no DICM preamble and no valid group 0002/0008 start)"
        )
    tags: list[Any] | None = None
    if specific_tags is not None:
        tags = [*specific_tags, _SOP_CLASS_TAG, _SOP_INSTANCE_TAG]
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
    deflated = encoding == "part10" and _meta_text(ds, "TransferSyntaxUID") == _DEFLATED
    position = size if deflated else handle.tell()
    if position > size:
        # pydicom seeks past values it skips (specific_tags), even past the end.
        raise TruncatedDicomError(
            f"truncated: an element extends {position - size} bytes past the end of the file"
        )
    short = _short_element(ds)
    if short:
        raise TruncatedDicomError(short)
    check_identity(
        _raw_text(ds, _SOP_CLASS_TAG),
        _raw_text(ds, _SOP_INSTANCE_TAG),
        _meta_text(ds, "MediaStorageSOPClassUID"),
        _meta_text(ds, "MediaStorageSOPInstanceUID"),
        part10=encoding == "part10",
    )
    if stop_before_pixels and position < size:
        is_implicit, is_little = _read_encoding(ds)
        problem = _check_pixel_data(handle, position, size, little=is_little, explicit=not is_implicit)
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


def _meta_text(ds: Dataset, keyword: str) -> str | None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _first_text(to_python(meta.get(keyword)))
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
        return _first_text(
            raw_to_python(
                tag,
                elem.VR,
                elem.value,
                is_little_endian=elem.is_little_endian,
                is_implicit_vr=elem.is_implicit_VR,
            )
        )
    return _first_text(to_python(elem.value))


# --- fast path ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderScan:
    """Raw values of selected top-level elements, from :func:`scan_header`.

    Attributes
    ----------
    elements
        ``tag -> (VR, value bytes)`` for the requested tags present in the file
        (the VR from the file, or from the data dictionary for implicit VR).
    transfer_syntax
        (0002,0010) Transfer Syntax UID.
    media_sop_class, media_sop_instance
        (0002,0002) and (0002,0003) from the File Meta Information.
    implicit_vr
        Whether the data set is implicit VR little endian.
    pixel_problem
        A truncation message for the Pixel Data element, or ``None``.
    """

    elements: dict[int, tuple[str, bytes]]
    transfer_syntax: str | None
    media_sop_class: str | None
    media_sop_instance: str | None
    implicit_vr: bool
    pixel_problem: str | None

    def validate(self) -> None:
        """Apply :func:`read_header`'s checks: identity, then Pixel Data truncation.

        Raises
        ------
        UnidentifiedDicomError, TruncatedDicomError
        """
        check_identity(
            _first_text(self._value(_SOP_CLASS_TAG)),
            _first_text(self._value(_SOP_INSTANCE_TAG)),
            self.media_sop_class,
            self.media_sop_instance,
            part10=True,
        )
        if self.pixel_problem:
            raise TruncatedDicomError(self.pixel_problem)

    def _value(self, tag: int) -> Any:
        raw = self.elements.get(tag)
        if raw is None:
            return None
        return raw_to_python(tag, raw[0], raw[1], is_implicit_vr=self.implicit_vr)

    def encodings(self) -> list[str] | None:
        """Codecs for (0008,0005) Specific Character Set, ``None`` for the default."""
        raw = self.elements.get(_CHARSET_TAG)
        return _encodings_from_raw(raw[1]) if raw else None

    def values(self) -> dict[int, Any]:
        """Every scanned element converted with :func:`raw_to_python`."""
        encodings = self.encodings()
        out: dict[int, Any] = {}
        for tag, (vr, value) in self.elements.items():
            # Inline the commonest case of raw_to_python (same result): plain ASCII text.
            if value and (
                vr in _TEXT_DEFAULT or (vr in _TEXT_CHARSET and value.isascii() and b"\x1b" not in value)
            ):
                text = value.decode("latin-1")
                out[tag] = text.split("\\") if "\\" in text and vr not in _TEXT_SINGLE else text
            else:
                out[tag] = raw_to_python(tag, vr, value, is_implicit_vr=self.implicit_vr, encodings=encodings)
        return out


class _FallbackError(Exception):
    """The fast path met something it leaves to pydicom."""


class _Window:
    """A read window over a file: element headers far apart cost one seek each."""

    __slots__ = ("_handle", "base", "buf", "size")

    def __init__(self, handle: BinaryIO, size: int, first: bytes) -> None:
        self._handle = handle
        self.size = size
        self.buf = first
        self.base = 0

    def ensure(self, pos: int, n: int) -> bool:
        if pos + n > self.size:
            return False
        if pos >= self.base and pos + n <= self.base + len(self.buf):
            return True
        self._handle.seek(pos)
        self.buf = self._handle.read(max(n, _WINDOW))
        self.base = pos
        return len(self.buf) >= n


_DICTIONARY_VR_CACHE: dict[int, str] = {}


def _vr_for(tag: int) -> str:
    vr = _DICTIONARY_VR_CACHE.get(tag)
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        _DICTIONARY_VR_CACHE[tag] = vr
    return vr


def scan_header(handle: BinaryIO, size: int, tags: Collection[int]) -> HeaderScan | None:
    """Read the raw values of ``tags`` from a Part 10 file without pydicom.

    Handles the common case only: ``DICM`` preamble, explicit VR little endian File Meta,
    and a data set in implicit or explicit VR little endian (any compressed transfer
    syntax). Walks top-level element headers until Pixel Data, skipping values (and
    nested sequences) it was not asked for, and checks the Pixel Data length against
    the file size.

    Parameters
    ----------
    handle
        The open file, positioned anywhere.
    size
        The file's size in bytes.
    tags
        Integer tags to keep (top level only); (0008,0005) Specific Character Set and
        (0008,0016)/(0008,0018) SOP Class/Instance UID are always kept.

    Returns
    -------
    HeaderScan or None
        ``None`` whenever the file is unusual (no preamble, big endian, deflated, an
        unknown VR, an element past the end of the file, ...): read it with
        :func:`read_header` instead, which also produces the error message. Call
        :meth:`HeaderScan.validate` before trusting the values.
    """
    try:
        return _scan(handle, size, tags)
    except (_FallbackError, struct.error, UnicodeDecodeError):
        return None


def _scan(handle: BinaryIO, size: int, tags: Collection[int]) -> HeaderScan | None:
    handle.seek(0)
    win = _Window(handle, size, handle.read(_WINDOW))
    if len(win.buf) < 132 or win.buf[128:132] != b"DICM":
        return None
    meta, pos = _scan_meta(win, 132)
    ts = meta.get(0x00020010)
    if ts is None or ts in (_EXPLICIT_BE, _DEFLATED) or ts in pydicom.uid.PrivateTransferSyntaxes:
        return None
    implicit = ts == _IMPLICIT_LE
    wanted = set(tags)
    wanted.update((_CHARSET_TAG, _SOP_CLASS_TAG, _SOP_INSTANCE_TAG))
    elements: dict[int, tuple[str, bytes]] = {}
    pixel = _scan_dataset(win, pos, implicit, wanted, elements)
    problem = None
    if pixel is not None:
        value_pos, length = pixel
        if length == _UNDEFINED:
            problem = _check_fragments(handle, value_pos, size, "<")
        else:
            problem = _pixel_length_problem(value_pos, length, size)
    return HeaderScan(
        elements=elements,
        transfer_syntax=ts,
        media_sop_class=meta.get(0x00020002),
        media_sop_instance=meta.get(0x00020003),
        implicit_vr=implicit,
        pixel_problem=problem,
    )


def _scan_meta(win: _Window, pos: int) -> tuple[dict[int, str], int]:
    """Parse group 0002 (always explicit VR little endian, PS3.10 7.1)."""
    meta: dict[int, str] = {}
    while True:
        if not win.ensure(pos, 8):
            raise _FallbackError
        buf = win.buf
        o = pos - win.base
        group, elem = _HH_LE(buf, o)
        if group != 0x0002:
            return meta, pos
        vr = buf[o + 4 : o + 6]
        if vr in _VR_SHORT:
            (length,) = _H_LE(buf, o + 6)
            vpos = pos + 8
        elif vr in _VR_LONG:
            if not win.ensure(pos, 12):
                raise _FallbackError
            (length,) = _L_LE(win.buf, pos - win.base + 8)
            vpos = pos + 12
        else:
            raise _FallbackError
        if length == _UNDEFINED:
            raise _FallbackError
        if elem in (0x0002, 0x0003, 0x0010):
            if not win.ensure(vpos, length):
                raise _FallbackError
            o = vpos - win.base
            meta[0x00020000 | elem] = win.buf[o : o + length].decode("latin-1").strip(" \0")
        elif vpos + length > win.size:
            raise _FallbackError
        pos = vpos + length


def _scan_dataset(
    win: _Window, pos: int, implicit: bool, wanted: set[int], out: dict[int, tuple[str, bytes]]
) -> tuple[int, int] | None:
    """Walk the top-level data set; return Pixel Data's (value position, length), if any."""
    # The hot loop of indexing: the window's bounds live in locals and the window is
    # only asked for more bytes when the next header is not already in memory.
    size = win.size
    buf, base = win.buf, win.base
    limit = len(buf)
    pixel_tags = PIXEL_DATA_TAGS
    vr_short, vr_long = _VR_SHORT, _VR_LONG
    first = True
    while True:
        if pos + 8 > size:
            if pos < size:
                raise _FallbackError  # a cut element header: read_header reports it
            return None
        o = pos - base
        if o < 0 or o + 12 > limit:
            if not win.ensure(pos, min(12, size - pos)):
                raise _FallbackError
            buf, base = win.buf, win.base
            limit = len(buf)
            o = pos - base
        if implicit:
            group, elem, length = _IMPLICIT_HEADER(buf, o)
            if first and 0x40 < buf[o + 4] < 0x5B and 0x40 < buf[o + 5] < 0x5B:
                raise _FallbackError  # looks explicit; pydicom switches encodings here
            raw_vr = b""
            vpos = pos + 8
        else:
            # One unpack for tag, VR and the short length: this loop runs once per element.
            group, elem, raw_vr, length = _EXPLICIT_HEADER(buf, o)
            if raw_vr in vr_short:
                vpos = pos + 8
            elif raw_vr in vr_long:
                if o + 12 > limit:
                    raise _FallbackError  # fewer than 12 bytes left in the file
                (length,) = _L_LE(buf, o + 8)
                vpos = pos + 12
            else:
                raise _FallbackError
        if group == 0xFFFE or group == 0x0002:
            raise _FallbackError
        tag = group << 16 | elem
        first = False
        if tag in pixel_tags:
            return vpos, length
        if length == _UNDEFINED:
            if not implicit and raw_vr != b"SQ":
                raise _FallbackError
            pos = _skip_sequence(win, vpos, implicit)
            buf, base = win.buf, win.base
            limit = len(buf)
            continue
        if tag in wanted:
            vo = vpos - base
            if vo + length > limit:
                if not win.ensure(vpos, length):
                    raise _FallbackError
                buf, base = win.buf, win.base
                limit = len(buf)
                vo = vpos - base
            out[tag] = (raw_vr.decode("ascii") if raw_vr else _vr_for(tag), buf[vo : vo + length])
        elif vpos + length > size:
            raise _FallbackError
        pos = vpos + length


def _skip_sequence(win: _Window, pos: int, implicit: bool) -> int:
    """Skip the items of an undefined-length sequence; return the position after it."""
    while True:
        if not win.ensure(pos, 8):
            raise _FallbackError
        o = pos - win.base
        group, elem = _HH_LE(win.buf, o)
        (length,) = _L_LE(win.buf, o + 4)
        tag = group << 16 | elem
        if tag == _SEQUENCE_DELIMITER:
            return pos + 8
        if tag != _ITEM:
            raise _FallbackError
        if length == _UNDEFINED:
            pos = _skip_item(win, pos + 8, implicit)
        else:
            if pos + 8 + length > win.size:
                raise _FallbackError
            pos += 8 + length


def _skip_item(win: _Window, pos: int, implicit: bool) -> int:
    """Skip the elements of an undefined-length item; return the position after it."""
    while True:
        if not win.ensure(pos, 8):
            raise _FallbackError
        buf = win.buf
        o = pos - win.base
        group, elem = _HH_LE(buf, o)
        tag = group << 16 | elem
        if tag == _ITEM_DELIMITER:
            return pos + 8
        if group == 0xFFFE:
            raise _FallbackError
        if implicit:
            (length,) = _L_LE(buf, o + 4)
            vpos = pos + 8
            is_sq = True
        else:
            raw_vr = buf[o + 4 : o + 6]
            if raw_vr in _VR_SHORT:
                (length,) = _H_LE(buf, o + 6)
                vpos = pos + 8
            elif raw_vr in _VR_LONG:
                if not win.ensure(pos, 12):
                    raise _FallbackError
                (length,) = _L_LE(win.buf, pos - win.base + 8)
                vpos = pos + 12
            else:
                raise _FallbackError  # e.g. an implicit VR item inside an explicit data set
            is_sq = raw_vr == b"SQ"
        if length == _UNDEFINED:
            if not is_sq:
                raise _FallbackError
            pos = _skip_sequence(win, vpos, implicit)
            continue
        if vpos + length > win.size:
            raise _FallbackError
        pos = vpos + length


# --- one file, fast path first ----------------------------------------------------------------


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
        handle = _open_anonymous(path)
    except OSError as error:
        raise DicomReadError(_describe_os_error(error)) from None
    try:
        with handle:
            stat = os.fstat(handle.fileno())
            size = stat.st_size
            if size == 0:
                raise EmptyFileError("empty file")
            scan = scan_header(handle, size, tags)
            if scan is not None:
                scan.validate()
                return HeaderValues(
                    values=scan.values(),
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
            ds = _read_open(handle, size, head, True, list(tags))
    except OSError as error:
        raise DicomReadError(_describe_os_error(error)) from None
    return HeaderValues(
        values=_values_by_tag(ds, tags),
        transfer_syntax=_meta_text(ds, "TransferSyntaxUID"),
        media_sop_class=_meta_text(ds, "MediaStorageSOPClassUID"),
        media_sop_instance=_meta_text(ds, "MediaStorageSOPInstanceUID"),
        size=size,
        mtime_ns=stat.st_mtime_ns,
        fast=False,
    )


# --- convenience -------------------------------------------------------------------------------


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
    charset = ds._dict.get(pydicom.tag.BaseTag(_CHARSET_TAG))
    if isinstance(charset, RawDataElement):
        encodings = _encodings_from_raw(charset.value)
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
