"""Writing a derived object (SEG, SR) that highdicom builds from de-identified source instances.

highdicom copies the patient and study modules from the sources. Two things need care when the
sources are de-identified: its person-name check warns with (0010,0010) Patient's Name in the
message, which would put the name into a log, and it copies (0012,0062) Patient Identity Removed
without the (0012,0063) De-identification Method that the flag requires.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pacs_workbench.core.files import write_atomic

#: Attributes a de-identified source carries that highdicom does not copy into a derived object.
_DEID_METHOD = ("DeidentificationMethod", "DeidentificationMethodCodeSequence")


def write_derived(build: Callable[[], Any], source: Any, target: str | os.PathLike[str]) -> Path:
    """Build a derived object with ``build()`` quietly, complete it from ``source``, write it atomically.

    Parameters
    ----------
    build
        Returns the highdicom object (a pydicom Dataset) built from the sources.
    source
        One source data set: its (0012,0063) De-identification Method (and code sequence) is carried over.
    target
        Output file.
    """
    with warnings.catch_warnings():
        # highdicom's person-name check would echo (0010,0010) Patient's Name into the log.
        warnings.simplefilter("ignore", UserWarning)
        derived = build()
    for keyword in _DEID_METHOD:
        if keyword in source and keyword not in derived:
            setattr(derived, keyword, source.data_element(keyword).value)
    path = Path(target)
    write_atomic(path, lambda temp: derived.save_as(temp))
    return path
