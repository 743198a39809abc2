"""DICOMweb: QIDO-RS search (paged), WADO-RS metadata, behind the shared rate limit."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import requests
from pydicom.dataset import Dataset
from tqdm.auto import tqdm

from pacs_workbench.dicom.net.pacs import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT,
    INSTANCE_FIELDS,
    Level,
    PacsUrl,
    RateLimiter,
    flatten_dataset,
    instance_row,
    parse_pacs_url,
)


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


def dataset_from_json(item: Mapping[str, Any]) -> Dataset:
    """A data set from the DICOM JSON model, without its bulk data."""
    # Bulk data (pixels) is never needed for a row; leave it out instead of fetching it.
    return Dataset.from_json(dict(item), bulk_data_uri_handler=lambda _tag, _vr, _uri: None)


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
        yield flatten_dataset(dataset_from_json(item))


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
                    datasets = [dataset_from_json(item) for item in items]
                else:
                    datasets = [
                        dataset_from_json(item) for item in _qido_instances(client, study, series, page_size)
                    ]
                for ds in datasets:
                    sop = str(ds.get("SOPInstanceUID", ""))
                    yield instance_row(ds, _wado_path(pacs, study, series, sop), None)
                    bar.update(1)
    finally:
        bar.close()
