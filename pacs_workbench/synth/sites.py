"""Sites an extract can come from: the development site and an external one.

A model validated only where it was developed says little about the next hospital. The
external site refers its patients from the same three hospitals in another mix, so the
scanner and vendor mix differs (mostly the Philips, Siemens Force and Canon rooms, hardly any of
the development site's main Siemens and GE scanners), and its scanners are calibrated differently: every
image is shifted and scaled in HU on top of the vendor's own habits, as a drifted water
calibration or another reconstruction release would do. Outcomes follow the same model, so a
good model should transfer, and the external validation shows how much it loses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """Where a synthetic extract comes from.

    Attributes
    ----------
    name
        ``development`` or ``external``.
    institution_weights
        Share of patients referred by each of :data:`~pacs_workbench.synth.patients.INSTITUTIONS`
        (``None``: the institutions' own weights); the institution decides the scanners, hence
        (0008,0070) Manufacturer and (0018,1210) Convolution Kernel.
    hu_shift, hu_gain
        Calibration of every CT image on top of the vendor's: ``hu * (1 + hu_gain) + hu_shift``.
    """

    name: str
    institution_weights: tuple[float, ...] | None = None
    hu_shift: float = 0.0
    hu_gain: float = 0.0


SITES: dict[str, Site] = {
    "development": Site("development"),
    "external": Site("external", institution_weights=(0.05, 0.5, 0.45), hu_shift=25.0, hu_gain=0.04),
}


def get_site(name: str) -> Site:
    """The site called ``name``; a clear error naming the choices otherwise."""
    try:
        return SITES[name]
    except KeyError:
        raise ValueError(f"unknown site {name!r}: choose one of {', '.join(SITES)}") from None
