"""MR scanners and the sequences of a synthetic brain tumour protocol, written each vendor's way.

A brain MR study holds T1 before and after gadolinium, T2, FLAIR and, in most studies, a
diffusion trace (b = 1000 s/mm^2) with its ADC map. What a sequence *is* shows in its
acquisition attributes, which vendors fill alike: (0018,0020) Scanning Sequence, (0018,0021)
Sequence Variant, (0018,0080) Repetition Time, (0018,0081) Echo Time, (0018,0082) Inversion
Time, (0018,9087) Diffusion b-Value, the Image Type and the contrast attributes. What a sequence
is *called* differs per vendor and site: Siemens ``t2_tirm_tra_dark-fluid``, GE ``Ax T2 FLAIR``,
Philips ``T2W_FLAIR``, Canon ``FLAIR_AX``; one site names every series ``Ax 5mm`` on some
studies, so only the attributes tell the sequences apart there.

Vendor habits that matter downstream:

- GE's IR-prepared 3D T1 (BRAVO) reports the readout's TR (about 8 ms) with a TI of 450 ms;
  Siemens' MPRAGE reports the preparation's TR (about 2 s); both are T1 weighted.
- Contrast: GE and Canon write (0018,0010) Contrast/Bolus Agent on post-contrast series;
  Siemens VE11 only says so in the series description (``_KM``); scanners writing enhanced
  multi-frame objects use the Enhanced Contrast/Bolus module (code sequence).
- Siemens XA and Philips write Enhanced MR Image Storage (one file per series, geometry and
  timing in functional groups); GE, Canon and Siemens VE11 write one file per slice.
- Every receive coil has its own sensitivity profile: a smooth multiplicative bias field
  whose strength depends on the coil (:data:`COIL_BIAS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Normalized sequence types, in acquisition order of the protocol.
SEQUENCE_KINDS = ("T1", "T1C", "T2", "FLAIR", "DWI", "ADC")

#: Strength of the receive coil's sensitivity profile (fraction of signal, centre to periphery).
COIL_BIAS = {
    "HeadNeck_20": 0.30,
    "Head_32": 0.45,
    "Head_64": 0.55,
    "8HRBRAIN": 0.18,
    "HNU 48": 0.40,
    "dS HeadNeck 20ch": 0.35,
    "Head SPEEDER": 0.25,
}


@dataclass(frozen=True)
class MRScanner:
    """One installed MR scanner (General Equipment attributes) and how it writes images."""

    vendor: str
    manufacturer: str
    model: str
    software: str
    station: str
    serial: str
    field_t: float
    coil: str
    enhanced: bool  # Enhanced MR Image Storage (multi-frame) instead of one file per slice


#: MR scanners per institution (same order as :data:`pacs_workbench.synth.patients.INSTITUTIONS`).
MR_SCANNERS: tuple[tuple[MRScanner, ...], ...] = (
    (
        MRScanner("siemens", "Siemens Healthineers", "MAGNETOM Vida", "syngo MR XA50", "SAMC_MR1", "175627",
                  3.0, "Head_64", True),
        MRScanner("ge", "GE MEDICAL SYSTEMS", "SIGNA Artist", "29\\LX\\MR Software release:MR29.1_R01",
                  "SAMCMR2", "000000MR4411", 1.5, "HNU 48", False),
    ),
    (
        MRScanner("philips", "Philips Medical Systems", "Ingenia Elition X", "5.7.1\\5.7.1.2", "BLH-MR-ELX", "42013",
                  3.0, "dS HeadNeck 20ch", True),
        MRScanner("siemens", "SIEMENS", "Aera", "syngo MR E11", "BLHMRAERA", "41822", 1.5, "HeadNeck_20", False),
    ),
    (
        MRScanner("canon", "Canon Medical Systems", "Vantage Orian", "V8.0*R005", "HVC_MR1", "MBB1992051",
                  1.5, "Head SPEEDER", False),
        MRScanner("ge", "GE MEDICAL SYSTEMS", "SIGNA Premier", "30\\LX\\MR Software release:MR30.0_R02",
                  "HVCMRPREM", "000000MR7719", 3.0, "Head_32", False),
    ),
)  # fmt: skip
#: (0028,0101) Bits Stored and the stored value of the brightest tissue, per vendor.
VENDOR_SCALE = {"siemens": (12, 1400.0), "ge": (16, 2600.0), "philips": (12, 900.0), "canon": (16, 1800.0)}
#: (0028,1053) Rescale Slope Philips writes (stored values times this give its display values).
PHILIPS_RESCALE_SLOPE = 2.6
#: Relative noise (of the brightest tissue) at 1.5 T; 3 T halves it.
NOISE_15T = 0.022


@dataclass(frozen=True)
class SequenceSpec:
    """One series of an MR study: what it is, how it was acquired and how its vendor names it.

    ``weighting`` says how the phantom is rendered (``se`` spin echo, ``ir`` inversion recovery,
    ``mprage`` IR-prepared gradient echo, ``dwi`` diffusion trace, ``adc`` the ADC map); the
    timing used for rendering is ``render_tr`` (the preparation's TR for ``mprage``).
    """

    kind: str
    weighting: str
    description: str
    protocol_name: str
    series_number: int
    scanning_sequence: str
    sequence_variant: str
    scan_options: str
    sequence_name: str
    acquisition_type: str
    echo_pulse: str  # Enhanced MR (0018,9008) Echo Pulse Sequence: SPIN or GRADIENT
    repetition_time: float
    echo_time: float
    inversion_time: float | None
    flip_angle: float
    echo_train_length: int
    b_value: float | None
    image_type: tuple[str, ...]
    acquisition_contrast: str  # Enhanced MR (0008,9209)
    contrast: bool
    render_tr: float

    @property
    def derived(self) -> bool:
        """Whether the series is computed from another (the ADC map)."""
        return self.image_type[0] == "DERIVED"


def _draw(rng: np.random.Generator, lo: float, hi: float, step: float = 1.0) -> float:
    return round(float(round(float(rng.uniform(lo, hi)) / step) * step), 4)


def _timing(kind: str, scanner: MRScanner, rng: np.random.Generator) -> dict[str, object]:
    """Weighting and the acquisition attributes of one sequence kind on one scanner."""
    three = scanner.field_t >= 3.0
    vendor = scanner.vendor
    if kind in ("T1", "T1C"):
        if vendor == "ge" and three:  # IR-prepared 3D fast gradient echo (BRAVO): the readout's TR
            return dict(weighting="mprage", scanning_sequence="GR", sequence_variant="SS\\SK",
                        scan_options="FAST_GEMS\\EDR_GEMS\\IR_GEMS", sequence_name="efgre3d", acquisition_type="3D",
                        echo_pulse="GRADIENT", repetition_time=_draw(rng, 7.8, 8.6, 0.001), echo_time=3.2,
                        inversion_time=450.0, flip_angle=12.0, echo_train_length=1, render_tr=1900.0)
        if vendor in ("siemens", "philips") and three:  # MPRAGE / 3D TFE with an inversion pulse
            tr = _draw(rng, 1900.0, 2300.0, 10.0) if vendor == "siemens" else _draw(rng, 8.0, 8.4, 0.01)
            return dict(weighting="mprage", scanning_sequence="GR\\IR", sequence_variant="SK\\SP\\MP",
                        scan_options="IR" if vendor == "siemens" else "OTHER",
                        sequence_name="*tfl3d1_16ns" if vendor == "siemens" else "T1TFE",
                        acquisition_type="3D", echo_pulse="GRADIENT", repetition_time=tr,
                        echo_time=2.3 if vendor == "siemens" else 3.7, inversion_time=900.0 if vendor == "siemens"
                        else 1000.0, flip_angle=8.0, echo_train_length=1,
                        render_tr=tr if vendor == "siemens" else 2000.0)  # fmt: skip
        tr = _draw(rng, 450.0, 620.0, 10.0)
        return dict(weighting="se", scanning_sequence="SE", sequence_variant="SK\\SP\\OSP", scan_options="",
                    sequence_name="*se2d1" if vendor == "siemens" else "SE2D", acquisition_type="2D",
                    echo_pulse="SPIN", repetition_time=tr, echo_time=_draw(rng, 8.0, 14.0, 0.1), inversion_time=None,
                    flip_angle=90.0, echo_train_length=1, render_tr=tr)  # fmt: skip
    if kind == "T2":
        tr = _draw(rng, 3800.0, 6000.0, 10.0)
        return dict(weighting="se", scanning_sequence="SE", sequence_variant="SK\\SP\\OSP", scan_options="",
                    sequence_name="*tse2d1_15" if vendor == "siemens" else "TSE", acquisition_type="2D",
                    echo_pulse="SPIN", repetition_time=tr, echo_time=_draw(rng, 85.0, 110.0, 1.0),
                    inversion_time=None, flip_angle=150.0 if three else 180.0, echo_train_length=15, render_tr=tr)
    if kind == "FLAIR":
        tr = _draw(rng, 8000.0, 11000.0, 10.0)
        ti = _draw(rng, 2300.0, 2800.0, 10.0) if tr > 9000 else _draw(rng, 2200.0, 2450.0, 10.0)
        return dict(weighting="ir", scanning_sequence="SE\\IR", sequence_variant="SK\\SP\\MP\\OSP", scan_options="IR",
                    sequence_name="*tir2d1_16" if vendor == "siemens" else "IR_TSE", acquisition_type="2D",
                    echo_pulse="SPIN", repetition_time=tr, echo_time=_draw(rng, 85.0, 135.0, 1.0), inversion_time=ti,
                    flip_angle=150.0, echo_train_length=16, render_tr=tr)  # fmt: skip
    tr = _draw(rng, 4200.0, 7000.0, 10.0)
    timing: dict[str, object] = dict(
                  weighting="dwi" if kind == "DWI" else "adc", scanning_sequence="EP" if vendor != "ge" else "EP\\SE",
                  sequence_variant="SK\\SP", scan_options="FS" if vendor == "canon" else "PFP\\FS",
                  sequence_name="*ep_b1000t" if vendor == "siemens" else "DWI_EPI", acquisition_type="2D",
                  echo_pulse="SPIN", repetition_time=tr, echo_time=_draw(rng, 65.0, 95.0, 1.0), inversion_time=None,
                  flip_angle=90.0, echo_train_length=1, render_tr=tr)  # fmt: skip
    return timing


def _image_type(kind: str, vendor: str, enhanced: bool) -> tuple[str, ...]:
    """(0008,0008) Image Type: enhanced objects use the MR flavor terms, classic ones the vendor's."""
    if enhanced:
        flavor = {"T1": "T1", "T1C": "T1", "T2": "T2", "FLAIR": "FLUID_ATTENUATED", "DWI": "DIFFUSION",
                  "ADC": "DIFFUSION"}[kind]  # fmt: skip
        return ("DERIVED", "PRIMARY", flavor, "ADC") if kind == "ADC" else ("ORIGINAL", "PRIMARY", flavor, "NONE")
    if kind == "ADC":
        return ("DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND") if vendor == "siemens" else ("DERIVED", "SECONDARY",
                                                                                            "ADC")  # fmt: skip
    if kind == "DWI":
        return ("ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND", "NORM") if vendor == "siemens" else (
            "ORIGINAL", "PRIMARY", "OTHER")  # fmt: skip
    return ("ORIGINAL", "PRIMARY", "M", "ND", "NORM") if vendor == "siemens" else ("ORIGINAL", "PRIMARY", "OTHER")


def _texts(kind: str, scanner: MRScanner, unhelpful: bool) -> tuple[str, str]:
    """(0008,103E) Series Description and (0018,1030) Protocol Name, vendor and site style."""
    vendor, three = scanner.vendor, scanner.field_t >= 3.0
    if vendor == "siemens":
        t1 = "t1_mprage_tra_p2_iso" if three else "t1_se_tra"
        base = {"T1": t1, "T1C": t1, "T2": "t2_tse_tra_p2", "FLAIR": "t2_tirm_tra_dark-fluid",
                "DWI": "ep2d_diff_3scan_trace_p2", "ADC": "ep2d_diff_3scan_trace_p2"}[kind]  # fmt: skip
        suffix = {"T1C": "_post" if three else "_KM", "DWI": "_TRACEW", "ADC": "_ADC"}.get(kind, "")
        return base + suffix, base
    if vendor == "ge":
        t1 = "Ax T1 BRAVO" if three else "Ax T1 SE"
        desc = {"T1": t1, "T1C": t1 + " +C", "T2": "Ax T2 FSE", "FLAIR": "Ax T2 FLAIR", "DWI": "Ax DWI 1000b",
                "ADC": "Apparent Diffusion Coefficient (mm2/s)"}[kind]  # fmt: skip
        return desc, ("3T BRAIN TUMOR W/WO" if three else "BRAIN TUMOR W/WO")
    if vendor == "philips":
        desc = {"T1": "T1W_3D_TFE", "T1C": "T1W_3D_TFE +C", "T2": "T2W_TSE", "FLAIR": "T2W_FLAIR",
                "DWI": "DWI_SENSE", "ADC": "dADC_DWI_SENSE"}[kind]  # fmt: skip
        return desc, desc.replace("dADC_", "").replace(" +C", "") + " CLEAR"
    if unhelpful:  # a site whose technologists name every series by its plane and thickness
        return "Ax 5mm", "HEAD ROUTINE"
    desc = {"T1": "T1WI_SE_AX", "T1C": "T1WI_SE_AX+C", "T2": "T2WI_FSE_AX", "FLAIR": "FLAIR_AX", "DWI": "DWI_b1000_AX",
            "ADC": "ADC_AX"}[kind]  # fmt: skip
    return desc, "HEAD ROUTINE"


_SERIES_BASE = {"siemens": (2, 1), "ge": (2, 1), "philips": (201, 100), "canon": (3, 1)}


def plan_sequences(scanner: MRScanner, rng: np.random.Generator, *, with_dwi: bool,
                   unhelpful: bool) -> tuple[SequenceSpec, ...]:
    """The series of one study, in acquisition order (T1, T2, FLAIR, [DWI, ADC], T1 post-contrast).

    Parameters
    ----------
    scanner
        The scanner that acquires the study.
    rng
        Study-level random generator.
    with_dwi
        Whether the study has a diffusion trace and its ADC map.
    unhelpful
        Whether the site named the series by plane and thickness only (Canon site).
    """
    kinds = ["T1", "T2", "FLAIR", *(["DWI", "ADC"] if with_dwi else []), "T1C"]
    first, step = _SERIES_BASE[scanner.vendor]
    specs = []
    drawn: dict[str, dict[str, object]] = {}
    for i, kind in enumerate(kinds):
        if kind == "T1C":
            timing = drawn["T1"]  # the post-contrast T1 repeats the pre-contrast one
        elif kind == "ADC":
            timing = {**drawn["DWI"], "weighting": "adc"}  # computed from the diffusion acquisition
        else:
            timing = drawn[kind] = _timing(kind, scanner, rng)
        description, protocol = _texts(kind, scanner, unhelpful)
        flavor = _image_type(kind, scanner.vendor, scanner.enhanced)
        specs.append(
            SequenceSpec(
                kind=kind,
                description=description,
                protocol_name=protocol,
                series_number=first + i * step,
                b_value=1000.0 if kind == "DWI" else (0.0 if kind == "ADC" else None),
                image_type=flavor,
                acquisition_contrast={"T1": "T1", "T1C": "T1", "T2": "T2", "FLAIR": "FLUID_ATTENUATED"}.get(
                    kind, "DIFFUSION"),
                contrast=kind == "T1C",
                **timing,  # type: ignore[arg-type]
            )
        )  # fmt: skip
    return tuple(specs)
