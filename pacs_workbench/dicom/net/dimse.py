"""DIMSE: associations, C-ECHO and C-FIND (Study Root) behind the shared rate limit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset
from tqdm.auto import tqdm

from pacs_workbench.dicom.net.pacs import (
    DEFAULT_AET,
    DEFAULT_TIMEOUT,
    INSTANCE_FIELDS,
    SERIES_FIELDS,
    STUDY_FIELDS,
    PacsError,
    PacsUrl,
    RateLimiter,
    flatten_dataset,
    instance_row,
    parse_pacs_url,
)
from pacs_workbench.dicom.schema import ATTRIBUTE_KEYWORDS


def new_ae(calling_aet: str, timeout: float) -> Any:
    """A pynetdicom AE titled ``calling_aet`` that never waits longer than ``timeout`` seconds."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 15.0)
    return ae


def associate(ae: Any, pacs: PacsUrl, limiter: RateLimiter | None, **kwargs: Any) -> Any:
    """An established association with the PACS (after the rate limit), else :class:`PacsError`."""
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
    ae = new_ae(calling_aet, timeout)
    ae.add_requested_context(Verification)
    assoc = associate(ae, pacs, None)
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

    ae = new_ae(calling_aet, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = associate(ae, pacs, limiter)
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
                    merged = _merge_levels(study, series, image)
                    sop = str(merged.get("SOPInstanceUID", ""))
                    yield instance_row(merged, f"{pacs}/{study_uid}/{series_uid}/{sop}", None)
                    bar.update(1)
    finally:
        bar.close()


def _merge_levels(*levels: Dataset) -> Dataset:
    """One data set from the study, series and image answers (later levels win)."""
    merged = Dataset()
    for level in levels:
        # Empty return keys must not hide a value another level returned.
        merged.update({e.tag: e for e in level if e.value not in (None, "")})
    if "QueryRetrieveLevel" in merged:
        del merged.QueryRetrieveLevel
    return merged
