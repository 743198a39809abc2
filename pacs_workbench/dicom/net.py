"""Query and retrieve from a PACS: DICOMweb and DIMSE.

Researchers rarely get a folder; they query a PACS. This module speaks both protocols
they meet, behind one URL form:

- ``dicomweb+http://HOST:PORT/dicom-web`` (or ``dicomweb+https://...``): QIDO-RS search
  at study, series and instance level, WADO-RS metadata and retrieve (``dicomweb-client``);
- ``dimse://AET@HOST:PORT``: C-ECHO, C-FIND at study, series and image level, C-GET or
  C-MOVE retrieve (``pynetdicom``).

Query results are rows keyed by DICOM keyword (``StudyInstanceUID``, ``Modality``, ...),
the same columns the folder crawl writes, so a cohort can be chosen from PACS metadata
alone and only the chosen series fetched with :func:`retrieve_series`.

Being polite to a clinical PACS is built in: a shared rate limit (requests per second)
covers every HTTP request and DIMSE operation, retrieval runs on a bounded number of
connections, and QIDO-RS results are paged (``limit``/``offset``).

Retrieval is resumable. Each series gets a folder ``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/``
with one ``<SOPInstanceUID>.dcm`` per instance (written to a temp file and renamed, so
a file on disk is always whole) and a ``manifest.json`` listing the SOP Instance UIDs
the PACS reported. A rerun compares the manifest with the files on disk and asks the
PACS only for what is missing; a complete series costs no request at all. Failures
(refused or dropped connections, timeouts, failed sub-operations) are retried with
exponential backoff; series still incomplete after the last attempt are listed in the
summary, never skipped silently.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pandas as pd
import requests
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

DEFAULT_AET = "PACSWB"
DEFAULT_TIMEOUT = 60.0
DEFAULT_PAGE_SIZE = 100
MANIFEST = "manifest.json"
SUMMARY = "retrieve_summary.json"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
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


class _PoliteSession(requests.Session):
    """A session that waits for the rate limiter and never waits forever for an answer."""

    def __init__(self, limiter: RateLimiter, timeout: float) -> None:
        super().__init__()
        self.limiter = limiter
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.limiter.acquire()
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)


def dicomweb_client(
    url: str | PacsUrl, *, limiter: RateLimiter | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` for a workbench DICOMweb URL.

    HTTP-level retries of the client are off: :func:`retrieve_series` retries whole
    series itself, with backoff, and reports each retry.
    """
    from dicomweb_client.api import DICOMwebClient

    pacs = parse_pacs_url(url)
    if pacs.protocol != "dicomweb":
        raise ValueError(f"not a DICOMweb URL: {pacs}")
    session = _PoliteSession(limiter or RateLimiter(), timeout)
    client = DICOMwebClient(pacs.url, session=session, timeout=timeout)
    client.set_http_retry_params(retry=False)
    return client


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


def _dataset_from_json(item: Mapping[str, Any]) -> Dataset:
    # Bulk data (pixels) is never needed for a row; leave it out instead of fetching it.
    return Dataset.from_json(dict(item), bulk_data_uri_handler=lambda _tag, _vr, _uri: None)


def instance_row(ds: Dataset, path: str, size: int | None = None) -> dict[str, Any]:
    """One ``instances.parquet`` row for an instance known by its header only.

    The index's own row builder makes it, so PACS rows and folder rows have identical
    columns; ``path`` is where the instance lives (a WADO-RS URL or a ``dimse://`` path).
    """
    from pacs_workbench.cohort.index import dataset_to_row

    return dataset_to_row(ds, path, size)


# --- DICOMweb ----------------------------------------------------------------------------------


def _paged(fetch: Callable[[int, int], list[dict[str, Any]]], page_size: int) -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        page = fetch(page_size, offset)
        yield from page
        # A server that ignores `limit` answers with everything at once: stop there.
        if len(page) < page_size or len(page) > page_size:
            return
        offset += len(page)


