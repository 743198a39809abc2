"""CT radiation dose from an X-Ray Radiation Dose SR (TID 10011 CT Radiation Dose).

Only instances of X-Ray Radiation Dose SR Storage (1.2.840.10008.5.1.4.1.1.88.67) are read for
dose, so an index pays the full parse for them alone. :func:`read_ct_dose` walks the content tree
by concept name codes (DCM):

- (113813) CT Dose Length Product Total in (113811) CT Accumulated Dose Data: ``DLP_mGycm_total``;
- per (113819) CT Acquisition, its (113829) CT Dose: (113830) Mean CTDIvol, (113838) DLP and
  (113835) CTDIw Phantom Type. ``CTDIvol_mGy`` is the CTDIvol of the study's main acquisition
  (the event with the largest DLP: the helical series, not the localizer) and ``CTDIw_phantom``
  its phantom's code meaning.

Values in Gy (or Gy.cm) are converted to mGy (mGy.cm); a value in any other unit is ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset

from pacs_workbench.dicom.attributes import to_float, to_text

XRAY_RADIATION_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
#: Dose columns of an instance row; ``None`` for every instance that is not a dose SR.
DOSE_COLUMNS: tuple[str, ...] = ("CTDIvol_mGy", "DLP_mGycm_total", "CTDIw_phantom", "n_irradiation_events")

_SCALE = {"mGy": 1.0, "Gy": 1000.0, "mGy.cm": 1.0, "Gy.cm": 1000.0, "mGycm": 1.0}


def _concept(item: Dataset) -> str:
    codes = item.get("ConceptNameCodeSequence") or []
    return str(codes[0].get("CodeValue", "")) if codes else ""


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence") or [])


def _walk(item: Dataset) -> Iterator[Dataset]:
    for child in _children(item):
        yield child
        yield from _walk(child)


def _number(item: Dataset) -> float | None:
    """A NUM item's value in mGy or mGy.cm."""
    measured = (item.get("MeasuredValueSequence") or [None])[0]
    if measured is None:
        return None
    units = measured.get("MeasurementUnitsCodeSequence") or []
    unit = str(units[0].get("CodeValue", "")) if units else ""
    value = to_float(measured.get("NumericValue"))
    scale = _SCALE.get(unit)
    return None if value is None or scale is None else value * scale


def _find(item: Dataset, concept: str) -> Dataset | None:
    return next((child for child in _walk(item) if _concept(child) == concept), None)


def _events(ds: Dataset) -> list[dict[str, Any]]:
    """CTDIvol, DLP and phantom of each (113819) CT Acquisition."""
    events = []
    for acquisition in (item for item in _walk(ds) if _concept(item) == "113819"):
        dose = _find(acquisition, "113829")
        if dose is None:
            continue
        ctdi, dlp, phantom = _find(dose, "113830"), _find(dose, "113838"), _find(dose, "113835")
        phantom_codes = (phantom.get("ConceptCodeSequence") or []) if phantom is not None else []
        events.append(
            {
                "ctdi": _number(ctdi) if ctdi is not None else None,
                "dlp": _number(dlp) if dlp is not None else None,
                "phantom": to_text(phantom_codes[0].get("CodeMeaning")) if phantom_codes else None,
            }
        )
    return events


def is_dose_sr(sop_class_uid: Any) -> bool:
    """True for (0008,0016) SOP Class UID X-Ray Radiation Dose SR Storage."""
    return to_text(sop_class_uid) == XRAY_RADIATION_DOSE_SR


def read_ct_dose(ds: Dataset) -> dict[str, Any]:
    """The dose columns (:data:`DOSE_COLUMNS`) of a CT dose SR; all ``None`` without CT dose content."""
    events = _events(ds)
    accumulated = next((item for item in _walk(ds) if _concept(item) == "113811"), None)
    total_item = _find(accumulated, "113813") if accumulated is not None else None
    total = _number(total_item) if total_item is not None else None
    if total is None and events and all(e["dlp"] is not None for e in events):
        total = sum(e["dlp"] for e in events)
    main = max(events, key=lambda e: e["dlp"] if e["dlp"] is not None else -1.0) if events else None
    return {
        "CTDIvol_mGy": main["ctdi"] if main else None,
        "DLP_mGycm_total": total,
        "CTDIw_phantom": main["phantom"] if main else None,
        "n_irradiation_events": len(events) if events or total is not None else None,
    }
