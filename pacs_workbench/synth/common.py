"""Small helpers shared by the synthetic extract writers: UIDs, random streams, file names.

Everything here is a pure function of its arguments, so the same seed always produces
the same UIDs and file names and a rerun overwrites files with identical bytes.
"""

from __future__ import annotations

import hashlib
import re
import uuid

import numpy as np


def make_uid(seed: int, *parts: object) -> str:
    """A DICOM UID under the ``2.25`` (UUID-derived) root, fixed by ``seed`` and ``parts``.

    Parameters
    ----------
    seed
        Extract seed; different seeds never share UIDs.
    parts
        Anything naming the object (patient index, study index, ``"ct"``...).

    Returns
    -------
    str
        ``2.25.<decimal of a version-4-shaped UUID>``, at most 44 characters.
    """
    digest = hashlib.sha256(f"pacs-workbench-synth|{seed}|{'|'.join(map(str, parts))}".encode()).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


def make_uuid(seed: int, *parts: object) -> str:
    """A UUID string fixed by ``seed`` and ``parts`` (FHIR ids and ``urn:uuid`` references)."""
    digest = hashlib.sha256(f"pacs-workbench-synth-uuid|{seed}|{'|'.join(map(str, parts))}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def derive_rng(seed: int, *parts: int) -> np.random.Generator:
    """An independent random generator for one item (patient, study, nodule).

    Parameters
    ----------
    seed
        Extract seed.
    parts
        Non-negative integers naming the item; the stream depends only on them, not on
        the order in which workers process items.
    """
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, *parts]))


def safe_component(text: str, max_len: int = 48) -> str:
    """A file-name component: ASCII letters, digits, ``.``, ``-`` and ``_`` only."""
    cleaned = re.sub(r"[^A-Za-z0-9.\-]+", "_", text).strip("_.")
    return (cleaned or "x")[:max_len]
