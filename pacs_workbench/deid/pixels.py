"""Burned-in text: decide which images may carry it, find it with OCR, blank it in every frame.

An image is checked when anything says it may hold burned-in text (PS3.15 E.3.1,
Clean Pixel Data Option): (0028,0301) Burned In Annotation ``YES``; a modality that
usually carries screen text (US, SC, OT, XC, ES, DOC, ...); a Secondary Capture SOP
Class; an Image Type such as ``SCREEN SAVE`` or ``DOSE INFO``; or a known vendor region
(``tables/vendor_regions.json``). On those images text is detected with
rapidocr-onnxruntime (text detection only: every detected box is blanked, whatever it
reads) on the first, middle and last frame; the boxes, widened by a margin, and the
vendor regions are blanked in every frame. The result is checked again at a higher
detection resolution (small text too); what that finds is blanked and checked again,
and text that survives four rounds makes the image fail.

PALETTE COLOR images are read through their palette and blanked in the stored indices;
YBR images (decoded to RGB) and compressed images that had boxes blanked are stored
uncompressed, with a note for the log. Failing closed: an image to check whose pixels
cannot be decoded (no decoder for its transfer syntax), whose photometric
interpretation or bit depth (1 bit) is not supported, or where OCR fails raises
:class:`PixelCleaningError`; the caller quarantines it.
Images that need no check are never decoded, so their Pixel Data stays byte-identical.

The OCR engine is loaded once per process (:func:`get_ocr_engine`) with one
onnxruntime thread, so parallel workers do not oversubscribe cores and the detected
boxes (hence the output bytes) are deterministic. The audit reads text at the highest
resolution (:func:`read_text`), so it does not share the de-identification's blind spots.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from pacs_workbench.deid.profile import load_vendor_regions

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), pixel columns/rows

#: Modalities whose images usually carry burned-in text.
RISKY_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "DOC", "GM", "SM", "IVUS", "OP", "OPT", "DG", "VL"})
#: Image Type values of screen captures and dose screens.
RISKY_IMAGE_TYPES = frozenset(
    {"SCREEN SAVE", "SCREENSAVE", "SCREEN_SAVE", "SCREENSHOT", "DOSE INFO", "DOSE_INFO", "DOSE REPORT", "REPORT"}
)
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
SUPPORTED_PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "PALETTE COLOR",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_420",
        "YBR_RCT",
        "YBR_ICT",
    }
)
#: Photometric interpretations whose decoded array is the stored one (written back in place).
STORED_AS_DECODED = frozenset({"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"})
DEFAULT_MARGIN = 4
MAX_ROUNDS = 4


class PixelCleaningError(RuntimeError):
    """An image that must be checked for burned-in text cannot be checked or cleaned."""


@dataclass
class PixelResult:
    """What pixel cleaning did to one image.

    Attributes
    ----------
    reasons
        Why the image was checked (e.g. ``"BurnedInAnnotation YES"``, ``"modality US"``).
    boxes
        Rectangles blanked in every frame, ``(x0, y0, x1, y1)``.
    frames
        Number of frames.
    verified_sha256
        :func:`pixel_data_sha256` of the written image, whose last OCR check found no text
        (set by the writer; the audit need not read an image again whose hash is this).
    """

    reasons: list[str]
    boxes: list[Box] = field(default_factory=list)
    frames: int = 0
    note: str = ""
    verified_sha256: str = ""


def pixel_data_sha256(ds: Dataset) -> str:
    """SHA-256 of the (7FE0,0010) Pixel Data value of ``ds`` as stored ("" without one)."""
    import hashlib

    value = ds.get("PixelData")
    return hashlib.sha256(bytes(value)).hexdigest() if value is not None else ""


def _as_str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value.decode("latin-1") if isinstance(value, bytes) else value]
    try:
        return [str(v) for v in value]
    except TypeError:
        return [str(value)]


def vendor_regions(ds: Dataset | dict[str, Any]) -> list[Box]:
    """Known text rectangles for this image from ``tables/vendor_regions.json``."""
    out: list[Box] = []
    for entry in load_vendor_regions():
        ok = True
        for keyword, expected in entry["match"].items():
            value = ds.get(keyword)
            if value is None:
                ok = False
                break
            if isinstance(expected, int | float):
                try:
                    ok = int(value) == int(expected)
                except (TypeError, ValueError):
                    ok = False
            else:
                text = "\\".join(_as_str_list(value)).upper()
                ok = str(expected).upper() in text
            if not ok:
                break
        if ok:
            out.extend(tuple(int(v) for v in region) for region in entry["regions"])  # type: ignore[misc]
    return out


def assess_pixel_risk(ds: Dataset | dict[str, Any], *, has_pixels: bool | None = None) -> list[str]:
    """Reasons this image may carry burned-in text; empty when it needs no check.

    Parameters
    ----------
    ds
        The source dataset (before de-identification), or a header holding the
        attributes read here.
    has_pixels
        Whether the instance has (7FE0,0010) Pixel Data; default: look in ``ds``.
    """
    if not (("PixelData" in ds) if has_pixels is None else has_pixels):
        return []
    reasons = []
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        reasons.append("BurnedInAnnotation YES")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in RISKY_MODALITIES:
        reasons.append(f"modality {modality}")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        reasons.append("Secondary Capture SOP Class")
    image_type = {v.strip().upper() for v in _as_str_list(ds.get("ImageType"))}
    risky_types = sorted(image_type & RISKY_IMAGE_TYPES)
    if risky_types:
        reasons.append("image type " + "/".join(risky_types))
    if vendor_regions(ds):
        reasons.append("known vendor text region")
    return reasons


# --- OCR ---------------------------------------------------------------------------------------

_OCR_ENGINE: Any = None
_OCR_LOCK = threading.Lock()

#: Text detection resolutions, as RapidOCR's (limit type, side length): ``fast`` keeps the
#: image's own size (first pass, read at :data:`FAST_SCALE` of it); ``sensitive`` enlarges the
#: shorter side to 512 pixels (the check after blanking, which also finds small text such as
#: ultrasound annotations); ``thorough`` is RapidOCR's default of 736 pixels (the audit).
DETECTION_MODES: dict[str, tuple[str, int]] = {
    "fast": ("max", 960),
    "sensitive": ("min", 512),
    "thorough": ("min", 736),
}
#: The first pass reads at three quarters of the frame's size: screen text stays detectable
#: at about half the model's cost, and what it misses the sensitive check after blanking finds.
FAST_SCALE = 0.75


def get_ocr_engine() -> Any:
    """The process-wide RapidOCR engine, created on first use (models ship in the wheel)."""
    global _OCR_ENGINE
    if _OCR_ENGINE is None:
        with _OCR_LOCK:
            if _OCR_ENGINE is None:
                from rapidocr_onnxruntime import RapidOCR

                _OCR_ENGINE = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1, print_verbose=False)
    return _OCR_ENGINE


#: Pixels of context kept around the content of a frame when detection runs on its content only.
CONTENT_MARGIN = 32
#: Detection runs on the content's bounding box when that covers at most this share of the frame.
CROP_AREA = 0.5


def content_box(rgb: np.ndarray) -> Box | None:
    """The bounding box of the pixels that differ from the background, or ``None`` for a uniform frame.

    The background is the most common grey value (the top-left colour of an RGB frame). A
    uniform area holds no text whatever reads it, so OCR needs to look at the box only.
    """
    if rgb.ndim == 3:
        first = rgb[0, 0]
        differs = rgb[..., 0] != first[0]
        for channel in range(1, rgb.shape[-1]):
            differs |= rgb[..., channel] != first[channel]
    else:
        differs = rgb != np.bincount(rgb.ravel(), minlength=256).argmax()
    rows = np.flatnonzero(differs.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(differs.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def detection_ratio(height: int, width: int, mode: str) -> float:
    """The scale text detection gives a ``height`` x ``width`` frame in ``mode`` (RapidOCR's rules)."""
    limit_type, side = DETECTION_MODES[mode]
    if limit_type == "min":
        return side / min(height, width) if min(height, width) < side else 1.0
    longest = max(height, width)
    limit = 960 if longest < 960 else 1500 if longest < 1500 else 2000  # RapidOCR's steps for "max"
    return (limit / longest if longest > limit else 1.0) * FAST_SCALE


def _ocr(image: np.ndarray, mode: str, recognize: bool) -> list[Any]:
    """Run the engine on an 8-bit grey or RGB frame at the detection resolution of ``mode``.

    Only the frame's content is read: a uniform frame gives no result without running the
    model, and content covering at most :data:`CROP_AREA` of the frame is cut out (with
    :data:`CONTENT_MARGIN` pixels of context). The part read is scaled as the whole frame
    would be (:func:`detection_ratio`) and the polygons are mapped back to frame coordinates.
    Returns polygons (detection) or ``[polygon, text, score]`` (recognition).
    """
    import cv2

    box = content_box(image)
    if box is None:
        return []
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    x0, y0 = max(0, x0 - CONTENT_MARGIN), max(0, y0 - CONTENT_MARGIN)
    x1, y1 = min(width, x1 + CONTENT_MARGIN), min(height, y1 + CONTENT_MARGIN)
    if (x1 - x0) * (y1 - y0) > CROP_AREA * height * width:
        x0, y0, x1, y1 = 0, 0, width, height
    part = image[y0:y1, x0:x1]
    if part.ndim == 2:
        part = np.stack([part] * 3, axis=-1)
    ratio = detection_ratio(height, width, mode)
    size = (max(1, round((x1 - x0) * ratio)), max(1, round((y1 - y0) * ratio)))
    scaled = np.ascontiguousarray(cv2.resize(part, size) if size != (x1 - x0, y1 - y0) else part)
    engine = get_ocr_engine()
    with _OCR_LOCK:
        engine.text_det.limit_type, engine.text_det.limit_side_len = "min", 1  # scaled already
        if recognize:
            result, _ = engine(scaled, use_det=True, use_cls=False, use_rec=True)
        else:
            polygons, _ = engine.text_det(scaled)  # detection alone: no crops cut for recognition
            result = [] if polygons is None else list(polygons)
    if not result:
        return []
    factor = np.array([(x1 - x0) / size[0], (y1 - y0) / size[1]])
    offset = np.array([x0, y0], dtype=float)

    def back(points: Any) -> list[list[float]]:
        return (np.asarray(points, dtype=float).reshape(-1, 2) * factor + offset).tolist()

    if recognize:
        return [[back(r[0]), *r[1:]] for r in result]
    return [back(poly) for poly in result]


def _polygon_to_box(points: Any, width: int, height: int, margin: int) -> Box:
    arr = np.asarray(points, dtype=float).reshape(-1, 2)
    x0 = max(0, int(np.floor(arr[:, 0].min())) - margin)
    y0 = max(0, int(np.floor(arr[:, 1].min())) - margin)
    x1 = min(width, int(np.ceil(arr[:, 0].max())) + margin + 1)
    y1 = min(height, int(np.ceil(arr[:, 1].max())) + margin + 1)
    return (x0, y0, x1, y1)


def detect_text_boxes(image: np.ndarray, margin: int = DEFAULT_MARGIN, mode: str = "fast") -> list[Box]:
    """Text boxes in an 8-bit RGB or grey image (OCR text detection), widened by ``margin``.

    ``mode`` is a key of :data:`DETECTION_MODES`.
    """
    height, width = image.shape[:2]
    result = _ocr(image, mode, recognize=False)
    if not result:
        return []
    return [_polygon_to_box(poly, width, height, margin) for poly in result]


def read_text(image: np.ndarray) -> list[tuple[Box, str, float]]:
    """Thorough OCR of an 8-bit image: ``(box, text, score)`` per line read (used by the audit)."""
    height, width = image.shape[:2]
    result = _ocr(image, "thorough", recognize=True)
    if not result:
        return []
    return [(_polygon_to_box(r[0], width, height, 0), str(r[1]), float(r[2])) for r in result]


# --- rendering and masking ---------------------------------------------------------------------


def frames_array(ds: Dataset) -> np.ndarray:
    """Pixel array shaped (frames, rows, columns[, samples]); raises PixelCleaningError."""
    from pydicom.pixels import get_decoder

    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise PixelCleaningError(f"no pixel decoder for transfer syntax {ts.name or ts}") from exc
    if not decoder.is_available:
        raise PixelCleaningError(f"no pixel decoder installed for transfer syntax {ts.name}")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise PixelCleaningError(f"photometric interpretation {photometric or 'missing'} not supported for cleaning")
    if int(ds.get("BitsAllocated", 0)) not in (8, 16, 32):
        raise PixelCleaningError(f"Bits Allocated {ds.get('BitsAllocated')} not supported for cleaning")
    if ts in ("1.2.840.10008.1.2.2",):
        raise PixelCleaningError("big-endian pixel data not supported for cleaning")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # any decoder failure means the pixels cannot be checked
        raise PixelCleaningError(
            f"pixel data could not be decoded by the installed decoders ({type(exc).__name__})"
        ) from exc
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis, ...]
    if (samples == 1 and arr.ndim != 3) or (samples > 1 and arr.ndim != 4):
        raise PixelCleaningError("pixel array shape does not match the image attributes")
    return np.array(arr)


