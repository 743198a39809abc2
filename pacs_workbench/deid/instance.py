"""What the engine checks and reads from an instance before de-identifying it.

:func:`header_view` decodes the few top-level attributes the checks need (identity,
pixel module, burned-in annotation) into a :class:`HeaderView`; :func:`check_instance`
refuses, with a :class:`DeidError` whose reason never quotes a value, what cannot be
de-identified safely (unknown transfer syntax, no SOP UIDs, unreadable or truncated
Pixel Data). :func:`identifying_values` collects the patient's identifying values for
text scrubbing; :func:`clean_pixels` masks burned-in text through pydicom;
:func:`dataset_bytes` and :func:`write_bytes` encode pydicom data sets.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from functools import lru_cache
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, AllTransferSyntaxes

from pacs_workbench.deid.encoding import InstanceContext, decode_values
from pacs_workbench.deid.pixels import PixelCleaningError, PixelResult, clean_pixel_data
from pacs_workbench.deid.text import KNOWN_PHI_KEYWORDS
from pacs_workbench.dicom.raw import PIXEL_DATA, Element, RawFile


class DeidError(ValueError):
    """An instance the workbench refuses to de-identify; ``reason`` says why (never a PHI value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@lru_cache(maxsize=1)
def _phi_kind_by_tag() -> dict[int, str]:
    from pydicom.datadict import tag_for_keyword

    out = {}
    for keyword, kind in KNOWN_PHI_KEYWORDS.items():
        tag = tag_for_keyword(keyword)
        if tag is not None:
            out[int(tag)] = kind
    return out


#: Top-level attributes decoded into the header view (identity, pixel risk, checks).
HEADER_TAGS = {
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080008: ("ImageType", "CS"),
    0x00080060: ("Modality", "CS"),
    0x00080070: ("Manufacturer", "LO"),
    0x00081090: ("ManufacturerModelName", "LO"),
    0x00100010: ("PatientName", "PN"),
    0x00100020: ("PatientID", "LO"),
    0x00100030: ("PatientBirthDate", "DA"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00280301: ("BurnedInAnnotation", "CS"),
    0x00280004: ("PhotometricInterpretation", "CS"),
    0x00280008: ("NumberOfFrames", "IS"),
}


_HEADER_US = {
    0x00280002: "SamplesPerPixel",
    0x00280006: "PlanarConfiguration",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280103: "PixelRepresentation",
}


#: (0028,0004) Photometric Interpretation values a reader can decode.
PHOTOMETRIC_VALUES = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_ICT",
        "YBR_RCT",
        "HSV",
        "ARGB",
        "CMYK",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
    }
)


