"""One way to run a function over many independent items.

Every stage that works item by item (files, series, cases) calls :func:`map_items`:
serially in-process (``workers=1``), in a local process pool, or on a Dask
distributed cluster when a scheduler address is given. Results stream back as items
finish, so callers can write them out incrementally and memory stays flat however
many items there are. ``func`` must be a picklable module-level function that
handles its own per-item errors (returning an error record), so one bad item never
stops the others.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from itertools import islice
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

# prctl(2) option: the signal a process gets when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1
_WATCHDOG_S = 1.0


def _end_with_parent(parent_pid: int) -> None:
    """Pool-worker initializer: the worker ends when the process that started it dies.

    A SIGKILLed run would otherwise leave its workers alive, holding memory beside the rerun.
    Linux's parent-death signal covers a worker busy in C code; the watchdog thread covers other
    systems and the moment before the signal was armed.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no prctl in this libc: the watchdog alone
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_WATCHDOG_S)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def default_workers() -> int:
    """Worker processes to use when the caller does not say: every core."""
    return max(1, os.cpu_count() or 1)


def map_items(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int | None = 1,
    scheduler: str | None = None,
    desc: str = "items",
    total: int | None = None,
    max_in_flight: int | None = None,
    progress: bool = True,
) -> Iterator[R]:
    """Apply ``func`` to every item and yield results as they complete.

    Parameters
    ----------
    func
        Module-level function of one item.
    items
        Any iterable; consumed lazily so a crawl can feed it as it walks.
    workers
        Local processes; 1 runs in this process (no pickling); ``None`` uses every core.
    scheduler
        Dask scheduler address (``tcp://host:8786``); when given, ``workers`` is ignored.
    desc, total, progress
        Progress bar label, expected count and whether to show it.
    max_in_flight
        Items submitted but not yet collected; bounds memory (default ``4 * workers``).

    Yields
    ------
    R
        One result per item, in completion order (input order when serial).
    """
    bar = tqdm(total=total, desc=desc, unit=desc.split()[-1] if desc else "it", disable=not progress)
    try:
        if scheduler:
            yield from _map_dask(func, items, scheduler, bar, max_in_flight)
            return
        n = workers or default_workers()
        if n <= 1:
            for item in items:
                result = func(item)
                bar.update(1)
                yield result
            return
        yield from _map_processes(func, items, n, bar, max_in_flight or 4 * n)
    finally:
        bar.close()


def _map_processes(
    func: Callable[[T], R], items: Iterable[T], workers: int, bar: Any, in_flight: int
) -> Iterator[R]:
    iterator = iter(items)
    with ProcessPoolExecutor(max_workers=workers, initializer=_end_with_parent, initargs=(os.getpid(),)) as pool:
        pending: set[Future[R]] = {pool.submit(func, item) for item in islice(iterator, in_flight)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                bar.update(1)
                yield future.result()
            for item in islice(iterator, len(done)):
                pending.add(pool.submit(func, item))


def _map_dask(
    func: Callable[[T], R], items: Iterable[T], scheduler: str, bar: Any, in_flight: int | None
) -> Iterator[R]:
    from distributed import Client, as_completed

    with Client(scheduler) as client:
        limit = in_flight or 4 * max(1, sum(client.nthreads().values()))
        iterator = iter(items)
        # pure=False: the same item submitted twice (a rerun) must run twice.
        futures = as_completed(client.map(func, list(islice(iterator, limit)), pure=False))
        for future in futures:
            result = future.result()
            bar.update(1)
            for item in islice(iterator, 1):
                futures.add(client.submit(func, item, pure=False))
            future.release()
            yield result
