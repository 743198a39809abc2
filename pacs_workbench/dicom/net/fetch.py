"""Fetching the instances of one series: WADO-RS, C-GET or C-MOVE, one fetcher class each.

A fetcher lists what the PACS holds for a series (QIDO-RS or C-FIND) and fetches what is
missing into the series folder of :mod:`pacs_workbench.dicom.net.store`. It is shared by the
retrieval threads: DICOMweb clients are per thread; the C-MOVE storage SCP is one for all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from pacs_workbench.dicom.net.dicomweb import dicomweb_client, search_dicomweb
from pacs_workbench.dicom.net.dimse import associate, find_dimse, new_ae
from pacs_workbench.dicom.net.pacs import PacsError, PacsUrl, RateLimiter
from pacs_workbench.dicom.net.store import SeriesRef, on_disk, series_dir, valid_uid, write_instance

log = logging.getLogger(__name__)

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
_MAX_CONTEXTS = 128  # presentation contexts one association can propose


@dataclass(frozen=True)
class FetchOptions:
    """How to reach the PACS: timeouts, our AE title, the DIMSE method, paging, the C-MOVE SCP."""

    timeout: float
    calling_aet: str
    method: str = "get"
    page_size: int = 100
    listen_host: str = "0.0.0.0"
    move_port: int | None = None


class SeriesFetcher:
    """Protocol-specific listing and fetching of one series' instances."""

    def __init__(self, pacs: PacsUrl, out_dir: Path, limiter: RateLimiter, options: FetchOptions) -> None:
        self.pacs = pacs
        self.out_dir = out_dir
        self.limiter = limiter
        self.options = options

    def list_instances(self, ref: SeriesRef) -> tuple[list[str], list[str]]:
        """SOP Instance UIDs and SOP Class UIDs the PACS holds for the series."""
        rows = self._list(ref)
        sops = [str(r["SOPInstanceUID"]) for r in rows if r.get("SOPInstanceUID")]
        classes = [str(r["SOPClassUID"]) for r in rows if r.get("SOPClassUID")]
        return sops, classes

    def fetch(self, ref: SeriesRef, missing: set[str], whole: bool, sop_classes: Sequence[str]) -> int:
        """Fetch the missing instances of one series into its folder; returns files written."""
        folder = series_dir(self.out_dir, ref)
        folder.mkdir(parents=True, exist_ok=True)
        return self._fetch(ref, folder, missing, whole, sop_classes)

    def close(self) -> None:
        """Release what the fetcher holds open (the C-MOVE storage SCP)."""

    def _list(self, ref: SeriesRef) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _fetch(self, ref: SeriesRef, folder: Path, missing: set[str], whole: bool, sop_classes: Sequence[str]) -> int:
        raise NotImplementedError


class WadoFetcher(SeriesFetcher):
    """QIDO-RS listing and WADO-RS retrieval, one client (and HTTP connection pool) per thread."""

    def __init__(self, pacs: PacsUrl, out_dir: Path, limiter: RateLimiter, options: FetchOptions) -> None:
        super().__init__(pacs, out_dir, limiter, options)
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = dicomweb_client(self.pacs, limiter=self.limiter, timeout=self.options.timeout)
            self._local.client = client
        return client

    def _list(self, ref: SeriesRef) -> list[dict[str, Any]]:
        found = search_dicomweb(
            self.pacs,
            "instance",
            study_uid=ref.StudyInstanceUID,
            series_uid=ref.SeriesInstanceUID,
            fields=("SOPClassUID",),
            page_size=self.options.page_size,
            client=self._client(),
        )
        return list(found)

    def _fetch(self, ref: SeriesRef, folder: Path, missing: set[str], whole: bool, sop_classes: Sequence[str]) -> int:
        client = self._client()
        # Any transfer syntax: keep what the PACS stored instead of asking it to transcode.
        media = (("application/dicom", "*"),)
        written = 0
        if whole:
            for ds in client.iter_series(ref.StudyInstanceUID, ref.SeriesInstanceUID, media_types=media):
                written += _store(folder, ds)
            return written
        for sop in sorted(missing):
            ds = client.retrieve_instance(ref.StudyInstanceUID, ref.SeriesInstanceUID, sop, media_types=media)
            written += _store(folder, ds)
        return written


def _store(folder: Path, ds: Dataset) -> bool:
    sop = str(ds.get("SOPInstanceUID", ""))
    if not valid_uid(sop):
        raise PacsError("the PACS sent an instance without a valid SOP Instance UID")
    write_instance(folder, sop, ds)
    return True


class _DimseFetcher(SeriesFetcher):
    """C-FIND listing and the C-STORE handler that C-GET and C-MOVE share."""

    def __init__(self, pacs: PacsUrl, out_dir: Path, limiter: RateLimiter, options: FetchOptions) -> None:
        super().__init__(pacs, out_dir, limiter, options)
        self._lock = threading.Lock()
        self._stored: dict[str, int] = {}  # instances stored per series, for C-MOVE's count

    def _list(self, ref: SeriesRef) -> list[dict[str, Any]]:
        return find_dimse(
            self.pacs,
            "instance",
            {"StudyInstanceUID": ref.StudyInstanceUID, "SeriesInstanceUID": ref.SeriesInstanceUID},
            calling_aet=self.options.calling_aet,
            limiter=self.limiter,
            timeout=self.options.timeout,
        )

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
            write_instance(folder, sop, event.encoded_dataset(include_meta=True))
            with self._lock:
                self._stored[series] = self._stored.get(series, 0) + 1
        except Exception as exc:  # a failed write must fail the sub-operation, not the SCP
            log.warning("C-STORE write failed: %s", type(exc).__name__)
            return 0xA700
        return 0x0000

    def _retrieve(self, assoc: Any, send: Callable[[], Iterable[tuple[Any, Any]]], what: str) -> None:
        """Send a C-GET/C-MOVE, check its final status, release the association."""
        try:
            last = None
            for status, _identifier in send():
                last = status
            _check_final(last, what, self.pacs)
        finally:
            if assoc.is_established:
                assoc.release()


