"""Synthetic people: identities (PHI), clinical factors, nodules, study schedule and outcome.

Every identifier is invented. Names come from pools of distinctive names (six letters or
more, none a substring of another or of a word the extract otherwise uses), so a search
for a planted name never hits innocuous text. Formats, documented for the audit:

- MRN (``PatientID``): ``H`` + 7 digits, e.g. ``H4829137``. The letter keeps MRNs from
  matching digit runs inside numeric UIDs.
- Accession number: ``A`` + 7 digits, e.g. ``A1029384``.
- Other patient ID (regional exchange): ``RH`` + 8 digits.
- Phone: ``(AAA) 555-01NN`` (also written ``AAA-555-01NN`` in free text).

The outcome, malignancy confirmed within two years of the baseline CT, follows a known
logistic model of the primary nodule's size, margin irregularity and internal
heterogeneity plus age and smoking pack-years (:data:`OUTCOME_MODEL`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from itertools import product

import numpy as np

from pacs_workbench.synth.common import derive_rng
from pacs_workbench.synth.imaging import (
    Anatomy,
    NoduleSpec,
    Pose,
    Protocol,
    Scanner,
    assign_lobe,
    diameter_at,
    place_nodule,
    plan_anatomy,
    plan_protocol,
)
from pacs_workbench.synth.sites import SITES, Site

FAMILY_NAMES = (
    "Abernathy", "Achterberg", "Abramowicz", "Bergstrom", "Blackwood", "Brannigan", "Calloway",
    "Carrington", "Castellanos", "Delacroix", "Donnelly", "Dunleavy", "Eberhardt", "Engstrom",
    "Esposito", "Fairbanks", "Ferrante", "Fitzwilliam", "Galloway", "Gutierrez", "Halvorsen",
    "Hargreaves", "Hollister", "Iglesias", "Ingersoll", "Jankowski", "Jorgensen", "Kaczmarek",
    "Kirkpatrick", "Kowalczyk", "Lindqvist", "Lockhart", "Mackenzie", "Marchetti", "Nakamura",
    "Nightingale", "Northcott", "Okonkwo", "Ostrowski", "Oyelaran", "Pellegrino", "Pemberton",
    "Petrovic", "Quintero", "Radcliffe", "Rasmussen", "Rutherford", "Sandoval", "Schumacher",
    "Sorensen", "Takahashi", "Thibodeaux", "Trevelyan", "Underhill", "Vanderberg", "Villanueva",
    "Wainwright", "Whitcombe", "Yamaguchi", "Zielinski",
)  # fmt: skip
GIVEN_FEMALE = (
    "Adelaide", "Annika", "Beatrix", "Brigitte", "Clementine", "Cordelia", "Delphine", "Dorothea",
    "Esmeralda", "Evangeline", "Florentina", "Fredrika", "Genevieve", "Gwendolyn", "Harriet",
    "Henrietta", "Imogen", "Isadora", "Josephine", "Juliana", "Katarina", "Leonora", "Lucinda",
    "Marguerite", "Mirabel", "Nicoletta", "Octavia", "Ophelia", "Perpetua", "Philippa", "Rosalind",
    "Rosamund", "Sabrina", "Seraphina", "Tabitha", "Theodora", "Valentina", "Wilhelmina",
    "Yolanda", "Zenobia",
)  # fmt: skip
GIVEN_MALE = (
    "Alistair", "Ambrose", "Barnaby", "Bartholomew", "Cornelius", "Cuthbert", "Desmond", "Dietrich",
    "Emmanuel", "Ezekiel", "Fergus", "Gideon", "Horatio", "Humphrey", "Ignatius", "Isidore",
    "Jeremiah", "Lysander", "Leopold", "Maximilian", "Mortimer", "Nathaniel", "Nikolai", "Oswald",
    "Percival", "Quentin", "Reginald", "Rupert", "Sebastian", "Silvester", "Thaddeus", "Tobias",
    "Ulysses", "Wendell", "Winston", "Xavier", "Zachariah", "Gregor", "Jasper", "Lorenzo",
)  # fmt: skip
STREETS = (
    "Hollyhock Lane", "Juniper Hollow Road", "Marigold Terrace", "Chestnut Grove Drive",
    "Birchwood Crescent", "Foxglove Court", "Wintergreen Way", "Bramblewood Avenue",
    "Tamarack Ridge Road", "Sycamore Bend", "Larchmont Place", "Heatherstone Drive",
    "Quailrun Circle", "Elderberry Street", "Thistledown Lane", "Cobblefield Road",
)  # fmt: skip


@dataclass(frozen=True)
class Institution:
    """A hospital: (0008,0080) Institution Name, (0008,0081) Institution Address, its staff,
    scanners, home towns of its patients and their phone area codes."""

    name: str
    address: str
    referrers: tuple[tuple[str, str], ...]  # (family, given)
    radiologists: tuple[tuple[str, str], ...]
    technologists: tuple[tuple[str, str], ...]
    scanners: tuple[Scanner, ...]
    towns: tuple[tuple[str, str, str], ...]  # (city, state, zip)
    area_codes: tuple[str, ...]
    mrn_system: str
    weight: float


INSTITUTIONS: tuple[Institution, ...] = (
    Institution(
        name="Saint Aldric Medical Center",
        address="1400 Larkspur Avenue, Fairmont Heights, OH 44101",
        referrers=(("Pennington", "Augustin"), ("Wetherby", "Cressida"), ("Stanhope", "Ferdinand"),
                   ("Merriweather", "Giselle")),
        radiologists=(("Brightwater", "Hannelore"), ("Thornbury", "Raphael"), ("Lindgren", "Solveig")),
        technologists=(("Ashcombe", "Lorcan"), ("Blomqvist", "Ulrike")),
        scanners=(
            Scanner("siemens", "SIEMENS", "SOMATOM Definition AS+", "syngo CT VA48A", "CTAWP73291", "73291"),
            Scanner("ge", "GE MEDICAL SYSTEMS", "Revolution CT", "revo_ct_22mw.41", "SAMC_CT2", "R412CT88"),
        ),
        towns=(("Fairmont Heights", "OH", "44101"), ("Ravensbrook", "OH", "44137"),
               ("Willowmere", "OH", "44122")),
        area_codes=("216", "440"),
        mrn_system="urn:oid:2.16.840.1.113883.3.9101.1",
        weight=0.4,
    ),
    Institution(
        name="Brookhaven Lakes Hospital",
        address="77 Quarry Ridge Road, Millbrook Falls, PA 17013",
        referrers=(("Raghunathan", "Margarethe"), ("Sotomayor", "Torsten"), ("Chatterjee", "Wilfred"),
                   ("Devereaux", "Benedikt")),
        radiologists=(("Vukovic", "Celestine"), ("Everhart", "Eamonn"), ("Fairweather", "Ottilie")),
        technologists=(("Grimaldi", "Saoirse"), ("Hathaway", "Caspian")),
        scanners=(
            Scanner("philips", "Philips", "iCT 256", "4.1.6.25131", "BLH-CT-ICT", "101877"),
            Scanner("siemens", "SIEMENS", "SOMATOM Force", "syngo CT VB20A", "CTFRC55018", "55018"),
        ),
        towns=(("Millbrook Falls", "PA", "17013"), ("Ashgrove Valley", "PA", "17050"),
               ("Copperfield", "PA", "17025")),
        area_codes=("717", "484"),
        mrn_system="urn:oid:2.16.840.1.113883.3.9101.2",
        weight=0.35,
    ),
    Institution(
        name="Harrowgate Valley Clinic",
        address="9 Cobblestone Plaza, Ravenholt, MN 55901",
        referrers=(("Iwasaki", "Lisandro"), ("Jablonski", "Rosalba"), ("Kristiansen", "Evander"),
                   ("Lombardini", "Philomena")),
        radiologists=(("Moravec", "Anselm"), ("Nyberg-Stahl", "Ingeborg"), ("Oduya", "Tiberius")),
        technologists=(("Pryderi", "Morwenna"), ("Quarshie", "Leander")),
        scanners=(
            Scanner("canon", "TOSHIBA", "Aquilion", "V4.86ER005", "HVC_CT1", "BAA12Y2077"),
            Scanner("canon", "Canon Medical Systems", "Aquilion ONE", "V10.8SP0002", "HVC_CT2", "1CA19X3104"),
            Scanner("ge", "GE MEDICAL SYSTEMS", "LightSpeed VCT", "07MW18.4", "HVCCTOC", "L0987CT21"),
        ),
        towns=(("Ravenholt", "MN", "55901"), ("Silverbirch Lake", "MN", "55920"),
               ("Hollowmere", "MN", "55934")),
        area_codes=("507", "651"),
        mrn_system="urn:oid:2.16.840.1.113883.3.9101.3",
        weight=0.25,
    ),
)


@dataclass(frozen=True)
class OutcomeModel:
    """The logistic model behind the outcome (coefficients per driver unit).

    ``logit P(outcome) = intercept + sum(coef[d] * x[d])`` with drivers

    - ``x_diameter = log2(primary diameter mm / 8)``
    - ``x_irregularity = irregularity - 0.5`` (margin irregularity on 0..1)
    - ``x_heterogeneity = heterogeneity - 0.5`` (internal heterogeneity on 0..1)
    - ``x_age = (age - 65) / 10``
    - ``x_pack_years = (pack_years - 30) / 20``
    """

    intercept: float = -1.0
    coef: tuple[tuple[str, float], ...] = (
        ("x_diameter", 1.9),
        ("x_irregularity", 2.6),
        ("x_heterogeneity", 2.0),
        ("x_age", 0.45),
        ("x_pack_years", 0.55),
    )

    def drivers(self, diameter: float, irregularity: float, heterogeneity: float, age: float,
                pack_years: float) -> dict[str, float]:
        """Driver values of one patient."""
        return {
            "x_diameter": math.log2(diameter / 8.0),
            "x_irregularity": irregularity - 0.5,
            "x_heterogeneity": heterogeneity - 0.5,
            "x_age": (age - 65.0) / 10.0,
            "x_pack_years": (pack_years - 30.0) / 20.0,
        }

    def linear_predictor(self, drivers: dict[str, float]) -> float:
        """``intercept + sum(coef * x)``."""
        return self.intercept + sum(c * drivers[name] for name, c in self.coef)


OUTCOME_MODEL = OutcomeModel()


@dataclass(frozen=True)
class Person:
    """Who a patient is: the identifiers that a real export carries."""

    family: str
    given: str
    sex: str  # "M" or "F"
    birth_date: dt.date
    mrn: str
    other_id: str
    address_line: str
    city: str
    state: str
    postal_code: str
    phone: str

    @property
    def dicom_name(self) -> str:
        """``FAMILY^GIVEN`` as in (0010,0010) Patient's Name."""
        return f"{self.family.upper()}^{self.given.upper()}"

    @property
    def natural_name(self) -> str:
        """``Given Family``."""
        return f"{self.given} {self.family}"

    @property
    def comma_name(self) -> str:
        """``FAMILY, GIVEN`` as report headers and dose screens print it."""
        return f"{self.family.upper()}, {self.given.upper()}"

    @property
    def folder_name(self) -> str:
        """``Family_Given`` as the PACS export names folders."""
        return f"{self.family}_{self.given}"

    @property
    def address(self) -> str:
        """One-line postal address."""
        return f"{self.address_line}, {self.city}, {self.state} {self.postal_code}"

    @property
    def phone_dashed(self) -> str:
        """``AAA-555-01NN`` (the form free-text comments use)."""
        return self.phone.replace("(", "").replace(") ", "-")

    def birth_date_forms(self) -> tuple[str, str, str]:
        """``YYYYMMDD`` (DICOM), ``YYYY-MM-DD`` (FHIR, CSV), ``MM/DD/YYYY`` (reports)."""
        d = self.birth_date
        return d.strftime("%Y%m%d"), d.isoformat(), d.strftime("%m/%d/%Y")

    def phi_candidates(self) -> list[str]:
        """Every form in which this person's identifiers may be written."""
        return [
            self.dicom_name, self.natural_name, self.comma_name, self.folder_name,
            self.family, self.given, self.mrn, self.other_id, *self.birth_date_forms(),
            self.address_line, self.address, self.phone, self.phone_dashed,
        ]  # fmt: skip


