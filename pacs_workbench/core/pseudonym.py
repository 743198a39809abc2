"""Keyed pseudonyms: one function links imaging, EHR and reports.

``pseudonymize(key, value)`` is HMAC-SHA256(key, namespace + value) encoded in
base32, so the same person gets the same pseudonym everywhere a key is shared and a
different key gives unrelated pseudonyms. The key comes from a key file (or the file
named by ``PACS_WORKBENCH_KEY_FILE``); it is never logged, stored in a parameter, or
written into an output.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from pacs_workbench.core.params import KEY_FILE_ENV

KEY_BYTES = 32


class KeyFileError(PermissionError):
    """The key file is missing, malformed, or readable by others."""


def generate_key(path: str | os.PathLike[str]) -> Path:
    """Write a new random key to ``path`` with mode 0600; refuse to overwrite.

    Raises
    ------
    FileExistsError
        When ``path`` already exists (an existing key is never replaced).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never clobber a key that pseudonyms already depend on.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    os.chmod(target, 0o600)
    return target


def load_key(path: str | os.PathLike[str] | None = None) -> bytes:
    """Read the project key.

    Parameters
    ----------
    path
        Key file; when ``None`` the file named by ``PACS_WORKBENCH_KEY_FILE``.

    Raises
    ------
    KeyFileError
        When no key file is given, it is readable by group/others, or it is not 64 hex digits.
    """
    if path is None:
        env = os.environ.get(KEY_FILE_ENV)
        if not env:
            raise KeyFileError(f"no key file given and {KEY_FILE_ENV} is not set")
        path = env
    file = Path(path)
    if not file.is_file():
        raise KeyFileError(f"key file not found: {file}")
    mode = stat.S_IMODE(file.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"key file {file} is readable by others (mode {mode:04o}); run chmod 600")
    text = file.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"key file {file} does not hold a hex key") from None
    if len(key) < 16:
        raise KeyFileError(f"key file {file} holds a key shorter than 128 bits")
    return key


def digest(key: bytes, value: str, namespace: str = "") -> bytes:
    """Raw HMAC-SHA256 of ``namespace`` + NUL + ``value`` under ``key``."""
    message = f"{namespace}\x00{value}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def pseudonymize(key: bytes, value: str, namespace: str = "patient", length: int = 16) -> str:
    """A short, stable pseudonym for ``value``.

    Parameters
    ----------
    key
        Project key from :func:`load_key`.
    value
        The identifier, e.g. (0010,0020) Patient ID; surrounding whitespace is ignored.
    namespace
        Keeps pseudonyms of different kinds (patient, accession, ...) apart.
    length
        Characters of base32 to keep (16 characters = 80 bits).

    Returns
    -------
    str
        Upper-case base32 without padding, e.g. ``"K3J5QZ7D2M4XB6NA"``.
    """
    encoded = base64.b32encode(digest(key, value.strip(), namespace)).decode("ascii").rstrip("=")
    return encoded[:length]


def keyed_int(key: bytes, value: str, namespace: str, modulus: int) -> int:
    """A keyed, deterministic integer in ``[0, modulus)`` (date offsets, UID roots)."""
    return int.from_bytes(digest(key, value.strip(), namespace), "big") % modulus
