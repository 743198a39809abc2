"""Retrieving whole series from a PACS, resumably, with retries and a summary.

Each series is checked against its manifest (:mod:`pacs_workbench.dicom.net.store`): a complete
series costs no request, an incomplete one is asked only for what is missing. Failures are
retried with exponential backoff; series still incomplete after the last attempt are listed in
``retrieve_summary.json``, never skipped silently.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import requests
from tqdm.auto import tqdm

from pacs_workbench.core.files import write_json_atomic
from pacs_workbench.dicom.net.fetch import FetchOptions, SeriesFetcher, make_fetcher
from pacs_workbench.dicom.net.pacs import (
    DEFAULT_AET,
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT,
    PacsError,
    PacsUrl,
    RateLimiter,
    SeriesNotFoundError,
    parse_pacs_url,
)
from pacs_workbench.dicom.net.store import (
    SeriesRef,
    on_disk,
    read_manifest,
    series_dir,
    valid_uid,
    write_manifest,
)

log = logging.getLogger(__name__)

SUMMARY = "retrieve_summary.json"
_RETRYABLE = (PacsError, requests.RequestException, OSError, ValueError)


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

    def add(self, result: SeriesResult) -> None:
        """Count one series' outcome."""
        entry = {
            "StudyInstanceUID": result.StudyInstanceUID,
            "SeriesInstanceUID": result.SeriesInstanceUID,
            "attempts": result.attempts,
            "errors": result.errors,
        }
        if result.status == "complete":
            self.already_complete += 1
        elif result.status == "fetched":
            self.fetched_series += 1
        else:
            self.missing.append(entry)
        self.fetched_instances += result.fetched
        if result.attempts > 1 and result.status != "missing":
            self.retried.append(entry)


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


def _expected(fetcher: SeriesFetcher, ref: SeriesRef, refresh: bool) -> tuple[list[str], list[str]]:
    """SOP Instance and Class UIDs of the series: from its manifest, else asked of the PACS."""
    folder = series_dir(fetcher.out_dir, ref)
    manifest = None if refresh else read_manifest(folder)
    if manifest is not None:
        return manifest["expected"], manifest.get("sop_classes", [])
    expected, classes = fetcher.list_instances(ref)
    if not expected:
        raise SeriesNotFoundError("the PACS holds no instance of this series")
    write_manifest(folder, ref, expected, classes)
    return expected, classes


def _complete(
    fetcher: SeriesFetcher, ref: SeriesRef, result: SeriesResult, expected: list[str], classes: list[str]
) -> None:
    """Fetch what of ``expected`` is not on disk yet; :class:`PacsError` if some is still missing."""
    folder = series_dir(fetcher.out_dir, ref)
    result.expected = len(expected)
    missing = set(expected) - on_disk(folder)
    if not missing:
        result.status = "fetched" if result.fetched else "complete"
        return
    result.fetched += fetcher.fetch(ref, missing, len(missing) == len(expected), classes)
    still = set(expected) - on_disk(folder)
    if still:
        raise PacsError(f"{len(still)} of {len(expected)} instances still missing after the transfer")
    result.status = "fetched"


def _retrieve_one(fetcher: SeriesFetcher, ref: SeriesRef, retries: int, backoff: float, refresh: bool) -> SeriesResult:
    result = SeriesResult(ref.StudyInstanceUID, ref.SeriesInstanceUID)
    if not (valid_uid(ref.StudyInstanceUID) and valid_uid(ref.SeriesInstanceUID)):
        result.status = "missing"
        result.errors.append("invalid Study or Series Instance UID in the cohort table")
        return result
    for attempt in range(retries + 1):
        result.attempts = attempt + 1
        try:
            expected, classes = _expected(fetcher, ref, refresh)
            refresh = False  # the PACS was asked once; later attempts trust the new manifest
            _complete(fetcher, ref, result, expected, classes)
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


def _series_refs(series: Iterable[SeriesRef | tuple[str, str]] | pd.DataFrame) -> list[SeriesRef]:
    if isinstance(series, pd.DataFrame):
        pairs: Iterable[Any] = zip(series["StudyInstanceUID"], series["SeriesInstanceUID"], strict=True)
    else:
        pairs = series
    return list(dict.fromkeys(r if isinstance(r, SeriesRef) else SeriesRef(str(r[0]), str(r[1])) for r in pairs))


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
    refs = _series_refs(series)
    limiter = RateLimiter(rate_limit)
    options = FetchOptions(timeout, calling_aet, method, page_size, listen_host, move_port)
    summary = RetrieveSummary(pacs=str(pacs), requested=len(refs))
    fetcher = make_fetcher(pacs, out, limiter, options)
    try:
        with ThreadPoolExecutor(max_workers=max(1, max_connections)) as pool:
            futures = [pool.submit(_retrieve_one, fetcher, ref, retries, backoff, refresh) for ref in refs]
            for future in tqdm(as_completed(futures), total=len(futures), desc="series", disable=not progress):
                summary.add(future.result())
    finally:
        fetcher.close()
    summary.requests = limiter.count
    write_json_atomic(out / SUMMARY, summary.to_dict(), indent=1)
    return summary
