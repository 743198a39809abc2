"""Radiomics on reference and model masks side by side: the section of ``05_radiomics_model`` that compares them.

Cases without a reference mask in use get the model's mask from ``04_segmentation``
(:func:`~pacs_workbench.radiomics.agreement.cases_with_masks`). Features are extracted on that mixed
set; for the cases that have both masks the features are compared by ICC(3,1), and a smaller
second fit (one repeat of the outer cross-validation) on the model-mask features gives the AUC of
a model trained on model masks, to be read beside the one on reference masks.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from pacs_workbench.radiomics.agreement import agreement_summary, cases_with_masks, feature_agreement, paired_cases
from pacs_workbench.radiomics.features import extract_features
from pacs_workbench.radiomics.model import ModelingConfig, run_modeling
from pacs_workbench.radiomics.table import read_table, write_model_table


@dataclass
class MaskComparison:
    """What the comparison found: the mixed case table, the per-feature ICC and the second fit."""

    cases: pd.DataFrame
    agreement: pd.DataFrame
    summary: dict[str, Any]
    auc_model_masks: float | None
    no_second_fit: str = ""


def _usable(features: pd.DataFrame, ids: set[str]) -> pd.DataFrame:
    return features[features["case_id"].isin(ids) & features["error"].isna()]


def compare_mask_sources(
    cases_file: str | os.PathLike[str],
    segmentation_file: str | os.PathLike[str] | None,
    features: pd.DataFrame,
    radiomics_params_file: str | os.PathLike[str],
    features_dir: str | os.PathLike[str],
    cohort_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: ModelingConfig,
    *,
    workers: int = 1,
) -> MaskComparison | None:
    """Features on model masks where no reference is used, their agreement, and a fit on them.

    Parameters
    ----------
    features
        The features on reference masks (``extract_features`` of the cases table).
    out_dir
        Model table and second fit on the model-mask features.
    config
        The main fit's settings; the second fit uses them with one repeat.

    Returns
    -------
    MaskComparison or None
        ``None`` when ``04_segmentation`` has not run (no ``segmentation_file``).
    """
    if segmentation_file is None or not Path(segmentation_file).is_file():
        return None
    masked = cases_with_masks(cases_file, segmentation_file)
    extractable = masked.drop(columns=["reference_mask"])
    mixed = extract_features(extractable, radiomics_params_file, Path(features_dir) / "features_model_masks.parquet",
                             workers=workers, progress=False)  # fmt: skip
    ids = set(paired_cases(masked)[1]["case_id"])
    agreement = feature_agreement(_usable(features, ids), _usable(mixed, ids))
    table = read_table(write_model_table(mixed, extractable, cohort_file, out_dir))
    try:
        with warnings.catch_warnings():  # the main fit already showed this data's warnings
            warnings.simplefilter("ignore")
            second = run_modeling(table, out_dir, replace(config, repeats=1), workers=workers, save_package=False)
    except ValueError as exc:  # too few patients or events for the second fit
        return MaskComparison(masked, agreement, agreement_summary(agreement), None, str(exc))
    return MaskComparison(masked, agreement, agreement_summary(agreement), float(second["auc"]))


def describe_mask_comparison(comparison: MaskComparison | None, reference_auc: float) -> str:
    """The section's sentences: mask counts, the share of features with good ICC, the two AUCs."""
    if comparison is None:
        return "`04_segmentation` has not run: every case above used its reference mask."
    counts = comparison.cases["mask_source"].value_counts()
    icc = comparison.summary
    text = (f"Masks: **{counts.get('reference', 0)}** reference, **{counts.get('model', 0)}** model "
            f"({len(comparison.cases.attrs['left_out'])} cases without a mask left out). ")  # fmt: skip
    if icc["features"]:
        text += (f"On {icc['cases']} cases with both, **{icc['share_good']:.0%}** of {icc['features']} features "
                 f"have ICC(3,1) >= {icc['threshold']} (median ICC {icc['median_icc']:.2f}).")  # fmt: skip
    if comparison.auc_model_masks is None:
        return f"{text}\n\nNo second fit on model masks: {comparison.no_second_fit}"
    return (f"{text}\n\nLightGBM AUC trained on model masks: **{comparison.auc_model_masks:.3f}** "
            f"(on reference masks: {reference_auc:.3f}).")  # fmt: skip