def staff_forms(name: tuple[str, str]) -> tuple[str, str]:
    """A staff member's ``FAMILY^GIVEN`` and ``Given Family`` forms."""
    family, given = name
    return f"{family.upper()}^{given.upper()}", f"{given} {family}"


@dataclass(frozen=True)
class StudyPlan:
    """One CT study: when, where, how, and its identifiers."""

    index: int
    date: dt.date
    time: dt.time
    days_from_baseline: int
    accession: str
    scanner: Scanner
    protocol: Protocol
    pose: Pose
    z_center: float
    radiologist: tuple[str, str]
    technologist: tuple[str, str]
    with_rtstruct: bool
    diameters: tuple[float, ...]


@dataclass(frozen=True)
class PatientPlan:
    """Everything needed to write one patient, drawn up front so workers need no shared state."""

    index: int
    seed: int
    person: Person
    institution: int
    referrer: tuple[str, str]
    age: int
    smoking_status: str  # current | former | never
    pack_years: float
    pack_years_recorded: bool
    labs: dict[str, float]
    anatomy: Anatomy
    nodules: tuple[NoduleSpec, ...]
    studies: tuple[StudyPlan, ...]
    drivers: dict[str, float]
    linear_predictor: float
    probability: float
    outcome: int
    outcome_date: dt.date | None
    last_contact_date: dt.date
    has_imaging: bool
    has_ehr: bool
    phi_in_description: bool
    phi_in_image_comments: bool
    phi_in_patient_comments: bool
    flags: dict[str, bool] = field(default_factory=dict)

    @property
    def baseline_date(self) -> dt.date:
        """Date of the first CT."""
        return self.studies[0].date


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _n_unlinked(n: int) -> int:
    return max(1, round(0.025 * n)) if n >= 4 else 0


