"""What both protocols share: the PACS URL, its errors, the rate limit, rows from data sets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pacs_workbench.dicom.schema import dataset_to_row

DEFAULT_AET = "PACSWB"
DEFAULT_TIMEOUT = 60.0
DEFAULT_PAGE_SIZE = 100
# Byte-valued VRs never become index columns (pixel data, bulk data, unknown blobs).
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"}

Level = Literal["study", "series", "instance"]

STUDY_FIELDS: tuple[str, ...] = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_FIELDS: tuple[str, ...] = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "ProtocolName",
    "Manufacturer",
    "NumberOfSeriesRelatedInstances",
)
INSTANCE_FIELDS: tuple[str, ...] = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
)


class PacsError(RuntimeError):
    """A PACS operation failed (association refused or aborted, failure status)."""


class SeriesNotFoundError(PacsError):
    """The PACS does not know the requested series (not worth retrying)."""


# --- URLs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacsUrl:
    """A parsed workbench PACS URL.

    Attributes
    ----------
    protocol
        ``"dicomweb"`` or ``"dimse"``.
    url
        The plain HTTP(S) base URL of the DICOMweb service (empty for DIMSE).
    host, port
        Network address of the PACS.
    called_aet
        AE title of the PACS (DIMSE only).
    """

    protocol: Literal["dicomweb", "dimse"]
    url: str
    host: str
    port: int
    called_aet: str = ""

    def __str__(self) -> str:
        if self.protocol == "dicomweb":
            return f"dicomweb+{self.url}"
        return f"dimse://{self.called_aet}@{self.host}:{self.port}"


def parse_pacs_url(url: str | PacsUrl) -> PacsUrl:
    """Parse ``dicomweb+http(s)://HOST:PORT/PATH`` or ``dimse://AET@HOST:PORT``.

    Raises
    ------
    ValueError
        When the URL has another scheme or lacks host, port or AE title.
    """
    if isinstance(url, PacsUrl):
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("dicomweb+http", "dicomweb+https"):
        if not parts.hostname:
            raise ValueError(f"DICOMweb URL without a host: {url!r}")
        http = scheme.split("+", 1)[1]
        port = parts.port or (443 if http == "https" else 80)
        base = f"{http}://{parts.netloc}{parts.path.rstrip('/')}"
        return PacsUrl("dicomweb", base, parts.hostname, port)
    if scheme == "dimse":
        if not (parts.username and parts.hostname and parts.port):
            raise ValueError(f"DIMSE URL must look like dimse://AET@HOST:PORT, got {url!r}")
        aet = parts.username
        if len(aet) > 16:
            raise ValueError(f"AE title {aet!r} is longer than 16 characters")
        return PacsUrl("dimse", "", parts.hostname, parts.port, aet)
    raise ValueError(f"unsupported PACS URL {url!r}: use dicomweb+http://HOST:PORT/PATH or dimse://AET@HOST:PORT")


def is_pacs_url(text: str) -> bool:
    """Whether ``text`` is a PACS URL (rather than a folder)."""
    return text.lower().startswith(("dicomweb+http://", "dicomweb+https://", "dimse://"))


# --- politeness --------------------------------------------------------------------------------


class RateLimiter:
    """At most ``rate`` acquisitions per second, shared by all threads.

    Parameters
    ----------
    rate
        Requests per second; ``None`` or ``<= 0`` means unlimited.
    """

    def __init__(self, rate: float | None = None) -> None:
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._lock = threading.Lock()
        self._next = 0.0
        self.count = 0

    def acquire(self) -> None:
        """Block until the next request may go out."""
        with self._lock:
            self.count += 1
            if not self.interval:
                return
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            time.sleep(wait)


# --- rows --------------------------------------------------------------------------------------


def _element_value(elem: DataElement) -> Any:
    value = elem.value
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        items = [_scalar(v) for v in value]
        return "\\".join("" if v is None else str(v) for v in items) if items else None
    return _scalar(value)


def _scalar(value: Any) -> Any:
    # DS/IS/PersonName subclass or wrap plain types; plain ones keep Parquet columns simple.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def flatten_dataset(ds: Dataset) -> dict[str, Any]:
    """Top-level attributes of ``ds`` as ``{keyword: value}``.

    Sequences and byte-valued attributes are left out; multi-valued attributes are
    joined with a backslash, as in the DICOM encoding; person names become strings.
    """
    row: dict[str, Any] = {}
    for elem in ds:
        if not elem.keyword or elem.VR in _BINARY_VRS:
            continue
        row[elem.keyword] = _element_value(elem)
    return row


def instance_row(ds: Dataset, path: str, size: int | None = None) -> dict[str, Any]:
    """One ``instances.parquet`` row for an instance known by its header only.

    The folder crawl's row builder (:func:`pacs_workbench.dicom.schema.dataset_to_row`) makes
    it, so PACS rows and folder rows have identical columns; ``path`` is where the instance
    lives (a WADO-RS URL or a ``dimse://`` path).
    """
    return dataset_to_row(ds, path, size)