def search_dicomweb(
    url: str | PacsUrl,
    level: Level,
    *,
    filters: Mapping[str, str] | None = None,
    fields: Sequence[str] = (),
    study_uid: str | None = None,
    series_uid: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    rate_limit: float | None = None,
    client: Any = None,
) -> Iterator[dict[str, Any]]:
    """QIDO-RS search at one level, paged, as rows keyed by DICOM keyword.

    Parameters
    ----------
    url
        ``dicomweb+http://HOST:PORT/PATH``.
    level
        ``"study"``, ``"series"`` or ``"instance"``.
    filters
        Matching keys, e.g. ``{"StudyDate": "20200101-20201231", "ModalitiesInStudy": "CT"}``.
    fields
        Extra attributes to return (``includefield``).
    study_uid, series_uid
        Restrict to one study / series (``/studies/{uid}/series``...).
    page_size
        ``limit`` of each request; pages follow with ``offset`` until a short page.
    rate_limit
        Requests per second (ignored when ``client`` is given).
    client
        A client from :func:`dicomweb_client` to reuse.

    Yields
    ------
    dict
        One row per match, e.g. ``{"StudyInstanceUID": ..., "Modality": "CT", ...}``.
    """
    if client is None:
        client = dicomweb_client(url, limiter=RateLimiter(rate_limit))
    fields_list = list(fields) or None
    search_filters = dict(filters or {})

    def fetch(limit: int, offset: int) -> list[dict[str, Any]]:
        common: dict[str, Any] = {
            "limit": limit,
            "offset": offset,
            "fields": fields_list,
            "search_filters": search_filters,
        }
        if level == "study":
            result = client.search_for_studies(**common)
        elif level == "series":
            result = client.search_for_series(study_instance_uid=study_uid, **common)
        elif level == "instance":
            result = client.search_for_instances(
                study_instance_uid=study_uid, series_instance_uid=series_uid, **common
            )
        else:
            raise ValueError(f"unknown QIDO-RS level {level!r}")
        return list(result or [])

    for item in _paged(fetch, page_size):
        yield flatten_dataset(_dataset_from_json(item))


def _wado_path(pacs: PacsUrl, study: str, series: str, sop: str) -> str:
    return f"{pacs.url}/studies/{study}/series/{series}/instances/{sop}"


def _qido_instances(client: Any, study: str, series: str, page_size: int) -> Iterator[dict[str, Any]]:
    def fetch(limit: int, offset: int) -> list[dict[str, Any]]:
        found = client.search_for_instances(
            study_instance_uid=study,
            series_instance_uid=series,
            limit=limit,
            offset=offset,
            fields=list(INSTANCE_FIELDS),
        )
        return list(found or [])

    return _paged(fetch, page_size)


