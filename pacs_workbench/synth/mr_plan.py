"""The synthetic brain MR cohort: who, which lesion, which studies, and the outcome.

People, identifiers, clinical factors and linkage gaps come from the same generator as the CT
cohort (:func:`pacs_workbench.synth.patients.plan_cohort`), drawn from a stream of their own so an
MR extract never shares a patient, an accession number or a UID with a CT extract of the same
seed. Each patient has one brain lesion; a latent aggressiveness ties its size, margin
irregularity and internal heterogeneity together, and the outcome, malignancy confirmed within
two years of the baseline MR, follows a known logistic model of those three and age
(:data:`MR_OUTCOME_MODEL`). Studies are a baseline and up to two follow-ups on the
institution's MR scanners (:data:`pacs_workbench.synth.mr_sequences.MR_SCANNERS`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from pacs_workbench.synth.common import derive_rng, make_uid
from pacs_workbench.synth.imaging import NoduleSpec
from pacs_workbench.synth.mr_phantom import (
    HeadAnatomy,
    MRGeometry,
    brain_region,
    place_lesion,
    plan_geometry,
    plan_head,
)
from pacs_workbench.synth.mr_sequences import MR_SCANNERS, MRScanner, SequenceSpec, plan_sequences
from pacs_workbench.synth.patients import INSTITUTIONS, PatientPlan, Person, plan_cohort

# The identity stream of an MR extract: another seed than the CT extract's.
_IDENTITY_SALT = 0x4D52_0001


@dataclass(frozen=True)
class MROutcomeModel:
    """``logit P(outcome) = intercept + sum(coef[d] * x[d])`` with drivers

    - ``x_diameter = log2(lesion diameter mm / 20)``
    - ``x_irregularity = irregularity - 0.5`` (margin irregularity on 0..1)
    - ``x_heterogeneity = heterogeneity - 0.5`` (internal heterogeneity on 0..1)
    - ``x_age = (age - 60) / 10``
    """

    intercept: float = -0.7
    coef: tuple[tuple[str, float], ...] = (
        ("x_diameter", 1.7),
        ("x_irregularity", 2.6),
        ("x_heterogeneity", 2.2),
        ("x_age", 0.55),
    )

    def drivers(self, diameter: float, irregularity: float, heterogeneity: float, age: float) -> dict[str, float]:
        """Driver values of one patient."""
        return {
            "x_diameter": math.log2(diameter / 20.0),
            "x_irregularity": irregularity - 0.5,
            "x_heterogeneity": heterogeneity - 0.5,
            "x_age": (age - 60.0) / 10.0,
        }

    def linear_predictor(self, drivers: dict[str, float]) -> float:
        """``intercept + sum(coef * x)``."""
        return self.intercept + sum(c * drivers[name] for name, c in self.coef)


MR_OUTCOME_MODEL = MROutcomeModel()


@dataclass(frozen=True)
class MRStudyPlan:
    """One brain MR study: when, where, which series, the slice stack and the lesion's size then."""

    index: int
    date: dt.date
    time: dt.time
    days_from_baseline: int
    accession: str
    scanner: MRScanner
    sequences: tuple[SequenceSpec, ...]
    geometry: MRGeometry
    pose: tuple[float, float, float]
    radiologist: tuple[str, str]
    technologist: tuple[str, str]
    diameter_mm: float
    unhelpful: bool

    @property
    def seg_sequence(self) -> SequenceSpec:
        """The series the lesion is segmented on: T1 after contrast."""
        return next(s for s in self.sequences if s.kind == "T1C")


@dataclass(frozen=True)
class MRPatientPlan:
    """Everything needed to write one MR patient; identity and clinical factors are in ``base``."""

    base: PatientPlan
    head: HeadAnatomy
    lesion: NoduleSpec
    studies: tuple[MRStudyPlan, ...]
    drivers: dict[str, float]
    linear_predictor: float
    probability: float
    outcome: int
    outcome_date: dt.date | None
    last_contact_date: dt.date

    @property
    def index(self) -> int:
        """Patient index in the cohort."""
        return self.base.index

    @property
    def seed(self) -> int:
        """Extract seed (UIDs and streams)."""
        return self.base.seed

    @property
    def person(self) -> Person:
        """The patient's identity."""
        return self.base.person

    @property
    def baseline_date(self) -> dt.date:
        """Date of the first MR."""
        return self.studies[0].date

    def ehr_plan(self) -> PatientPlan:
        """The identity and clinical plan with this patient's MR outcome, for the EHR writers.

        Its seed is salted so that FHIR resource ids differ from a CT extract's of the same seed.
        """
        return dataclasses.replace(self.base, seed=(self.seed ^ _IDENTITY_SALT) & 0xFFFFFFFF, outcome=self.outcome,
                                   outcome_date=self.outcome_date, last_contact_date=self.last_contact_date)


@dataclass(frozen=True)
class MRStudyUIDs:
    """UIDs of one MR study, fixed by seed, patient and study index."""

    study: str
    frame_of_reference: str
    seed: int
    patient: int
    index: int

    @classmethod
    def for_study(cls, plan: MRPatientPlan, study: MRStudyPlan) -> MRStudyUIDs:
        """UIDs of ``study`` of ``plan``."""
        key = (plan.seed, "mr-patient", plan.index, "study", study.index)
        return cls(make_uid(*key), make_uid(*key, "for"), plan.seed, plan.index, study.index)

    def uid(self, kind: str, number: int = 0) -> str:
        """A UID of one object of the study (series ``kind`` number, instance...)."""
        return make_uid(self.seed, "mr-patient", self.patient, "study", self.index, kind, number)