def plan_cohort(n_imaging: int, seed: int, site: Site = SITES["development"]) -> list[PatientPlan]:
    """Draw up the whole cohort.

    Parameters
    ----------
    n_imaging
        Patients with imaging in the extract. About 2.5 % more people exist only in the
        EHR export, and about 2.5 % of the imaging patients are missing from it.
    seed
        Extract seed.
    site
        Where the extract comes from: the institutions' mix and the scanners' calibration.

    Returns
    -------
    list of PatientPlan
        Imaging patients first-come in index order, EHR-only people interleaved.
    """
    if n_imaging < 1:
        raise ValueError("patients must be at least 1")
    n_ehr_only = _n_unlinked(n_imaging)
    total = n_imaging + n_ehr_only
    capacity = len(FAMILY_NAMES) * min(len(GIVEN_FEMALE), len(GIVEN_MALE)) * 2
    if total > capacity:
        raise ValueError(f"at most {capacity - n_ehr_only} synthetic patients are supported")
    rng = derive_rng(seed, 0)
    order = rng.permutation(total)
    ehr_only = set(order[:n_ehr_only].tolist())
    imaging_ids = [i for i in range(total) if i not in ehr_only]
    no_ehr = set(rng.choice(imaging_ids, size=_n_unlinked(n_imaging), replace=False).tolist()) if (
        _n_unlinked(n_imaging)) else set()
    sexes = np.where(rng.random(total) < 0.5, "F", "M")
    combos = {
        "F": list(product(FAMILY_NAMES, GIVEN_FEMALE)),
        "M": list(product(FAMILY_NAMES, GIVEN_MALE)),
    }
    perms = {s: rng.permutation(len(c)) for s, c in combos.items()}
    used = {"F": 0, "M": 0}
    mrns = rng.choice(9_000_000, size=total, replace=False) + 1_000_000
    other_ids = rng.choice(90_000_000, size=total, replace=False) + 10_000_000
    accessions = rng.choice(9_000_000, size=3 * total, replace=False) + 1_000_000
    plans = []
    for i in range(total):
        sex = str(sexes[i])
        if used[sex] >= len(combos[sex]):
            sex = "M" if sex == "F" else "F"
        family, given = combos[sex][int(perms[sex][used[sex]])]
        used[sex] += 1
        plans.append(
            _plan_patient(
                i, seed, sex, family, given, f"H{mrns[i]:07d}", f"RH{other_ids[i]:08d}",
                [f"A{a:07d}" for a in accessions[3 * i : 3 * i + 3]],
                has_imaging=i not in ehr_only, has_ehr=i not in no_ehr, site=site,
            )
        )  # fmt: skip
    return plans