def query_instances_dicomweb(
    url: str | PacsUrl,
    *,
    filters: Mapping[str, str] | None = None,
    study_uids: Iterable[str] | None = None,
    metadata: bool = True,
    page_size: int = DEFAULT_PAGE_SIZE,
    rate_limit: float | None = None,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Index rows for every instance a DICOMweb PACS holds (or of some studies).

    Walks studies (QIDO-RS, paged, with ``filters``), their series (QIDO-RS), and per
    series either the full instance headers (WADO-RS series metadata, ``metadata=True``:
    every attribute, as the folder crawl reads them) or the QIDO-RS instance matches
    (``metadata=False``: fewer attributes, less load on the PACS).

    Yields
    ------
    dict
        One row per instance with DICOM keyword columns and ``path`` set to the
        instance's WADO-RS URL (``size`` is not known without retrieving it: ``None``).
    """
    pacs = parse_pacs_url(url)
    client = dicomweb_client(pacs, limiter=RateLimiter(rate_limit))
    if study_uids is None:
        studies: Iterable[str] = (
            str(row["StudyInstanceUID"])
            for row in search_dicomweb(pacs, "study", filters=filters, page_size=page_size, client=client)
        )
    else:
        studies = list(study_uids)
    bar = tqdm(desc="DICOMweb instances", unit="instance", disable=not progress)
    try:
        for study in studies:
            series_rows = list(search_dicomweb(pacs, "series", study_uid=study, page_size=page_size, client=client))
            for series_row in series_rows:
                series = str(series_row["SeriesInstanceUID"])
                if metadata:
                    items = client.retrieve_series_metadata(study, series)
                    datasets = [_dataset_from_json(item) for item in items]
                else:
                    datasets = [
                        _dataset_from_json(item) for item in _qido_instances(client, study, series, page_size)
                    ]
                for ds in datasets:
                    sop = str(ds.get("SOPInstanceUID", ""))
                    yield instance_row(ds, _wado_path(pacs, study, series, sop), None)
                    bar.update(1)
    finally:
        bar.close()


# --- DIMSE -------------------------------------------------------------------------------------


def _new_ae(calling_aet: str, timeout: float) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 15.0)
    return ae


def _associate(ae: Any, pacs: PacsUrl, limiter: RateLimiter | None, **kwargs: Any) -> Any:
    if limiter is not None:
        limiter.acquire()
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.called_aet, **kwargs)
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        raise PacsError(f"association with {pacs} {reason}")
    return assoc


def echo_dimse(url: str | PacsUrl, *, calling_aet: str = DEFAULT_AET, timeout: float = 30.0) -> int:
    """C-ECHO the PACS; returns the DIMSE status (0 is success).

    Raises
    ------
    PacsError
        When no association can be made or the echo gets no answer.
    """
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    pacs = parse_pacs_url(url)
    ae = _new_ae(calling_aet, timeout)
    ae.add_requested_context(Verification)
    assoc = _associate(ae, pacs, None)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status:
        raise PacsError(f"C-ECHO to {pacs}: no response")
    return int(status.Status)


_DIMSE_LEVELS = {"study": "STUDY", "series": "SERIES", "instance": "IMAGE", "image": "IMAGE"}


def find_dimse(
    url: str | PacsUrl,
    level: str,
    query: Mapping[str, Any] | None = None,
    *,
    fields: Sequence[str] = (),
    calling_aet: str = DEFAULT_AET,
    rate_limit: float | None = None,
    limiter: RateLimiter | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[dict[str, Any]]:
    """C-FIND (Study Root) at ``level`` as rows keyed by DICOM keyword.

    Parameters
    ----------
    url
        ``dimse://AET@HOST:PORT``.
    level
        ``"study"``, ``"series"`` or ``"instance"`` (IMAGE).
    query
        Matching keys, e.g. ``{"StudyDate": "20200101-", "ModalitiesInStudy": "CT"}``.
    fields
        Return keys (empty values in the identifier); the level's defaults are added.

    Raises
    ------
    PacsError
        On association failure or a failure status from the PACS.
    """
    pacs = parse_pacs_url(url)
    qr_level = _DIMSE_LEVELS[level.lower()]
    defaults = {"STUDY": STUDY_FIELDS, "SERIES": SERIES_FIELDS, "IMAGE": INSTANCE_FIELDS}[qr_level]
    ident = _identifier(level, (*defaults, *fields), query)
    limiter = limiter or RateLimiter(rate_limit)
    rows = []
    for identifier in _find_datasets(pacs, ident, calling_aet, limiter, timeout):
        row = flatten_dataset(identifier)
        row.pop("QueryRetrieveLevel", None)
        rows.append(row)
    return rows


def _find_datasets(
    pacs: PacsUrl, ident: Dataset, calling_aet: str, limiter: RateLimiter, timeout: float
) -> list[Dataset]:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    ae = _new_ae(calling_aet, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = _associate(ae, pacs, limiter)
    found: list[Dataset] = []
    try:
        for status, identifier in assoc.send_c_find(ident, StudyRootQueryRetrieveInformationModelFind):
            if not status:
                raise PacsError(f"C-FIND on {pacs}: connection timed out, aborted or invalid response")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if identifier is not None:
                    found.append(identifier)
            elif code != 0x0000:
                raise PacsError(f"C-FIND on {pacs} failed with status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return found


def _identifier(level: str, keys: Sequence[str], query: Mapping[str, Any] | None) -> Dataset:
    ident = Dataset()
    ident.QueryRetrieveLevel = _DIMSE_LEVELS[level.lower()]
    for keyword in keys:
        if keyword not in ident:
            setattr(ident, keyword, None)  # an empty return key
    for keyword, value in (query or {}).items():
        setattr(ident, keyword, value)
    return ident


def query_instances_dimse(
    url: str | PacsUrl,
    *,
    filters: Mapping[str, Any] | None = None,
    study_uids: Iterable[str] | None = None,
    fields: Sequence[str] = (),
    calling_aet: str = DEFAULT_AET,
    rate_limit: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Index rows from C-FIND: studies, then their series, then their images.

    DIMSE has no paging; one C-FIND per study and per series keeps each answer small.
    The image-level C-FIND asks for every attribute the index stores (a PACS returns
    those it can); study and series attributes come from their own levels. Rows have the
    ``instances.parquet`` columns, with ``path`` = ``dimse://AET@HOST:PORT/<study>/<series>/<sop>``.
    """
    from pacs_workbench.cohort.index import ATTRIBUTE_KEYWORDS

    pacs = parse_pacs_url(url)
    limiter = RateLimiter(rate_limit)
    image_keys = tuple(dict.fromkeys((*INSTANCE_FIELDS, *ATTRIBUTE_KEYWORDS, "ContrastBolusRoute", *fields)))
    if study_uids is None:
        studies = _find_datasets(pacs, _identifier("study", STUDY_FIELDS, filters), calling_aet, limiter, timeout)
    else:
        studies = [_identifier("study", (), {"StudyInstanceUID": uid}) for uid in study_uids]
    bar = tqdm(desc="C-FIND instances", unit="instance", disable=not progress)
    try:
        for study in studies:
            study_uid = str(study.StudyInstanceUID)
            series_query = _identifier("series", SERIES_FIELDS, {"StudyInstanceUID": study_uid})
            for series in _find_datasets(pacs, series_query, calling_aet, limiter, timeout):
                series_uid = str(series.SeriesInstanceUID)
                image_query = _identifier(
                    "instance", image_keys, {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
                )
                for image in _find_datasets(pacs, image_query, calling_aet, limiter, timeout):
                    merged = Dataset()
                    for level in (study, series, image):
                        # Empty return keys must not hide a value another level returned.
                        merged.update({e.tag: e for e in level if e.value not in (None, "")})
                    if "QueryRetrieveLevel" in merged:
                        del merged.QueryRetrieveLevel
                    sop = str(merged.get("SOPInstanceUID", ""))
                    yield instance_row(merged, f"{pacs}/{study_uid}/{series_uid}/{sop}", None)
                    bar.update(1)
    finally:
        bar.close()


# --- protocol-agnostic queries -----------------------------------------------------------------


def query_studies(url: str | PacsUrl, filters: Mapping[str, str] | None = None, **kwargs: Any) -> pd.DataFrame:
    """Studies matching ``filters`` (DICOMweb or DIMSE), one row per study."""
    pacs = parse_pacs_url(url)
    if pacs.protocol == "dicomweb":
        rows = list(search_dicomweb(pacs, "study", filters=filters, fields=STUDY_FIELDS, **kwargs))
    else:
        rows = find_dimse(pacs, "study", filters, **kwargs)
    return pd.DataFrame(rows)


def query_series(
    url: str | PacsUrl, study_uids: Iterable[str], filters: Mapping[str, str] | None = None, **kwargs: Any
) -> pd.DataFrame:
    """Series of the given studies (DICOMweb or DIMSE), one row per series."""
    pacs = parse_pacs_url(url)
    rows: list[dict[str, Any]] = []
    for study in study_uids:
        if pacs.protocol == "dicomweb":
            found = search_dicomweb(
                pacs, "series", study_uid=study, filters=filters, fields=SERIES_FIELDS, **kwargs
            )
            rows.extend({"StudyInstanceUID": study, **row} for row in found)
        else:
            rows.extend(find_dimse(pacs, "series", {**(filters or {}), "StudyInstanceUID": study}, **kwargs))
    return pd.DataFrame(rows)


def query_instances(url: str | PacsUrl, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Index rows from either protocol (see :func:`query_instances_dicomweb`, :func:`query_instances_dimse`)."""
    pacs = parse_pacs_url(url)
    if pacs.protocol == "dicomweb":
        return query_instances_dicomweb(pacs, **kwargs)
    return query_instances_dimse(pacs, **kwargs)


# --- retrieve ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesRef:
    """A series to retrieve, by (0020,000D) Study and (0020,000E) Series Instance UID."""

    StudyInstanceUID: str
    SeriesInstanceUID: str


@dataclass
class SeriesResult:
    """What happened to one series."""

    StudyInstanceUID: str
    SeriesInstanceUID: str
    status: str = "pending"  # complete (already on disk) | fetched | missing
    expected: int = 0
    fetched: int = 0
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class RetrieveSummary:
    """Outcome of :func:`retrieve_series`; ``ok`` is False when any series is missing."""

    pacs: str
    requested: int = 0
    already_complete: int = 0
    fetched_series: int = 0
    fetched_instances: int = 0
    requests: int = 0
    retried: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def valid_uid(uid: str) -> bool:
    """Whether ``uid`` is a syntactically valid DICOM UID (safe as a file name, too)."""
    return 0 < len(uid) <= 64 and bool(_UID.match(uid))


def read_series_list(path: str | os.PathLike[str]) -> list[SeriesRef]:
    """Series to retrieve from a cohort table (Parquet or CSV).

    Needs the columns ``StudyInstanceUID`` and ``SeriesInstanceUID``; duplicates are
    dropped, the order is kept.

    Raises
    ------
    ValueError
        When a column is missing.
    """
    file = Path(path)
    if file.suffix.lower() in (".parquet", ".pq"):
        table = pd.read_parquet(file, columns=None)
    else:
        table = pd.read_csv(file, dtype=str)
    missing = {"StudyInstanceUID", "SeriesInstanceUID"} - set(table.columns)
    if missing:
        raise ValueError(f"{file}: cohort table lacks column(s) {', '.join(sorted(missing))}")
    refs: dict[SeriesRef, None] = {}
    for study, series in zip(table["StudyInstanceUID"], table["SeriesInstanceUID"], strict=True):
        refs[SeriesRef(str(study).strip(), str(series).strip())] = None
    return list(refs)


def series_dir(out_dir: Path, ref: SeriesRef) -> Path:
    """Folder of one retrieved series: ``OUT/<StudyInstanceUID>/<SeriesInstanceUID>``."""
    return out_dir / ref.StudyInstanceUID / ref.SeriesInstanceUID


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_dataset_atomic(path: Path, ds: Dataset) -> None:
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    _write_atomic(path, buffer.getvalue())


def _on_disk(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name[:-4] for p in folder.iterdir() if p.name.endswith(".dcm") and not p.name.startswith(".")}


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    file = folder / MANIFEST
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged manifest is rebuilt from the PACS
    if not isinstance(data, dict) or not isinstance(data.get("expected"), list):
        return None
    return data


def _write_manifest(folder: Path, ref: SeriesRef, expected: Sequence[str], sop_classes: Sequence[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "StudyInstanceUID": ref.StudyInstanceUID,
        "SeriesInstanceUID": ref.SeriesInstanceUID,
        "expected": sorted(expected),
        "sop_classes": sorted(set(sop_classes)),
    }
    _write_atomic(folder / MANIFEST, json.dumps(body, indent=1).encode())


class _Fetcher:
    """Protocol-specific listing and fetching of one series' instances."""

    def __init__(self, pacs: PacsUrl, out_dir: Path, limiter: RateLimiter, options: dict[str, Any]) -> None:
        self.pacs = pacs
        self.out_dir = out_dir
        self.limiter = limiter
        self.timeout: float = options["timeout"]
        self.calling_aet: str = options["calling_aet"]
        self.method: str = options["method"]
        self.page_size: int = options["page_size"]
        self._local = threading.local()
        self._lock = threading.Lock()
        self._scp: Any = None
        self._move_counts: dict[str, int] = {}
        if pacs.protocol == "dimse" and self.method == "move":
            self._start_storage_scp(options["listen_host"], options["move_port"])

    # -- listing
    def list_instances(self, ref: SeriesRef) -> tuple[list[str], list[str]]:
        """SOP Instance UIDs and SOP Class UIDs the PACS holds for the series."""
        if self.pacs.protocol == "dicomweb":
            rows = list(
                search_dicomweb(
                    self.pacs,
                    "instance",
                    study_uid=ref.StudyInstanceUID,
                    series_uid=ref.SeriesInstanceUID,
                    fields=("SOPClassUID",),
                    page_size=self.page_size,
                    client=self._client(),
                )
            )
        else:
            rows = find_dimse(
                self.pacs,
                "instance",
                {"StudyInstanceUID": ref.StudyInstanceUID, "SeriesInstanceUID": ref.SeriesInstanceUID},
                calling_aet=self.calling_aet,
                limiter=self.limiter,
                timeout=self.timeout,
            )
        sops = [str(r["SOPInstanceUID"]) for r in rows if r.get("SOPInstanceUID")]
        classes = [str(r["SOPClassUID"]) for r in rows if r.get("SOPClassUID")]
        return sops, classes

    # -- fetching
    def fetch(self, ref: SeriesRef, missing: set[str], whole: bool, sop_classes: Sequence[str]) -> int:
        """Fetch the missing instances of one series into its folder; returns files written."""
        folder = series_dir(self.out_dir, ref)
        folder.mkdir(parents=True, exist_ok=True)
        if self.pacs.protocol == "dicomweb":
            return self._fetch_wado(ref, folder, missing, whole)
        if self.method == "move":
            return self._fetch_move(ref, missing, whole)
        return self._fetch_get(ref, folder, missing, whole, sop_classes)

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            # One client (and HTTP connection pool) per worker thread.
            client = dicomweb_client(self.pacs, limiter=self.limiter, timeout=self.timeout)
            self._local.client = client
        return client

    def _store(self, folder: Path, ds: Dataset) -> bool:
        sop = str(ds.get("SOPInstanceUID", ""))
        if not valid_uid(sop):
            raise PacsError("the PACS sent an instance without a valid SOP Instance UID")
        _write_dataset_atomic(folder / f"{sop}.dcm", ds)
        return True

    def _fetch_wado(self, ref: SeriesRef, folder: Path, missing: set[str], whole: bool) -> int:
        client = self._client()
        # Any transfer syntax: keep what the PACS stored instead of asking it to transcode.
        media = (("application/dicom", "*"),)
        written = 0
        if whole:
            for ds in client.iter_series(ref.StudyInstanceUID, ref.SeriesInstanceUID, media_types=media):
                written += self._store(folder, ds)
            return written
        for sop in sorted(missing):
            ds = client.retrieve_instance(ref.StudyInstanceUID, ref.SeriesInstanceUID, sop, media_types=media)
            written += self._store(folder, ds)
        return written

    # DIMSE storage: the C-STORE handler writes the encoded bytes as received.
    def _handle_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            study = str(ds.get("StudyInstanceUID", ""))
            series = str(ds.get("SeriesInstanceUID", ""))
            sop = str(event.request.AffectedSOPInstanceUID)
            if not (valid_uid(study) and valid_uid(series) and valid_uid(sop)):
                return 0xC211  # refused: cannot file an instance without valid UIDs
            folder = self.out_dir / study / series
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(folder / f"{sop}.dcm", event.encoded_dataset(include_meta=True))
            with self._lock:
                self._move_counts[series] = self._move_counts.get(series, 0) + 1
        except Exception as exc:  # a failed write must fail the sub-operation, not the SCP
            log.warning("C-STORE write failed: %s", type(exc).__name__)
            return 0xA700
        return 0x0000

    def _identifier(self, ref: SeriesRef, missing: set[str], whole: bool) -> Dataset:
        ident = Dataset()
        ident.StudyInstanceUID = ref.StudyInstanceUID
        ident.SeriesInstanceUID = ref.SeriesInstanceUID
        if whole:
            ident.QueryRetrieveLevel = "SERIES"
        else:
            ident.QueryRetrieveLevel = "IMAGE"
            ident.SOPInstanceUID = sorted(missing)
        return ident

    @staticmethod
    def _check_final(status: Any, what: str, pacs: PacsUrl) -> None:
        if not status:
            raise PacsError(f"{what} on {pacs}: connection timed out, aborted or invalid response")
        code = int(status.Status)
        if code in (0x0000, 0xFF00):
            return
        failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
        raise PacsError(f"{what} on {pacs} ended with status 0x{code:04X} ({failed} failed sub-operations)")

    def _fetch_get(
        self, ref: SeriesRef, folder: Path, missing: set[str], whole: bool, sop_classes: Sequence[str]
    ) -> int:
        from pynetdicom import StoragePresentationContexts, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

        ae = _new_ae(self.calling_aet, self.timeout)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        classes = sorted(set(sop_classes)) or [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
        for uid in classes:
            ae.add_requested_context(uid, list(_UNCOMPRESSED_SYNTAXES))  # the PACS can always send these
        # The acceptor picks one transfer syntax per context before it knows the files, so
        # each compressed syntax gets its own context: a compressed original arrives as
        # stored instead of being decompressed (room permitting: 128 contexts at most).
        if len(classes) * (1 + len(_COMPRESSED_SYNTAXES)) < 128:
            for uid in classes:
                for syntax in _COMPRESSED_SYNTAXES:
                    ae.add_requested_context(uid, syntax)
        roles = [build_role(uid, scp_role=True) for uid in classes]
        before = len(_on_disk(folder))
        assoc = _associate(
            ae, self.pacs, self.limiter, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, self._handle_store)]
        )
        try:
            last = None
            for status, _identifier in assoc.send_c_get(
                self._identifier(ref, missing, whole), StudyRootQueryRetrieveInformationModelGet
            ):
                last = status
            self._check_final(last, "C-GET", self.pacs)
        finally:
            if assoc.is_established:
                assoc.release()
        return max(0, len(_on_disk(folder)) - before)

    def _start_storage_scp(self, host: str, port: int | None) -> None:
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        if not port:
            raise ValueError("C-MOVE needs the port of our storage SCP (move_port), as the PACS knows it")
        ae = _new_ae(self.calling_aet, self.timeout)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES[:])
        self._scp = ae.start_server(
            (host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._handle_store)]
        )

    def _fetch_move(self, ref: SeriesRef, missing: set[str], whole: bool) -> int:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

        ae = _new_ae(self.calling_aet, self.timeout)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        with self._lock:
            before = self._move_counts.get(ref.SeriesInstanceUID, 0)
        assoc = _associate(ae, self.pacs, self.limiter)
        try:
            last = None
            for status, _identifier in assoc.send_c_move(
                self._identifier(ref, missing, whole), self.calling_aet, StudyRootQueryRetrieveInformationModelMove
            ):
                last = status
            self._check_final(last, "C-MOVE", self.pacs)
        finally:
            if assoc.is_established:
                assoc.release()
        with self._lock:
            return self._move_counts.get(ref.SeriesInstanceUID, 0) - before

    def close(self) -> None:
        if self._scp is not None:
            self._scp.shutdown()
            self._scp = None