def lesion_diameter_at(lesion: NoduleSpec, days: float) -> float:
    """Lesion diameter ``days`` after baseline: exponential volume growth if malignant (at most 60 mm)."""
    if not lesion.malignant:
        return lesion.diameter_mm
    return float(min(lesion.diameter_mm * 2.0 ** (days / (3.0 * lesion.doubling_days)), 60.0))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def plan_mr_cohort(n_imaging: int, seed: int) -> list[MRPatientPlan]:
    """Draw up the whole MR cohort (imaging patients and EHR-only people, in index order)."""
    bases = plan_cohort(n_imaging, (seed ^ _IDENTITY_SALT) & 0xFFFFFFFF)
    bases = [dataclasses.replace(b, seed=seed) for b in bases]
    rng = derive_rng(seed, 20)
    numbers = rng.choice(9_000_000, size=3 * len(bases), replace=False) + 1_000_000
    return [_plan_patient(b, [f"A{a:07d}" for a in numbers[3 * i : 3 * i + 3]]) for i, b in enumerate(bases)]


def _plan_patient(base: PatientPlan, accessions: list[str]) -> MRPatientPlan:
    rng = derive_rng(base.seed, 21, base.index)
    head = plan_head(rng, base.age)
    latent = float(rng.normal())
    diameter = float(np.clip(np.exp(np.log(22.0) + 0.3 * latent + 0.25 * rng.normal()), 12.0, 48.0))
    irregularity = _sigmoid(0.9 * latent + 0.7 * float(rng.normal()) - 0.1)
    heterogeneity = _sigmoid(0.8 * latent + 0.8 * float(rng.normal()) - 0.1)
    drivers = MR_OUTCOME_MODEL.drivers(diameter, irregularity, heterogeneity, base.age)
    lp = MR_OUTCOME_MODEL.linear_predictor(drivers)
    prob = _sigmoid(lp)
    outcome = int(rng.random() < prob)
    center = place_lesion(head, rng, diameter)
    lesion = NoduleSpec(
        index=1, center=center, diameter_mm=round(diameter, 2), irregularity=round(irregularity, 4),
        heterogeneity=round(heterogeneity, 4), malignant=bool(outcome), doubling_days=float(rng.uniform(90.0, 300.0)),
        lobe=brain_region(center), calcified=False, shape_seed=int(rng.integers(2**31)), attenuation=0.0,
    )  # fmt: skip
    studies = _study_plans(rng, base, head, lesion, accessions)
    outcome_date = None
    if outcome:
        last = studies[-1].days_from_baseline
        outcome_date = base.baseline_date + dt.timedelta(days=min(last + int(rng.integers(14, 120)), 720))
    return MRPatientPlan(
        base=base, head=head, lesion=lesion, studies=tuple(studies),
        drivers={k: round(v, 6) for k, v in drivers.items()}, linear_predictor=round(lp, 6),
        probability=round(prob, 6), outcome=outcome, outcome_date=outcome_date,
        last_contact_date=base.baseline_date + dt.timedelta(days=730 + int(rng.integers(0, 400))),
    )  # fmt: skip


def _study_plans(rng: np.random.Generator, base: PatientPlan, head: HeadAnatomy, lesion: NoduleSpec,
                 accessions: list[str]) -> list[MRStudyPlan]:
    """The baseline MR and its follow-ups (larger lesions are followed sooner and more often)."""
    inst = INSTITUTIONS[base.institution]
    scanners = MR_SCANNERS[base.institution]
    big = lesion.diameter_mm >= 22.0
    n_follow = int(rng.choice([0, 1, 2], p=[0.45, 0.35, 0.2] if not big else [0.25, 0.4, 0.35]))
    days = [0]
    for _ in range(n_follow):
        days.append(days[-1] + int(rng.integers(60, 180) if big else rng.integers(120, 300)))
    base_scanner = scanners[int(rng.integers(len(scanners)))]
    studies = []
    for s, day in enumerate(days):
        scanner = base_scanner
        if s > 0 and rng.random() < 0.2:
            scanner = scanners[int(rng.integers(len(scanners)))]
        pose = (float(rng.uniform(-4, 4)), float(rng.uniform(-5, 5)), float(rng.uniform(-25, 25)))
        geometry = plan_geometry(rng, head, scanner, pose[2] + 10.0 + float(rng.uniform(-6, 6)))
        unhelpful = scanner.vendor == "canon" and bool(rng.random() < 0.5)
        sequences = plan_sequences(scanner, rng, with_dwi=bool(rng.random() < 0.75), unhelpful=unhelpful)
        studies.append(
            MRStudyPlan(
                index=s,
                date=base.baseline_date + dt.timedelta(days=day),
                time=dt.time(int(rng.integers(7, 20)), int(rng.integers(0, 60)), int(rng.integers(0, 60))),
                days_from_baseline=day,
                accession=accessions[s],
                scanner=scanner,
                sequences=sequences,
                geometry=geometry,
                pose=pose,
                radiologist=inst.radiologists[int(rng.integers(len(inst.radiologists)))],
                technologist=inst.technologists[int(rng.integers(len(inst.technologists)))],
                diameter_mm=round(lesion_diameter_at(lesion, day), 2),
                unhelpful=unhelpful,
            )
        )
    return studies
