"""Receiving studies for scoring: a C-STORE SCP that keeps only what the model can use, from whom it knows.

:class:`StudyReceiver` is a pynetdicom storage SCP. It

- binds to 127.0.0.1 unless told otherwise;
- accepts only the calling AE titles on its allow-list (and, when given, only the listed peer
  addresses), rejecting every other association with a logged reason, so nothing they send is
  kept;
- offers only the storage SOP classes the scoring chain reads (CT and MR images);
- refuses an instance (status 0xA700, out of resources) once the disk it holds would exceed
  ``max_bytes``;
- writes each instance atomically to ``incoming/<study>/<sop>.dcm``, where ``<study>`` is a keyed
  pseudonym of (0020,000D) Study Instance UID, so several associations of one study land in one
  folder, and records the study's last arrival in ``incoming/<study>/state.json``.

A study is complete once nothing arrived for ``quiet_s`` seconds (like Orthanc's StableAge) and
no association that sent some of it is still open: a sender that pauses, or a slow disk under one
instance, must not get half a series scored. :meth:`StudyReceiver.complete_studies` lists them,
from the state on disk, so a restart finds the studies received before it. Instances arriving
while a study is scored put it back to ``receiving``: :meth:`StudyReceiver.settle` then keeps it,
to be scored again with everything, rather than record an outcome for part of it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pacs_workbench.core.files import write_bytes_atomic, write_json_atomic
from pacs_workbench.core.pseudonym import pseudonymize

LOG = logging.getLogger("pacs_workbench.listen")
INCOMING = "incoming"
STATE_FILE = "state.json"
#: (0008,0016) SOP Class UIDs the scoring chain reads: CT, enhanced CT, MR, enhanced MR.
STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.4.1",
)
_OUT_OF_RESOURCES = 0xA700
_CANNOT_UNDERSTAND = 0xC000


def _load_state(folder: Path) -> dict[str, Any]:
    """A study folder's ``state.json``; raises ``OSError`` or ``ValueError`` when it cannot be read."""
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    return state


