"""The listener's loop: complete studies through a bounded worker queue, state on disk, clean stop.

:class:`Listener` polls the :class:`~pacs_workbench.deploy.listen_scp.StudyReceiver` for studies
quiet for ``quiet_s`` seconds and puts them on a bounded queue served by ``workers`` threads.
Each study's ``state.json`` goes ``receiving`` -> ``queued`` -> ``done`` or ``failed`` (with
the reason), written atomically, so a restart queues again every study left ``receiving`` or
``queued``; a study that received instances while it was scored goes back to ``receiving`` and
is scored again, whole. :meth:`Listener.stop` (wired to SIGTERM and SIGINT by
:meth:`Listener.run`) stops accepting, lets the studies in progress finish and returns. Logs carry the study pseudonym,
the outcome and timings only.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pacs_workbench.deploy.listen_scp import StudyReceiver

LOG = logging.getLogger("pacs_workbench.listen")
#: A scorer takes a study folder and returns what it wrote; it raises ``ValueError`` with the reason.
Scorer = Callable[[Path], dict[str, Any]]


class Listener:
    """Receive, queue and score studies until stopped."""

    def __init__(
        self, receiver: StudyReceiver, scorer: Scorer, *, quiet_s: float = 5.0, workers: int = 1, queue_size: int = 8
    ) -> None:
        self.receiver = receiver
        self.scorer = scorer
        self.quiet_s = float(quiet_s)
        self.queue: queue.Queue[Path | None] = queue.Queue(maxsize=queue_size)
        self.workers = [threading.Thread(target=self._work, daemon=True) for _ in range(max(1, workers))]
        self._stopping = threading.Event()
        self._resumed = False

    def _pending(self) -> list[Path]:
        """Studies now complete and, on the first poll only, those left ``queued`` before a restart.

        A study this process queued stays ``queued`` until a worker takes it; later polls must not
        queue it again.
        """
        left = [] if self._resumed else [f for f, s in self.receiver.study_states() if s.get("status") == "queued"]
        self._resumed = True
        return left + self.receiver.complete_studies(self.quiet_s)

    def _work(self) -> None:
        while True:
            folder = self.queue.get()
            if folder is None:
                return
            self._score(folder)

    def _score(self, folder: Path) -> None:
        """Score one study and settle the outcome, or leave it to be scored again if it grew meanwhile."""
        token, started = folder.name, time.monotonic()
        last_received = self.receiver.read_state(folder)["last_received"]
        level = logging.WARNING
        outcome: dict[str, Any]
        try:
            outcome = {"status": "done", "written": self.scorer(folder), "scored_at": time.time()}
        except ValueError as exc:
            outcome = {"status": "failed", "reason": str(exc)}
        except Exception as exc:  # a bug must not end the worker: the study is failed, the next one runs
            outcome, level = {"status": "failed", "reason": f"internal error ({type(exc).__name__})"}, logging.ERROR
        if not self.receiver.settle(folder, last_received, **outcome):
            LOG.warning("study %s received instances while it was scored; it is scored again once complete", token)
        elif outcome["status"] == "done":
            LOG.info("study %s scored in %.1f s", token, time.monotonic() - started)
        else:
            LOG.log(level, "study %s not scored: %s (%.1f s)", token, outcome["reason"], time.monotonic() - started)

    def poll(self) -> int:
        """Queue every complete study (blocking while the queue is full); returns how many."""
        studies = self._pending()
        for folder in studies:
            self.receiver.update_state(folder, status="queued")
            self.queue.put(folder)
        return len(studies)

    def start(self, host: str = "127.0.0.1", port: int = 11112) -> None:
        """Start the SCP and the workers."""
        self.receiver.start(host, port)
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        """Ask :meth:`run` to stop (safe from a signal handler)."""
        self._stopping.set()

    def run(self, host: str = "127.0.0.1", port: int = 11112, interval_s: float = 0.5) -> None:
        """Serve until SIGTERM/SIGINT or :meth:`stop`; studies in progress finish first."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self.start(host, port)
        LOG.info("listening on %s:%d", host, port)
        try:
            while not self._stopping.wait(interval_s):
                self.poll()
        finally:
            self.receiver.stop()
            for _ in self.workers:
                self.queue.put(None)
            for worker in self.workers:
                worker.join()