def _plan_patient(
    index: int,
    seed: int,
    sex: str,
    family: str,
    given: str,
    mrn: str,
    other_id: str,
    accessions: list[str],
    *,
    has_imaging: bool,
    has_ehr: bool,
    site: Site,
) -> PatientPlan:
    # One random stream per patient; the helpers draw from it in a fixed order.
    rng = derive_rng(seed, 1, index)
    inst_weights = np.array(site.institution_weights or [inst.weight for inst in INSTITUTIONS])
    inst_idx = int(rng.choice(len(INSTITUTIONS), p=inst_weights / inst_weights.sum()))
    inst = INSTITUTIONS[inst_idx]
    age, status, pack_years, labs = _clinical_factors(rng, sex)
    person, baseline = _identity(rng, inst, age, family, given, sex, mrn, other_id)
    age = (baseline - person.birth_date).days // 365  # as DICOM (0010,1010) Patient's Age would say

    # Nodules: a latent aggressiveness ties size, margin and texture together.
    anatomy = plan_anatomy(rng)
    latent = float(rng.normal())
    diameter = float(np.clip(np.exp(np.log(8.0) + 0.35 * latent + 0.25 * rng.normal()), 4.0, 20.0))
    irregularity = _sigmoid(0.9 * latent + 0.7 * float(rng.normal()) - 0.1)
    heterogeneity = _sigmoid(0.8 * latent + 0.8 * float(rng.normal()) - 0.1)
    drivers = OUTCOME_MODEL.drivers(diameter, irregularity, heterogeneity, age, pack_years)
    lp = OUTCOME_MODEL.linear_predictor(drivers)
    prob = _sigmoid(lp)
    outcome = int(rng.random() < prob)
    nodules = _nodule_specs(rng, anatomy, diameter, irregularity, heterogeneity, outcome)
    studies = _study_plans(rng, index, inst, anatomy, nodules, diameter, baseline, accessions, site)
    outcome_date = None
    if outcome:
        last_study = studies[-1].days_from_baseline
        outcome_date = baseline + dt.timedelta(days=min(last_study + int(rng.integers(14, 120)), 720))
    last_contact = baseline + dt.timedelta(days=730 + int(rng.integers(0, 400)))

    return PatientPlan(
        index=index,
        seed=seed,
        person=person,
        institution=inst_idx,
        referrer=inst.referrers[int(rng.integers(len(inst.referrers)))],
        age=age,
        smoking_status=status,
        pack_years=pack_years,
        pack_years_recorded=bool(rng.random() >= 0.05),
        labs=labs,
        anatomy=anatomy,
        nodules=tuple(nodules),
        studies=tuple(studies),
        drivers={k: round(v, 6) for k, v in drivers.items()},
        linear_predictor=round(lp, 6),
        probability=round(prob, 6),
        outcome=outcome,
        outcome_date=outcome_date,
        last_contact_date=last_contact,
        has_imaging=has_imaging,
        has_ehr=has_ehr,
        phi_in_description=bool(rng.random() < 0.2),
        phi_in_image_comments=bool(rng.random() < 0.25),
        phi_in_patient_comments=bool(rng.random() < 0.3),
        flags={"other_ids": bool(rng.random() < 0.5), "telephone": bool(rng.random() < 0.7)},
    )


