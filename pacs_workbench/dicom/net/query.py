"""Protocol-agnostic queries: studies, series and index rows from DICOMweb or DIMSE alike."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pandas as pd

from pacs_workbench.dicom.net.dicomweb import query_instances_dicomweb, search_dicomweb
from pacs_workbench.dicom.net.dimse import find_dimse, query_instances_dimse
from pacs_workbench.dicom.net.pacs import SERIES_FIELDS, STUDY_FIELDS, PacsUrl, parse_pacs_url


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