class HeaderView(dict[str, Any]):
    """A few decoded top-level attributes, read like a pydicom Dataset (``get``, attributes, ``in``).

    Decoding the handful of attributes the checks need is much cheaper than building
    pydicom elements for them.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def header_view(ctx: InstanceContext, top: dict[int, Element], transfer_syntax: str) -> HeaderView:
    header = HeaderView()
    for tag, (keyword, vr) in HEADER_TAGS.items():
        e = top.get(tag)
        if e is None or e.items is not None:
            continue
        view = Element(tag, vr, e.start, e.value_start, e.value_end, e.end, None, e.implicit)
        header[keyword] = _set_value(decode_values(ctx, view))
    for tag, keyword in _HEADER_US.items():
        e = top.get(tag)
        if e is not None and e.value_end - e.value_start >= 2:
            header[keyword] = struct.unpack_from("<H", ctx.buf, e.value_start)[0]
    return header


def _set_value(values: list[str]) -> Any:
    if not values:
        return ""
    return values[0] if len(values) == 1 else values


def identifying_values(
    ctx: InstanceContext, elements: list[Element], include_institution: bool
) -> Iterator[tuple[str, str]]:
    """``(kind, value)`` of person names and identifying attributes at any depth (see text.py)."""
    kinds = _phi_kind_by_tag()
    for e in elements:
        if e.items is not None:
            for item in e.items:
                yield from identifying_values(ctx, item, include_institution)
            continue
        kind = "name" if e.vr == "PN" else kinds.get(e.tag)
        if kind is None or (kind in ("institution", "site") and not include_institution):
            continue
        if (e.tag >> 16) % 2:
            continue
        for value in decode_values(ctx, e):
            if value.strip():
                yield kind, value.strip()


def clean_pixels(data: bytes, reasons: list[str]) -> tuple[bytes, PixelResult]:
    """The file with burned-in text blanked (:func:`~pacs_workbench.deid.pixels.clean_pixel_data`); raises DeidError."""
    from pydicom import dcmread

    ds = dcmread(BytesIO(data))
    try:
        result = clean_pixel_data(ds, reasons)
    except PixelCleaningError as exc:
        raise DeidError(f"burned-in text check failed: {exc}") from exc
    return write_bytes(ds), result


def pixel_value_sha256(raw: RawFile) -> str:
    """SHA-256 of the top-level (7FE0,0010) Pixel Data value of a parsed file ("" without one).

    The bytes pydicom reads as the value, so it equals
    :func:`~pacs_workbench.deid.pixels.pixel_data_sha256` of the same file read by pydicom.
    """
    import hashlib

    for e in raw.elements:
        if e.tag == PIXEL_DATA:
            return hashlib.sha256(raw.body[e.value_start : e.value_end]).hexdigest()
    return ""


def _pixel_module_problem(header: HeaderView) -> str | None:
    """What makes the Image Pixel attributes unreadable (as a reader checks them), or ``None``."""

    def number(keyword: str) -> int | None:
        value = header.get(keyword)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            return -1

    bits, stored = number("BitsAllocated"), number("BitsStored")
    rows, cols, samples = number("Rows"), number("Columns"), number("SamplesPerPixel")
    representation, frames = number("PixelRepresentation"), number("NumberOfFrames")
    if bits is None or not 1 <= bits <= 64 or (bits != 1 and bits % 8):
        return "(0028,0100) Bits Allocated"
    if stored is None or not 1 <= stored <= bits:
        return "(0028,0101) Bits Stored"
    if rows is None or not 0 < rows <= 0xFFFF:
        return "(0028,0010) Rows"
    if cols is None or not 0 < cols <= 0xFFFF:
        return "(0028,0011) Columns"
    if frames is not None and frames < 1:
        return "(0028,0008) Number of Frames"
    if str(header.get("PhotometricInterpretation", "")).strip() not in PHOTOMETRIC_VALUES:
        return "(0028,0004) Photometric Interpretation"
    if representation not in (0, 1):
        return "(0028,0103) Pixel Representation"
    if samples not in (1, 3):
        return "(0028,0002) Samples per Pixel"
    if samples == 3 and number("PlanarConfiguration") not in (0, 1):
        return "(0028,0006) Planar Configuration"
    return None


def check_instance(header: HeaderView, transfer_syntax: str, ctx: InstanceContext, top: dict[int, Element]) -> None:
    """Refuse what cannot be de-identified safely; raises :class:`DeidError` with the reason.

    Checks: a transfer syntax pydicom knows; a SOP Class and SOP Instance UID; the Image
    Pixel attributes a reader needs to decode Pixel Data (present, in range); native
    (uncompressed) Pixel Data at least as long as its rows, columns, samples, bits and
    frames require (a shorter one is a truncated file).
    """
    ts = UID(transfer_syntax)
    if ts not in AllTransferSyntaxes:
        raise DeidError(f"unknown transfer syntax {ts}")
    if not str(header.get("SOPInstanceUID", "") or "").strip():
        raise DeidError("no SOP Instance UID")
    if not str(header.get("SOPClassUID", "") or "").strip():
        raise DeidError("no SOP Class UID")
    pixel = top.get(PIXEL_DATA)
    if pixel is None:
        sop = UID(str(header.SOPClassUID))
        if "Image Storage" in (sop.name or "") or sop.name == "Segmentation Storage":
            raise DeidError("image instance without Pixel Data (truncated file?)")
        return
    problem = _pixel_module_problem(header)
    if problem is not None:
        raise DeidError(f"image pixel attributes missing or invalid ({problem})")
    if ts.is_compressed:
        return
    try:
        rows, cols = int(header.Rows), int(header.Columns)
        bits = int(header.BitsAllocated)
        samples = int(header.get("SamplesPerPixel", 1) or 1)
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DeidError("image pixel attributes missing or invalid") from exc
    if samples == 3 and str(header.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # native YBR_FULL_422 stores Y Y Cb Cr per two pixels: two values a pixel
    expected = rows * cols * samples * frames * bits // 8 if bits >= 8 else (rows * cols * frames + 7) // 8
    length = pixel.value_end - pixel.value_start
    if length < expected:
        raise DeidError(f"pixel data shorter than the image needs ({length} of {expected} bytes): truncated")


_SAFE_PATH = re.compile(r"[^0-9A-Za-z.\-]")


def path_part(value: str, fallback: str) -> str:
    return _SAFE_PATH.sub("_", value.strip()) or fallback


def dataset_bytes(ds: Dataset) -> bytes:
    """A pydicom dataset as a Part 10 file (file meta added when missing)."""
    from pydicom import dcmwrite

    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
        is_implicit, _ = ds.original_encoding
        meta.TransferSyntaxUID = UID("1.2.840.10008.1.2" if is_implicit else "1.2.840.10008.1.2.1")
        ds.file_meta = meta
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_bytes(ds: Dataset) -> bytes:
    """The DICOM file (preamble, file meta, data set) of a dataset changed by pixel cleaning."""
    from pydicom import dcmwrite

    buffer = BytesIO()
    ds.preamble = b"\x00" * 128
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=ts == "1.2.840.10008.1.2", little_endian=True)
    return buffer.getvalue()


BIG_ENDIAN = "1.2.840.10008.1.2.2"
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
TRANSCODED_NOTE = "big-endian input written as Explicit VR Little Endian"


def _swap_binary(ds: Dataset) -> None:
    """Byte-swap the OW/OF/OL/OD/OV values (other than Pixel Data) of a big-endian data set."""
    import numpy as np

    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_binary(item)
        elif elem.VR in _SWAP_WIDTH and elem.tag != 0x7FE00010 and isinstance(elem.value, bytes):
            n = _SWAP_WIDTH[elem.VR]
            usable = len(elem.value) - len(elem.value) % n
            elem.value = np.frombuffer(elem.value[:usable], dtype=f">u{n}").astype(f"<u{n}").tobytes()


def big_endian_to_little(data: bytes) -> bytes:
    """An Explicit VR Big Endian (retired) Part 10 file as Explicit VR Little Endian, values unchanged.

    Numbers are decoded by pydicom and encoded again; binary values are swapped by their
    VR's word size; Pixel Data is decoded and stored native little endian (colour as
    decoded, planar configuration 0). Raises :class:`DeidError` when it cannot be read.
    """
    import warnings

    import numpy as np
    from pydicom import dcmread, dcmwrite

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(BytesIO(data))
            arr = None
            if "PixelData" in ds and int(ds.get("BitsAllocated", 0)) >= 8:
                ds.pixel_array_options(raw=True)  # colour as stored: Photometric Interpretation stays true
                arr = np.ascontiguousarray(ds.pixel_array)
            for _ in ds.iterall():
                pass  # every raw element decoded while the big-endian reader is in force
            _swap_binary(ds)
            if arr is not None:
                pixel = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
                ds.PixelData = pixel + b"\x00" * (len(pixel) % 2)
                ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) == 8 else "OW"
                if int(ds.get("SamplesPerPixel", 1)) > 1:
                    ds.PlanarConfiguration = 0
            ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
            ds.preamble = b"\x00" * 128
            buffer = BytesIO()
            dcmwrite(buffer, ds, little_endian=True, implicit_vr=False, force_encoding=True)
        except Exception as exc:  # unreadable big-endian data stays refused, with the reason
            raise DeidError(f"big-endian file could not be converted ({type(exc).__name__})") from exc
    return buffer.getvalue()


def is_big_endian(data: bytes) -> bool:
    """Whether the file meta names Explicit VR Big Endian (read from the meta's own bytes)."""
    return data[128:132] == b"DICM" and b"1.2.840.10008.1.2.2\x00" in data[132:1024]