def _clinical_factors(rng: np.random.Generator, sex: str) -> tuple[int, str, float, dict[str, float]]:
    """Age, smoking status, pack-years and baseline labs."""
    age = int(np.clip(round(rng.normal(66.0, 7.0)), 50, 85))
    status = str(rng.choice(["current", "former", "never"], p=[0.42, 0.46, 0.12]))
    pack_years = 0.0 if status == "never" else round(float(18.0 + rng.gamma(2.2, 11.0)), 1)
    labs = {
        "cea_ng_ml": round(float(rng.lognormal(np.log(2.0 + (1.5 if status == "current" else 0.0)), 0.45)), 1),
        "hemoglobin_g_dl": round(float(rng.normal(14.6 if sex == "M" else 13.2, 1.1)), 1),
        "crp_mg_l": round(float(rng.lognormal(np.log(3.0), 0.8)), 1),
    }
    return age, status, pack_years, labs


def _identity(
    rng: np.random.Generator,
    inst: Institution,
    age: int,
    family: str,
    given: str,
    sex: str,
    mrn: str,
    other_id: str,
) -> tuple[Person, dt.date]:
    """The patient's identity (birth date, address, phone near the institution) and baseline date."""
    baseline = dt.date(2016, 1, 4) + dt.timedelta(days=int(rng.integers(0, 6 * 365 + 180)))
    birth = baseline - dt.timedelta(days=int(age * 365.25 + rng.integers(1, 364)))
    city, state, postal = inst.towns[int(rng.integers(len(inst.towns)))]
    person = Person(
        family=family,
        given=given,
        sex=sex,
        birth_date=birth,
        mrn=mrn,
        other_id=other_id,
        address_line=f"{int(rng.integers(10, 9900))} {STREETS[int(rng.integers(len(STREETS)))]}",
        city=city,
        state=state,
        postal_code=postal,
        phone=f"({inst.area_codes[int(rng.integers(len(inst.area_codes)))]}) 555-01{int(rng.integers(0, 100)):02d}",
    )
    return person, baseline