_UNCOMPRESSED_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # explicit VR little endian first: what most archives store
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
)
_COMPRESSED_SYNTAXES = (
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
)

_RETRYABLE = (PacsError, requests.RequestException, OSError, ValueError)


def _retrieve_one(
    fetcher: _Fetcher, ref: SeriesRef, retries: int, backoff: float, refresh: bool
) -> SeriesResult:
    result = SeriesResult(ref.StudyInstanceUID, ref.SeriesInstanceUID)
    if not (valid_uid(ref.StudyInstanceUID) and valid_uid(ref.SeriesInstanceUID)):
        result.status = "missing"
        result.errors.append("invalid Study or Series Instance UID in the cohort table")
        return result
    folder = series_dir(fetcher.out_dir, ref)
    for attempt in range(retries + 1):
        result.attempts = attempt + 1
        try:
            manifest = None if refresh else _read_manifest(folder)
            if manifest is None:
                expected, classes = fetcher.list_instances(ref)
                if not expected:
                    raise SeriesNotFoundError("the PACS holds no instance of this series")
                _write_manifest(folder, ref, expected, classes)
                refresh = False
            else:
                expected, classes = manifest["expected"], manifest.get("sop_classes", [])
            result.expected = len(expected)
            missing = set(expected) - _on_disk(folder)
            if not missing:
                result.status = "fetched" if result.fetched else "complete"
                return result
            result.fetched += fetcher.fetch(ref, missing, len(missing) == len(expected), classes)
            still = set(expected) - _on_disk(folder)
            if still:
                raise PacsError(f"{len(still)} of {len(expected)} instances still missing after the transfer")
            result.status = "fetched"
            return result
        except SeriesNotFoundError as exc:
            result.errors.append(str(exc))
            break
        except _RETRYABLE as exc:
            result.errors.append(f"attempt {attempt + 1}: {type(exc).__name__}: {exc}")
            if attempt < retries:
                delay = backoff * (2**attempt)
                log.warning("series retrieve failed (attempt %d), retrying in %.1f s: %s", attempt + 1, delay, exc)
                time.sleep(delay)
    result.status = "missing"
    return result