def _retrieve_identifier(ref: SeriesRef, missing: set[str], whole: bool) -> Dataset:
    ident = Dataset()
    ident.StudyInstanceUID = ref.StudyInstanceUID
    ident.SeriesInstanceUID = ref.SeriesInstanceUID
    if whole:
        ident.QueryRetrieveLevel = "SERIES"
    else:
        ident.QueryRetrieveLevel = "IMAGE"
        ident.SOPInstanceUID = sorted(missing)
    return ident


def _check_final(status: Any, what: str, pacs: PacsUrl) -> None:
    if not status:
        raise PacsError(f"{what} on {pacs}: connection timed out, aborted or invalid response")
    code = int(status.Status)
    if code in (0x0000, 0xFF00):
        return
    failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
    raise PacsError(f"{what} on {pacs} ended with status 0x{code:04X} ({failed} failed sub-operations)")


class GetFetcher(_DimseFetcher):
    """C-GET: the PACS sends the instances back on our own association (nothing to configure)."""

    def _fetch(self, ref: SeriesRef, folder: Path, missing: set[str], whole: bool, sop_classes: Sequence[str]) -> int:
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

        ae, classes = self._get_ae(sop_classes)
        roles = [build_role(uid, scp_role=True) for uid in classes]
        before = len(on_disk(folder))
        assoc = associate(
            ae, self.pacs, self.limiter, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, self._handle_store)]
        )
        identifier = _retrieve_identifier(ref, missing, whole)
        self._retrieve(assoc, lambda: assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet), "C-GET")
        return max(0, len(on_disk(folder)) - before)

    def _get_ae(self, sop_classes: Sequence[str]) -> tuple[Any, list[str]]:
        """An AE proposing C-GET and storage of the series' SOP classes (all, when unknown)."""
        from pynetdicom import StoragePresentationContexts
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

        ae = new_ae(self.options.calling_aet, self.options.timeout)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        classes = sorted(set(sop_classes)) or [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
        for uid in classes:
            ae.add_requested_context(uid, list(_UNCOMPRESSED_SYNTAXES))  # the PACS can always send these
        # The acceptor picks one transfer syntax per context before it knows the files, so
        # each compressed syntax gets its own context: a compressed original arrives as
        # stored instead of being decompressed (room permitting: 128 contexts at most).
        if len(classes) * (1 + len(_COMPRESSED_SYNTAXES)) < _MAX_CONTEXTS:
            for uid in classes:
                for syntax in _COMPRESSED_SYNTAXES:
                    ae.add_requested_context(uid, syntax)
        return ae, classes


class MoveFetcher(_DimseFetcher):
    """C-MOVE: the PACS sends the instances to our storage SCP (it must know our AE title)."""

    def __init__(self, pacs: PacsUrl, out_dir: Path, limiter: RateLimiter, options: FetchOptions) -> None:
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        super().__init__(pacs, out_dir, limiter, options)
        if not options.move_port:
            raise ValueError("C-MOVE needs the port of our storage SCP (move_port), as the PACS knows it")
        ae = new_ae(options.calling_aet, options.timeout)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES[:])
        self._scp: Any = ae.start_server(
            (options.listen_host, options.move_port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._handle_store)],
        )

    def _fetch(self, ref: SeriesRef, folder: Path, missing: set[str], whole: bool, sop_classes: Sequence[str]) -> int:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

        ae = new_ae(self.options.calling_aet, self.options.timeout)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        with self._lock:
            before = self._stored.get(ref.SeriesInstanceUID, 0)
        assoc = associate(ae, self.pacs, self.limiter)
        identifier = _retrieve_identifier(ref, missing, whole)
        model = StudyRootQueryRetrieveInformationModelMove
        self._retrieve(assoc, lambda: assoc.send_c_move(identifier, self.options.calling_aet, model), "C-MOVE")
        with self._lock:
            return self._stored.get(ref.SeriesInstanceUID, 0) - before

    def close(self) -> None:
        if self._scp is not None:
            self._scp.shutdown()
            self._scp = None


def make_fetcher(pacs: PacsUrl, out_dir: Path, limiter: RateLimiter, options: FetchOptions) -> SeriesFetcher:
    """The fetcher for the URL's protocol and, for DIMSE, the method (``"get"`` or ``"move"``)."""
    if pacs.protocol == "dicomweb":
        return WadoFetcher(pacs, out_dir, limiter, options)
    if options.method == "move":
        return MoveFetcher(pacs, out_dir, limiter, options)
    return GetFetcher(pacs, out_dir, limiter, options)
