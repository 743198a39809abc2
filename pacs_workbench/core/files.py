"""Writing outputs so that nothing is ever half-written, and telling stale temp files from live ones.

Every stage writes through :func:`write_atomic`: the content goes to a temporary file in the
target's folder and is renamed over the target, so a reader (or a rerun after a kill) sees the
old file or the new one, never a partial one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temp)`` for a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically."""
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a temp file it owns may still be written)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
