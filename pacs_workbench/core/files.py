"""The one way the workbench writes and hashes files: nothing is ever half-written.

Every stage writes through :func:`write_atomic`: the content goes to a temporary file in the
target's folder, is flushed to disk and renamed over the target, so a reader (or a rerun after a
kill) sees the old file or the new one, never a partial one. On any failure the temporary file is
removed. Temporary files are named ``.<target>.<pid>-<random>.tmp`` (plus a suffix a writer may need,
such as ``.nii.gz``): the pid tells a killed run's leftovers (:func:`remove_stale_temp_files`) from the
files of a run still writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
_TEMP_PID = re.compile(r"\.(\d+)-[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9.]+)?$")
_CHUNK = 1 << 20


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_DEFAULT_MODE = 0o666 & ~_umask()


def temp_prefix(path: Path) -> str:
    """The prefix of the temporary files written for ``path`` by this process."""
    return f".{path.name}.{os.getpid()}-"


def write_atomic(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    mode: int | None = None,
    suffix: str = "",
    sync: bool = True,
) -> None:
    """Call ``write(temp)`` for a temporary file beside ``path``, then rename it to ``path``.

    Parameters
    ----------
    path
        The target; its folder is created when missing.
    write
        Writes the complete content to the path it is given.
    mode
        Permission bits of the result; by default what a plain ``open`` would give (``0o666``
        less the umask). Pass ``0o600`` for secrets.
    suffix
        Appended to the temporary name, for writers that choose the format by extension
        (SimpleITK needs ``.nii.gz``).
    sync
        Flush the file to disk before the rename. ``False`` for writers of many files that
        flush them together afterwards (:func:`sync_filesystem`): the rename still means a
        killed process never leaves a half-written file.
    """
    write_together([path], lambda temps: write(temps[0]), mode=mode, suffix=suffix, sync=sync)


def write_together(
    paths: Sequence[str | os.PathLike[str]],
    write: Callable[[list[Path]], object],
    *,
    mode: int | None = None,
    suffix: str = "",
    sync: bool = True,
) -> None:
    """Write several files so that either all are replaced or none is.

    ``write(temps)`` gets one temporary file beside each target, in the order given; only when it
    has returned and every file is on disk are they renamed into place, in that order. On any
    failure every temporary file is removed and no target is touched. See :func:`write_atomic`
    for ``mode``, ``suffix`` and ``sync``.
    """
    targets = [Path(path) for path in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            fd, tmp = _open_temp(target, suffix)
            os.close(fd)
            temps.append(Path(tmp))
        write(list(temps))
        for temp in temps:
            if sync:
                with open(temp, "rb+") as handle:  # the bytes reach the disk before the names do
                    os.fsync(handle.fileno())
            os.chmod(temp, _DEFAULT_MODE if mode is None else mode)
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise


def _open_temp(target: Path, suffix: str = "") -> tuple[int, str]:
    """A new temporary file beside ``target`` (its folder made when missing): descriptor and path."""
    prefix, full_suffix = temp_prefix(target), TEMP_SUFFIX + suffix
    try:
        return tempfile.mkstemp(prefix=prefix, suffix=full_suffix, dir=target.parent)
    except FileNotFoundError:  # most targets' folders exist: make one only when it is missing
        target.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=prefix, suffix=full_suffix, dir=target.parent)


def write_bytes_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None, sync: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically (``sync``: see :func:`write_atomic`).

    :func:`write_atomic` for bytes already in memory, written through the temporary file's own
    descriptor: de-identification writes thousands of small files, where every extra open,
    close and path lookup shows.
    """
    target = Path(path)
    fd, tmp = _open_temp(target)
    try:
        with open(fd, "wb", closefd=True) as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(fd)
            os.fchmod(fd, _DEFAULT_MODE if mode is None else mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sync_filesystem(path: str | os.PathLike[str]) -> None:
    """Flush everything written to the file system that holds ``path`` to disk.

    One ``syncfs`` after many files written with ``sync=False`` costs a fraction of one
    ``fsync`` per file; where ``syncfs`` is missing, ``sync`` flushes every file system.
    """
    import ctypes
    import ctypes.util

    folder = Path(path)
    if not folder.exists():
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text to ``path`` atomically (line ends as given)."""
    write_atomic(path, lambda temp: temp.write_bytes(text.encode("utf-8")))


def write_json_atomic(path: str | os.PathLike[str], payload: Any, **dumps: Any) -> None:
    """Write ``payload`` as JSON to ``path`` atomically; ``dumps`` go to :func:`json.dumps`."""
    write_text_atomic(path, json.dumps(payload, **dumps))


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON data: NumPy scalars and arrays as Python ones, non-finite floats as ``None``.

    Mapping keys become strings and sets sorted lists, so the same data always gives the same text.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [json_ready(v) for v in sorted(value)]
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a temp file it owns may still be written)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_file_owner(path: Path) -> int | None:
    """The pid in a temporary file's name, or ``None`` for a name :func:`write_atomic` did not make."""
    match = _TEMP_PID.search(path.name)
    return int(match.group(1)) if match else None


def remove_stale_temp_files(folder: str | os.PathLike[str], pattern: str = ".*.tmp*") -> int:
    """Delete the temporaries that a killed run left in ``folder``; those of live processes stay.

    A temporary folder (a query engine's spill directory named by :func:`temp_prefix`) goes too.
    Returns the number of entries removed.
    """
    removed = 0
    for path in Path(folder).glob(pattern):
        owner = temp_file_owner(path)
        if owner is None or pid_alive(owner):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as hex (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: Iterable[str | os.PathLike[str]]) -> str:
    """One SHA-256 over several files' contents, in the order given (names do not count)."""
    total = hashlib.sha256()
    for path in paths:
        total.update(bytes.fromhex(sha256_file(path)))
    return total.hexdigest()


def names_a_file(value: Any) -> bool:
    """Whether a table cell names an existing file: a non-empty path string (empty, ``None`` or NaN do not)."""
    return isinstance(value, str) and bool(value) and Path(value).is_file()