def retrieve_series(
    pacs_url: str | PacsUrl,
    series: Iterable[SeriesRef | tuple[str, str]] | pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    calling_aet: str = DEFAULT_AET,
    method: Literal["get", "move"] = "get",
    move_port: int | None = None,
    listen_host: str = "0.0.0.0",
    max_connections: int = 2,
    rate_limit: float | None = None,
    retries: int = 3,
    backoff: float = 2.0,
    timeout: float = DEFAULT_TIMEOUT,
    page_size: int = DEFAULT_PAGE_SIZE,
    refresh: bool = False,
    progress: bool = True,
) -> RetrieveSummary:
    """Retrieve whole series from a PACS into ``out_dir``, resumably.

    Parameters
    ----------
    pacs_url
        ``dicomweb+http://HOST:PORT/PATH`` (WADO-RS) or ``dimse://AET@HOST:PORT``
        (C-GET, or C-MOVE to ``calling_aet``).
    series
        ``SeriesRef``/``(StudyInstanceUID, SeriesInstanceUID)`` pairs or a table with
        those two columns.
    out_dir
        Identified zone: ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
    calling_aet
        Our AE title (DIMSE); also the C-MOVE destination the PACS must know.
    method
        ``"get"`` (C-GET, nothing to configure on the PACS) or ``"move"`` (C-MOVE).
    move_port, listen_host
        Where our storage SCP listens for C-MOVE sub-operations.
    max_connections
        Series fetched at once (each on its own connection).
    rate_limit
        Requests (HTTP requests, associations, C-FINDs) per second over all connections.
    retries, backoff
        Further attempts per series after a failure, waiting ``backoff * 2**n`` seconds.
    refresh
        Ask the PACS for the instance list again even when a manifest exists.

    Returns
    -------
    RetrieveSummary
        Counts, the series that needed retries and the series still missing (with the
        errors met); also written to ``out_dir/retrieve_summary.json``.
    """
    pacs = parse_pacs_url(pacs_url)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(series, pd.DataFrame):
        pairs: Iterable[Any] = zip(series["StudyInstanceUID"], series["SeriesInstanceUID"], strict=True)
    else:
        pairs = series
    refs = list(
        dict.fromkeys(r if isinstance(r, SeriesRef) else SeriesRef(str(r[0]), str(r[1])) for r in pairs)
    )
    limiter = RateLimiter(rate_limit)
    options = {
        "timeout": timeout,
        "calling_aet": calling_aet,
        "method": method,
        "page_size": page_size,
        "listen_host": listen_host,
        "move_port": move_port,
    }
    summary = RetrieveSummary(pacs=str(pacs), requested=len(refs))
    fetcher = _Fetcher(pacs, out, limiter, options)
    try:
        with ThreadPoolExecutor(max_workers=max(1, max_connections)) as pool:
            futures = [pool.submit(_retrieve_one, fetcher, ref, retries, backoff, refresh) for ref in refs]
            for future in tqdm(as_completed(futures), total=len(futures), desc="series", disable=not progress):
                res = future.result()
                entry = {
                    "StudyInstanceUID": res.StudyInstanceUID,
                    "SeriesInstanceUID": res.SeriesInstanceUID,
                    "attempts": res.attempts,
                    "errors": res.errors,
                }
                if res.status == "complete":
                    summary.already_complete += 1
                elif res.status == "fetched":
                    summary.fetched_series += 1
                else:
                    summary.missing.append(entry)
                summary.fetched_instances += res.fetched
                if res.attempts > 1 and res.status != "missing":
                    summary.retried.append(entry)
    finally:
        fetcher.close()
    summary.requests = limiter.count
    _write_atomic(out / SUMMARY, json.dumps(summary.to_dict(), indent=1).encode())
    return summary
