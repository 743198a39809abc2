"""The scored study's measurement report: a Comprehensive 3D SR (TID 1500) written with highdicom.

One measurement group per lesion holds its volume and its maximum diameter; a study-level
group holds the model's risk score and risk group. The model is identified by the package's
manifest digest as the algorithm (TID 4019) and the report references the source series
((0040,A375) Current Requested Procedure Evidence Sequence) so a viewer shows it with the study.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacs_workbench.dicom.derived import write_derived

RISK_SCORE = ("RISK", "99PACSWB", "Model risk score")
RISK_GROUP = ("RISKGRP", "99PACSWB", "Model risk group")
RISK_GROUPS = {
    "low": ("LOW", "99PACSWB", "Low risk"),
    "intermediate": ("INTERMED", "99PACSWB", "Intermediate risk"),
    "high": ("HIGH", "99PACSWB", "High risk"),
}


@dataclass(frozen=True)
class LesionMeasurement:
    """A lesion's volume (mm3) and maximum diameter (mm)."""

    volume_mm3: float
    diameter_mm: float


def _algorithm(model_name: str, model_version: str) -> Any:
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(name=model_name[:64], version=model_version[:64])


def _lesion_group(index: int, lesion: LesionMeasurement, algorithm: Any) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    measurements = [
        hd.sr.Measurement(
            name=codes.SCT.Volume, value=float(lesion.volume_mm3), unit=codes.UCUM.CubicMillimeter,
            algorithm_id=algorithm,
        ),
        hd.sr.Measurement(
            name=codes.SCT.Diameter, value=float(lesion.diameter_mm), unit=codes.UCUM.Millimeter,
            algorithm_id=algorithm,
        ),
    ]  # fmt: skip
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"Lesion {index + 1}"),
        measurements=measurements,
        finding_type=codes.SCT.Nodule,
        algorithm_id=algorithm,
    )


def _risk_group(risk: float, group: str, algorithm: Any) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Model risk"),
        measurements=[
            hd.sr.Measurement(
                name=Code(*RISK_SCORE), value=float(risk), unit=codes.UCUM.NoUnits, algorithm_id=algorithm
            )
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=Code(*RISK_GROUP), value=Code(*RISK_GROUPS[group]))],
        algorithm_id=algorithm,
    )


def write_measurement_report(
    source_files: Sequence[str],
    lesions: Sequence[LesionMeasurement],
    risk: float,
    risk_group: str,
    target: str | os.PathLike[str],
    *,
    model_name: str,
    model_version: str,
    series_number: int = 901,
) -> Path:
    """Write the TID 1500 report of one scored series atomically; returns its path.

    Parameters
    ----------
    source_files
        The scored series' files; referenced as evidence and the source of the patient/study modules.
    lesions
        One :class:`LesionMeasurement` per segmented lesion.
    risk, risk_group
        The package's risk and its group (``low``, ``intermediate``, ``high``).
    model_name, model_version
        The model's identification (name and the package's manifest digest).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    if risk_group not in RISK_GROUPS:
        raise ValueError(f"unknown risk group {risk_group!r}")
    sources: list[Any] = [pydicom.dcmread(f, stop_before_pixels=True) for f in source_files]
    algorithm = _algorithm(model_name, model_version)
    groups = [_lesion_group(i, lesion, algorithm) for i, lesion in enumerate(lesions)]
    groups.append(_risk_group(risk, risk_group, algorithm))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name=model_name[:64]),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    return write_derived(
        lambda: hd.sr.Comprehensive3DSR(
            evidence=sources,
            content=report,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="pacs-workbench",
            series_description="Lesion measurements and model risk",
        ),
        sources[0],
        target,
    )


def read_risk(path: str | os.PathLike[str]) -> tuple[float, str]:
    """The risk score and risk group of a report written by :func:`write_measurement_report`."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.coding import Code

    content: Any = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path)).content
    for group in content.get_image_measurement_groups():
        found = group.get_measurements(name=Code(*RISK_SCORE))
        if found:
            value = group.get_qualitative_evaluations(name=Code(*RISK_GROUP))[0].value
            label = next(k for k, v in RISK_GROUPS.items() if v[0] == value.value)
            return float(found[0].value), label
    raise ValueError("no model risk in the report")
