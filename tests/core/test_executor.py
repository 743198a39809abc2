from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pacs_workbench.core.executor import map_items


def square_with_pid(x: int) -> tuple[int, int, int]:
    return x, x * x, os.getpid()


def test_serial_keeps_order_and_runs_in_process() -> None:
    results = list(map_items(square_with_pid, range(5), workers=1, progress=False))
    assert [r[0] for r in results] == [0, 1, 2, 3, 4]
    assert {r[2] for r in results} == {os.getpid()}


def test_process_pool_uses_other_processes_and_loses_nothing() -> None:
    results = list(map_items(square_with_pid, range(50), workers=2, max_in_flight=3, progress=False))
    assert sorted(r[1] for r in results) == [x * x for x in range(50)]
    assert os.getpid() not in {r[2] for r in results}


@pytest.mark.slow
def test_dask_scheduler_gives_same_results() -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        results = list(map_items(square_with_pid, range(20), scheduler=cluster.scheduler_address, progress=False))
    assert sorted(r[1] for r in results) == [x * x for x in range(20)]


def _ended(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # ended, waiting for a reaper
    except psutil.NoSuchProcess:
        return True


def test_pool_workers_end_when_the_run_is_killed() -> None:
    """A SIGKILLed run leaves no worker alive holding memory beside the rerun."""
    script = (
        "import time\nfrom pacs_workbench.core.executor import map_items\n"
        "for _ in map_items(time.sleep, [120] * 4, workers=2, progress=False):\n    pass\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = psutil.Process(parent.pid).children()
        assert len(workers) == 2, workers
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not all(_ended(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [w.pid for w in workers if not _ended(w)]
        assert not alive, f"pool workers outlived their killed run: {alive}"
    finally:
        for process in (parent, *psutil.Process().children(recursive=True)):
            with contextlib.suppress(Exception):
                process.kill()
