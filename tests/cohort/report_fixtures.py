"""A radiology report with planted identifiers, and the identifiers it plants."""

from __future__ import annotations

REPORT = """RADIOLOGY REPORT
Lakeside General Hospital - Department of Radiology

PATIENT: QUINTERO, ROSALIND
MRN: H1234567
DOB: 03/14/1951    SEX: F
ACCESSION: A7654321
EXAM DATE: 05/06/2019
REFERRING PHYSICIAN: Dr. Evander Kristiansen
EXAM: CT CHEST WITH CONTRAST

CLINICAL HISTORY: 68-year-old female, current smoker. Follow-up of pulmonary nodule. No effusion on prior.

TECHNIQUE: Axial CT images of the chest were obtained following intravenous contrast, 1 mm slices.

COMPARISON: CT chest 11/02/2018 (accession A1111111).

FINDINGS:
LUNGS: A 1.4 x 1.1 cm spiculated nodule in the left lower lobe (series 3, image 40), increased from 9 mm.
Additional 3 mm solid nodule in the right middle lobe, stable. No pneumothorax.
PLEURA: Small right pleural effusion. No pericardial effusion.
MEDIASTINUM: Enlarged subcarinal lymph node, 12 mm short axis.

IMPRESSION:
1. 14 mm spiculated nodule in the left lower lobe with interval growth. Lung-RADS category 4X.
2. Small right pleural effusion.

Electronically signed by: Dr. Tiberius Oduya, MD on 05/06/2019 17:02
"""
PHI = ["QUINTERO", "ROSALIND", "H1234567", "03/14/1951", "A7654321", "A1111111", "Kristiansen", "Oduya",
       "05/06/2019", "11/02/2018", "Lakeside"]  # fmt: skip
