"""The radiation dose of a synthetic CT study: what the images, the dose screen and the dose SR report.

CTDIvol follows the tube current and voltage as before, scaled by the vendor's dose habits, the
patient's size (automatic exposure control raises the dose for larger patients) and the
protocol (contrast-enhanced scans run a little higher); DLP is CTDIvol times the scan length.
The localizer is one low-dose event of its own. Body CT is measured in the 32 cm body phantom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pacs_workbench.synth.imaging import Anatomy, Protocol

# Relative dose of each vendor's default chest protocols (noise targets differ between vendors).
VENDOR_DOSE = {"siemens": 0.88, "ge": 1.12, "philips": 1.0, "canon": 0.94}
BODY_PHANTOM = ("113691", "IEC Body Dosimetry Phantom")
HEAD_PHANTOM = ("113690", "IEC Head Dosimetry Phantom")
LOCALIZER_CTDIVOL_MGY = 0.1
LOCALIZER_DLP_MGYCM = 2.1


@dataclass(frozen=True)
class StudyDose:
    """Dose of one CT study: the localizer and the helical acquisition, in mGy and mGy*cm."""

    ctdivol_mgy: float
    dlp_mgycm: float
    localizer_ctdivol_mgy: float
    localizer_dlp_mgycm: float
    phantom: tuple[str, str]
    scan_length_mm: float

    @property
    def total_dlp_mgycm(self) -> float:
        """(113813) CT Dose Length Product Total: the sum over the irradiation events."""
        return round(self.dlp_mgycm + self.localizer_dlp_mgycm, 1)


def study_dose(anatomy: Anatomy, protocol: Protocol) -> StudyDose:
    """The dose of a study from its protocol and the patient's body size."""
    # Water-equivalent diameter of the body ellipse (semi-axes in mm), in cm; 30 cm is average.
    diameter_cm = 2.0 * math.sqrt(anatomy.body_a * anatomy.body_b) / 10.0
    size = math.exp(0.035 * (diameter_cm - 30.0))
    ctdi = protocol.tube_current * 0.04 * (protocol.kvp / 120) ** 2
    ctdi *= VENDOR_DOSE.get(protocol.vendor, 1.0) * size * (1.1 if protocol.contrast else 1.0)
    ctdi = round(max(ctdi, 0.5), 2)
    length_mm = protocol.n_slices * protocol.spacing
    return StudyDose(
        ctdivol_mgy=ctdi,
        dlp_mgycm=round(ctdi * length_mm / 10.0, 1),
        localizer_ctdivol_mgy=LOCALIZER_CTDIVOL_MGY,
        localizer_dlp_mgycm=LOCALIZER_DLP_MGYCM,
        phantom=BODY_PHANTOM,
        scan_length_mm=length_mm,
    )