def decoded_frames(ds: Dataset) -> tuple[np.ndarray, str]:
    """:func:`frames_array` and the photometric interpretation of the decoded frames; raises PixelCleaningError."""
    arr = frames_array(ds)
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric == "PALETTE COLOR":
        return _through_palette(ds, arr), "RGB"
    if photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom converts YBR to RGB when decoding
    return arr, photometric


def _through_palette(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    """Palette indices as the RGB a viewer shows (what OCR must read)."""
    from pydicom.pixels import apply_color_lut

    try:
        return np.asarray(apply_color_lut(arr, ds))
    except Exception as exc:  # a broken palette cannot be shown, so it cannot be checked
        raise PixelCleaningError(f"palette could not be applied ({type(exc).__name__})") from exc


def render_frame(frame: np.ndarray, photometric: str) -> np.ndarray:
    """One frame as 8-bit for OCR: min-max scaled grey (MONOCHROME1 inverted) or RGB."""
    f = frame.astype(np.float64)
    lo, hi = float(np.min(f)), float(np.max(f))
    if hi <= lo:
        scaled = np.zeros(f.shape, dtype=np.uint8)
    elif frame.dtype == np.uint8:
        scaled = frame.astype(np.uint8)
    else:
        scaled = ((f - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1" and frame.ndim == 2:
        scaled = 255 - scaled
    return scaled


def sample_frames(n: int) -> list[int]:
    """The frames OCR reads of ``n``: first, middle and last."""
    return sorted({0, n // 2, n - 1}) if n > 0 else []


def _blank(arr: np.ndarray, boxes: list[Box], photometric: str) -> None:
    if photometric == "MONOCHROME1":
        fill = arr.max()
    elif photometric == "PALETTE COLOR":
        fill = arr.min()  # one palette entry everywhere in the box: no text left
    elif arr.ndim == 4:
        fill = 0
    else:
        fill = arr.min()
    for x0, y0, x1, y1 in boxes:
        arr[:, y0:y1, x0:x1, ...] = fill


def _detect(arr: np.ndarray, photometric: str, margin: int, mode: str) -> list[Box]:
    boxes: list[Box] = []
    for i in sample_frames(arr.shape[0]):
        try:
            boxes.extend(detect_text_boxes(render_frame(arr[i], photometric), margin=margin, mode=mode))
        except Exception as exc:  # OCR failure must fail closed
            raise PixelCleaningError(f"OCR failed ({type(exc).__name__})") from exc
    return boxes


def _write_back(ds: Dataset, arr: np.ndarray, photometric: str) -> str:
    """Store the cleaned array; native little-endian data in place, anything else decompressed.

    Returns the note for the log ("" when stored in place).
    """
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    stored = str(ds.PhotometricInterpretation).strip()
    native = not ts.is_compressed and ts.is_little_endian and stored in STORED_AS_DECODED
    frames = arr.shape[0]
    if native:
        bits = int(ds.BitsAllocated)
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}").newbyteorder("<")
        out = arr.astype(dtype)
        if out.ndim == 4 and int(ds.get("PlanarConfiguration", 0)) == 1:
            out = out.transpose(0, 3, 1, 2)
        data = out.tobytes()
        if len(data) % 2:
            data += b"\x00"
        ds.PixelData = data
        return ""
    target = "RGB" if arr.ndim == 4 else photometric
    store = arr if frames > 1 else arr[0]
    if store.dtype not in (np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32):
        raise PixelCleaningError(f"cleaned pixel type {store.dtype} cannot be stored")
    bits_stored = int(ds.get("BitsStored", store.dtype.itemsize * 8))
    ds.set_pixel_data(store, target, bits_stored, generate_instance_uid=False)
    return f"cleaned pixels stored uncompressed {target} (source: {ts.name or ts}, {stored})"


def clean_pixel_data(ds: Dataset, reasons: list[str], *, margin: int = DEFAULT_MARGIN) -> PixelResult:
    """Blank burned-in text in every frame of ``ds`` (modified in place).

    Parameters
    ----------
    ds
        The de-identified dataset, with file meta (the transfer syntax decides decoding).
    reasons
        From :func:`assess_pixel_risk` on the source.
    margin
        Pixels added around each detected text box.

    Returns
    -------
    PixelResult
        The blanked rectangles; (0028,0301) Burned In Annotation is set to ``NO``.

    Raises
    ------
    PixelCleaningError
        When the pixels cannot be decoded, the format is not supported, OCR fails, or
        text is still found after blanking.
    """
    arr = frames_array(ds)
    stored = str(ds.PhotometricInterpretation).strip()
    photometric = "RGB" if stored.startswith("YBR") else stored  # pydicom decodes YBR to RGB

    def detect(mode: str) -> list[Box]:
        if stored == "PALETTE COLOR":  # read through the palette, blank the stored indices
            return _detect(_through_palette(ds, arr), "RGB", margin, mode)
        return _detect(arr, photometric, margin, mode)

    height, width = arr.shape[1], arr.shape[2]
    boxes: list[Box] = []
    for x0, y0, x1, y1 in vendor_regions(ds):
        boxes.append((max(0, x0), max(0, y0), min(width, x1), min(height, y1)))
    boxes.extend(detect("fast"))
    changed = bool(boxes)
    if boxes:
        _blank(arr, boxes, photometric)
    # the check runs at the sensitive resolution: it also finds text too small for the first pass
    for _ in range(MAX_ROUNDS):
        remaining = detect("sensitive")
        if not remaining:
            break
        boxes.extend(remaining)
        _blank(arr, remaining, photometric)
        changed = True
    else:
        if detect("sensitive"):
            raise PixelCleaningError("text still detected after blanking")
    note = _write_back(ds, arr, photometric) if changed else ""
    ds.BurnedInAnnotation = "NO"
    return PixelResult(reasons=list(reasons), boxes=sorted(set(boxes)), frames=int(arr.shape[0]), note=note)
