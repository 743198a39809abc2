"""A small development run from a synthetic PACS, ending in a model package with its lesion U-Net.

:func:`develop_package` runs the stages as a project does, at test size: a synthetic extract
(``pacs_workbench.synth``), cases from its SEG masks and preprocessing, a small U-Net trained on
the cases, features with the shipped CT parameters, a cohort from the extract's truth tables
(outcome, age, pack-years under keyed pseudonyms) and a quick model whose package freezes the
preprocessing parameters and the U-Net. The listener tests and ``benchmarks/bench_listen.py``
send the extract's studies, or those of another seed, to ``pacs-workbench listen``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from pacs_workbench.core.pseudonym import generate_key, load_key, pseudonymize
from pacs_workbench.preprocess import find_cases, preprocess_cases
from pacs_workbench.radiomics import PackageSources, build_model_table, extract_features, run_modeling
from pacs_workbench.segment import segment_cases
from pacs_workbench.synth import generate
from tests.radiomics.fixtures import CT_PARAMS, small_config

#: A U-Net that trains in a minute or two on two cores and finds lesions (and some look-alikes).
QUICK_UNET: dict[str, Any] = {"iterations": 80, "learning_rate": 0.006, "seed": 0}


def _cohort(extract: Path, key: bytes) -> pd.DataFrame:
    truth = pd.read_csv(extract / "truth" / "patients.csv", dtype={"PatientID": str})
    truth = truth[truth["has_imaging"] == 1]
    return pd.DataFrame({
        "pseudo_patient_id": [pseudonymize(key, p, "patient") for p in truth["PatientID"]],
        "study_index": 0, "outcome": truth["outcome"].astype(int).to_numpy(),
        "age_years": truth["age"].astype(float).to_numpy(), "pack_years": truth["pack_years"].astype(float).to_numpy(),
    })  # fmt: skip


def develop_package(
    root: Path, *, patients: int = 16, seed: int = 3, unet: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Develop a package under ``root``; returns its paths (``package``, ``extract``, ``key_file``, ...).

    ``unet`` overrides the U-Net's training settings (default: a quick, small network).
    """
    root.mkdir(parents=True, exist_ok=True)
    extract = root / "extract"
    generate(extract, patients=patients, seed=seed, workers=1, progress=False)
    key_file = generate_key(root / "project.key")
    key = load_key(key_file)
    cases = find_cases(extract / "dicom", key_file=key_file, progress=False)
    preprocess_cases(cases, root / "preprocessed", workers=1, progress=False)
    cases_file = root / "preprocessed" / "cases.parquet"
    segment_cases(cases_file, root / "segmentation", config={**QUICK_UNET, **(unet or {})},
                  labelled_fraction=1.0, threads=1, progress=False)  # fmt: skip
    features = extract_features(cases_file, CT_PARAMS, root / "features" / "features.parquet", progress=False)
    with_paths = features.merge(pd.read_parquet(cases_file)[["case_id", "image", "mask"]], on="case_id")
    cohort = _cohort(extract, key)
    cohort.to_parquet(root / "cohort.parquet", index=False)
    table = build_model_table(with_paths, cohort)
    config = small_config(label="outcome", group="pseudo_patient_id", id_col="case_id",
                          clinical=("age_years", "pack_years"), batch="Manufacturer")  # fmt: skip
    sources = PackageSources(CT_PARAMS, root / "preprocessed", None, root / "segmentation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_modeling(table, root / "model", config, progress=False, save_models=False, package=sources)
    return {"root": root, "package": root / "model" / "package", "extract": extract, "key_file": key_file,
            "cohort": root / "cohort.parquet", "table": table}  # fmt: skip