class StudyReceiver:
    """A C-STORE SCP collecting studies under ``out/incoming``.

    Parameters
    ----------
    out
        Output folder; instances go to ``out/incoming/<study pseudonym>/``.
    ae_title
        The SCP's own AE title.
    allow_ae
        Calling AE titles accepted; every other association is rejected.
    key
        Pseudonymization key (:func:`pacs_workbench.core.pseudonym.load_key`) for folder names and logs.
    allow_hosts
        Peer addresses accepted (empty: any address with an allowed AE title).
    max_bytes
        Upper bound of what ``incoming`` holds on disk.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        ae_title: str,
        allow_ae: Iterable[str],
        key: bytes,
        *,
        allow_hosts: Iterable[str] = (),
        max_bytes: int = 2 * 1024**3,
    ) -> None:
        self.incoming = Path(out) / INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.allow_ae = {a.strip() for a in allow_ae if a.strip()}
        self.allow_hosts = set(allow_hosts)
        self.key = key
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._held = sum(p.stat().st_size for p in self.incoming.rglob("*.dcm"))
        self._server: Any = None
        # The study tokens each open association has sent instances of, held until it closes.
        self._sending: dict[Any, set[str]] = {}
        self._unreadable: set[str] = set()

    def study_token(self, study_uid: str) -> str:
        """The study's keyed pseudonym: its folder name and its name in logs."""
        return pseudonymize(self.key, study_uid, namespace="study", length=16)

    def _allowed(self, requestor: Any) -> str | None:
        """Why an association is refused, or ``None``."""
        # While the association is requested the calling AE title is only in the request primitive
        # (pynetdicom sets requestor.ae_title once it negotiates).
        primitive = getattr(requestor, "primitive", None)
        calling = str(getattr(primitive, "calling_ae_title", None) or requestor.ae_title).strip()
        if calling not in self.allow_ae:
            return "calling AE title not on the allow-list"
        if self.allow_hosts and requestor.address not in self.allow_hosts:
            return "peer address not on the allow-list"
        return None

    def _on_requested(self, event: Any) -> None:
        # pynetdicom rejects the AE titles not in require_calling_aet before any C-STORE; the
        # peer-address rule refuses every C-STORE instead. Either way nothing reaches the disk.
        reason = self._allowed(event.assoc.requestor)
        if reason is not None:
            LOG.warning("association rejected: %s", reason)

    def _on_store(self, event: Any) -> int:
        if self._allowed(event.assoc.requestor) is not None:
            return _CANNOT_UNDERSTAND
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
        except Exception as exc:  # a dataset that does not decode is refused, not kept
            LOG.warning("instance refused: cannot read it (%s)", type(exc).__name__)
            return _CANNOT_UNDERSTAND
        data = event.encoded_dataset()
        token = self.study_token(study)
        folder = self.incoming / token
        with self._lock:
            if self._held + len(data) > self.max_bytes:
                LOG.warning("study %s: instance refused, %d bytes held reach the bound", token, self._held)
                return _OUT_OF_RESOURCES
            self._sending.setdefault(event.assoc, set()).add(token)
            self._held += len(data)
            folder.mkdir(exist_ok=True)
            name = pseudonymize(self.key, sop, namespace="instance", length=16) + ".dcm"
            write_bytes_atomic(folder / name, data)
            write_json_atomic(folder / STATE_FILE, {"last_received": time.time(), "status": "receiving"})
        return 0x0000

    def _on_closed(self, event: Any) -> None:
        with self._lock:
            self._sending.pop(event.assoc, None)

    def start(self, host: str = "127.0.0.1", port: int = 11112) -> None:
        """Start serving in a background thread."""
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.ae_title)
        ae.require_calling_aet = sorted(self.allow_ae)
        for uid in STORAGE_CLASSES:
            ae.add_supported_context(uid)
        handlers: list[Any] = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store)]
        handlers += [(event, self._on_closed) for event in (evt.EVT_RELEASED, evt.EVT_ABORTED, evt.EVT_CONN_CLOSE)]
        self._server = ae.start_server((host, port), block=False, evt_handlers=handlers)

    def stop(self) -> None:
        """Stop accepting associations (those running finish first)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def study_states(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Each study folder under ``incoming`` with its ``state.json``, in folder order.

        A study whose ``state.json`` cannot be read (altered by hand, say) is left as it is and
        logged once; it must not stop the others.
        """
        for state_file in sorted(self.incoming.glob(f"*/{STATE_FILE}")):
            try:
                state = _load_state(state_file.parent)
            except (OSError, ValueError) as exc:
                token = state_file.parent.name
                if token not in self._unreadable:
                    self._unreadable.add(token)
                    LOG.error("study %s: state.json unreadable (%s); the study is left as it is", token, exc)
                continue
            yield state_file.parent, state

    def complete_studies(self, quiet_s: float, now: float | None = None) -> list[Path]:
        """Folders of studies received but not scored whose last instance is ``quiet_s`` old.

        A study an open association has sent instances of is not complete, however quiet.
        """
        now = time.time() if now is None else now
        with self._lock:
            sending = set().union(*self._sending.values())
            return [
                folder
                for folder, state in self.study_states()
                if state.get("status") == "receiving"
                and folder.name not in sending
                and now - float(state["last_received"]) >= quiet_s
            ]

    def read_state(self, folder: Path) -> dict[str, Any]:
        """The study's ``state.json``."""
        with self._lock:
            return _load_state(folder)

    def update_state(self, folder: Path, **changes: Any) -> None:
        """Merge ``changes`` into the study's ``state.json``, never between an instance and its state."""
        with self._lock:
            write_json_atomic(folder / STATE_FILE, _load_state(folder) | changes)

    def settle(self, folder: Path, last_received: float, **outcome: Any) -> bool:
        """Record a scoring's ``outcome``, unless instances arrived after ``last_received``.

        A ``done`` study's instances are forgotten in the same step, so an instance arriving just
        then is never deleted unscored. Returns ``False``, leaving the study ``receiving`` to be
        scored again once complete, when the study changed while it was scored.
        """
        with self._lock:
            current = _load_state(folder)
            if current.get("last_received") != last_received:
                return False
            write_json_atomic(folder / STATE_FILE, current | outcome)
            if outcome.get("status") == "done":
                for path in folder.glob("*.dcm"):
                    self._held -= path.stat().st_size
                    path.unlink()
            return True
