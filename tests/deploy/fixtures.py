"""Small synthetic sites for the deploy stage: image/mask cases on disk, a development model package.

A site is a folder of CT-like cases (:func:`tests.radiomics.fixtures.write_case`: a noisy soft-tissue
sphere whose radius carries the outcome) with ``cases.parquet`` and ``cohort.parquet``. The
external site uses other seeds, so its lesions are brighter (shifted intensities), and another
vendor mix, including a vendor the development site never had.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.preprocess.image import PreprocessParams
from pacs_workbench.radiomics import PackageSources, build_model_table, extract_features, run_modeling
from tests.radiomics.fixtures import CT_PARAMS, small_config, write_case

DEV_VENDORS = ("SIEMENS", "GE MEDICAL SYSTEMS")
EXTERNAL_VENDORS = ("SIEMENS", "Philips")


def make_site(
    folder: Path,
    n: int,
    seed: int,
    vendors: tuple[str, ...],
    first_case_seed: int = 0,
    preprocessing: dict[str, Any] | None = None,
) -> Path:
    """``n`` cases (one per patient), ``preprocess.parquet`` and a cohort; returns ``cases.parquet``.

    ``preprocess.parquet`` records each case's preprocessing parameters as the preprocessing
    stage does (``PreprocessParams(**preprocessing).effective("CT")``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, cohort = [], []
    for i in range(n):
        radius = float(rng.uniform(3.5, 8.0))
        image, mask = write_case(folder, f"s{seed}c{i}", radius=radius, seed=first_case_seed + i)
        patient = f"P{seed}x{i:03d}"
        rows.append(
            {
                "case_id": f"s{seed}c{i:03d}", "image": image.name, "mask": mask.name, "Modality": "CT",
                "pseudo_patient_id": patient, "StudyDate": "20200101", "Manufacturer": vendors[i % len(vendors)],
            }
        )  # fmt: skip
        event = int(rng.random() < 1.0 / (1.0 + np.exp(-3.0 * (radius - 5.75))))
        age = float(rng.normal(65, 8))
        cohort.append({"pseudo_patient_id": patient, "study_index": 0, "outcome": event, "age_years": age})
    pd.DataFrame(rows).to_parquet(folder / "cases.parquet", index=False)
    effective = json.dumps(PreprocessParams(**(preprocessing or {})).effective("CT"), sort_keys=True)
    record = pd.DataFrame({"case_id": [r["case_id"] for r in rows], "status": "ok", "Modality": "CT"})
    record.assign(parameters=effective).to_parquet(folder / "preprocess.parquet", index=False)
    pd.DataFrame(cohort).to_parquet(folder / "cohort.parquet", index=False)
    return folder / "cases.parquet"


def develop(site: Path, model_dir: Path, **config: Any) -> dict[str, Any]:
    """Features with the shipped CT parameters, the model table (one row per patient), ``run_modeling``."""
    cases = site / "cases.parquet"
    features = extract_features(cases, CT_PARAMS, site / "features.parquet", progress=False)
    with_paths = features.merge(pd.read_parquet(cases)[["case_id", "image", "mask"]], on="case_id")
    table = build_model_table(with_paths, pd.read_parquet(site / "cohort.parquet"))
    options: dict[str, Any] = dict(
        label="outcome", group="pseudo_patient_id", id_col="case_id", clinical=("age_years",), batch="Manufacturer"
    )
    options.update(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_modeling(
            table, model_dir, small_config(**options), progress=False,
            package=PackageSources(radiomics_params_file=CT_PARAMS, preprocessed_dir=site),
        )  # fmt: skip
    return summary | {"table": table}