def _nodule_specs(
    rng: np.random.Generator,
    anatomy: Anatomy,
    diameter: float,
    irregularity: float,
    heterogeneity: float,
    outcome: int,
) -> list[NoduleSpec]:
    """The primary nodule (the outcome's driver) and up to two small benign ones near it."""
    z_primary = float(rng.uniform(-24.0, 24.0))
    nodules = [
        NoduleSpec(
            index=1,
            center=(c := place_nodule(anatomy, rng, diameter, z_primary)),
            diameter_mm=round(diameter, 2),
            irregularity=round(irregularity, 4),
            heterogeneity=round(heterogeneity, 4),
            malignant=bool(outcome),
            doubling_days=float(rng.uniform(120.0, 400.0)),
            lobe=assign_lobe(c),
            calcified=False,
            shape_seed=int(rng.integers(2**31)),
            attenuation=float(rng.normal(30.0, 8.0)),
        )
    ]
    for k in range(int(rng.choice([0, 1, 2], p=[0.5, 0.35, 0.15]))):
        d2 = float(rng.uniform(3.5, 6.5))
        z2 = float(np.clip(z_primary + rng.uniform(-10.0, 10.0), -30.0, 30.0))
        c2 = place_nodule(anatomy, rng, d2, z2)
        calcified = bool(rng.random() < 0.2)
        nodules.append(
            NoduleSpec(
                index=k + 2,
                center=c2,
                diameter_mm=round(d2, 2),
                irregularity=round(float(rng.uniform(0.02, 0.3)), 4),
                heterogeneity=round(float(rng.uniform(0.02, 0.3)), 4),
                malignant=False,
                doubling_days=0.0,
                lobe=assign_lobe(c2),
                calcified=calcified,
                shape_seed=int(rng.integers(2**31)),
                attenuation=float(rng.uniform(300.0, 600.0)) if calcified else float(rng.normal(25.0, 8.0)),
            )
        )
    return nodules


def _study_plans(
    rng: np.random.Generator,
    index: int,
    inst: Institution,
    anatomy: Anatomy,
    nodules: list[NoduleSpec],
    diameter: float,
    baseline: dt.date,
    accessions: list[str],
    site: Site,
) -> list[StudyPlan]:
    """The baseline CT and its follow-ups, each with its scanner, protocol and pose."""
    # Study schedule: bigger nodules are followed up sooner and more often.
    n_follow = int(rng.choice([0, 1, 2], p=[0.45, 0.33, 0.22] if diameter < 8 else [0.25, 0.4, 0.35]))
    days = [0]
    for _ in range(n_follow):
        gap = int(rng.integers(80, 200) if diameter >= 8 else rng.integers(150, 380))
        days.append(days[-1] + gap)
    base_scanner = inst.scanners[int(rng.integers(len(inst.scanners)))]
    z_nodules = [n.center[2] for n in nodules]
    z_mid = (min(z_nodules) + max(z_nodules)) / 2.0
    studies = []
    for s, day in enumerate(days):
        scanner = base_scanner
        if s > 0 and rng.random() < 0.25:
            scanner = inst.scanners[int(rng.integers(len(inst.scanners)))]
        protocol = replace(plan_protocol(scanner, rng, anatomy.body_a), hu_shift=site.hu_shift, hu_gain=site.hu_gain)
        diameters = tuple(round(diameter_at(n, day), 2) for n in nodules)
        extent = protocol.n_slices * protocol.spacing
        span = max(z_nodules) - min(z_nodules) + max(diameters) * 0.95 + 8.0
        room = max(0.0, (extent - span) / 2.0)
        dz = float(rng.uniform(-260.0, -120.0))
        studies.append(
            StudyPlan(
                index=s,
                date=baseline + dt.timedelta(days=day),
                time=dt.time(int(rng.integers(7, 19)), int(rng.integers(0, 60)), int(rng.integers(0, 60))),
                days_from_baseline=day,
                accession=accessions[s],
                scanner=scanner,
                protocol=protocol,
                pose=Pose(float(rng.uniform(-4, 4)), float(rng.uniform(-3, 5)), dz),
                z_center=z_mid + dz + float(rng.uniform(-room, room)),
                radiologist=inst.radiologists[int(rng.integers(len(inst.radiologists)))],
                technologist=inst.technologists[int(rng.integers(len(inst.technologists)))],
                with_rtstruct=(index + s) % 2 == 0,
                diameters=diameters,
            )
        )
    return studies
