"""Radiomics: IBSI-consistent features from image/mask cases, and risk models validated without leakage.

Backs notebook ``05_radiomics_model`` and the ``pacs-workbench features`` and ``model`` commands.

* :func:`extract_features` (:mod:`.features`): pyradiomics over a case table, in parallel, cached
  per case (:mod:`.cache`), with parameter files loaded by :func:`load_radiomics_params`
  (:mod:`.params`) and values made IBSI-consistent (:mod:`.ibsi`, reference check
  :func:`check_ibsi_reference`).
* :func:`write_model_table` (:mod:`.table`): one row per patient from the features and the
  cohort, written as ``model_table.parquet`` for the explain stage; :func:`read_table` reads it
  (or any case table) back.
* :func:`run_modeling` (:mod:`.model`): LightGBM against clinical and L1-logistic baselines in
  repeated, patient-grouped nested cross-validation; the in-fold steps are scikit-learn
  estimators (:mod:`.transformers`, ComBat in :mod:`.combat`), the performance measures are in
  :mod:`.metrics`, the run's files in :mod:`.outputs` and the model card in :mod:`.card`; the
  final model on all cases is frozen in ``package/`` by :mod:`.package` (sources: :class:`PackageSources`);
  fold results are cached by content hash (:mod:`.fold_cache`).
* Beside it, in the same folds (``run_modeling(..., deep=DeepConfig())``, :mod:`.deep`): a small 3-D CNN
  on lesion-centred crops (:class:`CNNClassifier`, crops by :func:`make_crops`, :mod:`.cnn`) and a hybrid
  of LightGBM on the features plus the CNN's embeddings; :func:`comparison_table` shows the paired AUC
  differences.
* Notebook helpers: :func:`read_results`, :func:`metrics_table`, :func:`harmonization_preview`,
  the figures of :mod:`.plots`, and :func:`compare_with_truth` (:mod:`.truth`, synthetic data only).
"""

from pacs_workbench.radiomics.agreement import agreement_summary, cases_with_masks, feature_agreement, paired_cases
from pacs_workbench.radiomics.card import comparison_table, metrics_table, render_model_card
from pacs_workbench.radiomics.cnn import CNNClassifier, CropError, CropSettings, make_crops
from pacs_workbench.radiomics.combat import ComBat
from pacs_workbench.radiomics.deep import DeepConfig
from pacs_workbench.radiomics.features import extract_case, extract_features
from pacs_workbench.radiomics.ibsi import IBSI_CORRECTIONS, IBSI_UNCORRECTED, check_ibsi_reference
from pacs_workbench.radiomics.mask_sources import MaskComparison, compare_mask_sources, describe_mask_comparison
from pacs_workbench.radiomics.model import ModelingConfig, run_modeling
from pacs_workbench.radiomics.outputs import read_results
from pacs_workbench.radiomics.package import PackageSources
from pacs_workbench.radiomics.params import PARAMS_DIR, load_radiomics_params
from pacs_workbench.radiomics.plots import plot_calibration_and_decision, plot_roc, plot_vendor_distributions
from pacs_workbench.radiomics.table import (
    CLINICAL_COLUMNS,
    MODEL_TABLE_FILE,
    ModelingError,
    build_model_table,
    harmonization_preview,
    read_table,
    write_model_table,
)
from pacs_workbench.radiomics.truth import compare_with_truth

__all__ = [
    "CLINICAL_COLUMNS",
    "IBSI_CORRECTIONS",
    "IBSI_UNCORRECTED",
    "MODEL_TABLE_FILE",
    "PARAMS_DIR",
    "CNNClassifier",
    "ComBat",
    "CropError",
    "CropSettings",
    "DeepConfig",
    "MaskComparison",
    "ModelingConfig",
    "ModelingError",
    "PackageSources",
    "agreement_summary",
    "build_model_table",
    "cases_with_masks",
    "check_ibsi_reference",
    "compare_mask_sources",
    "compare_with_truth",
    "comparison_table",
    "describe_mask_comparison",
    "extract_case",
    "extract_features",
    "feature_agreement",
    "harmonization_preview",
    "load_radiomics_params",
    "make_crops",
    "metrics_table",
    "paired_cases",
    "plot_calibration_and_decision",
    "plot_roc",
    "plot_vendor_distributions",
    "read_results",
    "read_table",
    "render_model_card",
    "run_modeling",
    "write_model_table",
]
