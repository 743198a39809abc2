"""Explain stage: the SHAP review of the modeling stage's fold models (notebook ``06_shap_review``).

Every case is explained, with exact TreeSHAP values, by the LightGBM model of the outer fold that
held it out. From those contributions the stage builds what a reviewer needs:

- global: mean |SHAP| per feature with its spread over folds and repeats and a stability flag,
  the same grouped by feature family (shape, first order, texture, clinical, other);
- local: the highest-risk cases, the false negatives and the false positives, each with its top
  contributions (averaged over repeats) and its image and mask from the features table;
- scanner dependence: how much of the contribution of vendor-sensitive features follows the
  vendor, with and without harmonization;
- a check against planted ground truth (synthetic data only);
- where the modeling run also trained the CNN: Grad-CAM and occlusion sensitivity for held-out cases,
  each from the fold's network that did not see the case, with the randomization sanity check and the
  share of saliency inside the lesion and its margin (:mod:`~pacs_workbench.explain.saliency`).

It reads the modeling stage's output folder and the features table (files only) and writes its
tables to the review's output folder (see :mod:`pacs_workbench.explain.review`).
"""

from pacs_workbench.explain.importance import interaction_partner
from pacs_workbench.explain.plots import (
    plot_beeswarm,
    plot_case_studies,
    plot_dependence,
    plot_family_importance,
    plot_rank_stability,
    plot_saliency_cases,
    plot_scanner_dependence,
    plot_shap_importance,
    plot_truth_check,
)
from pacs_workbench.explain.review import (
    ShapReview,
    describe_model,
    headline_metrics,
    limitations,
    run_explain,
    stability_summary,
)
from pacs_workbench.explain.saliency import SaliencyReview, run_saliency
from pacs_workbench.explain.scanner import ScannerCheck, scanner_dependence
from pacs_workbench.explain.truth import TruthCheck, compare_with_truth
from pacs_workbench.explain.viewer import case_picker

__all__ = [
    "SaliencyReview",
    "ScannerCheck",
    "ShapReview",
    "TruthCheck",
    "case_picker",
    "compare_with_truth",
    "describe_model",
    "headline_metrics",
    "interaction_partner",
    "limitations",
    "plot_beeswarm",
    "plot_case_studies",
    "plot_dependence",
    "plot_family_importance",
    "plot_rank_stability",
    "plot_saliency_cases",
    "plot_scanner_dependence",
    "plot_shap_importance",
    "plot_truth_check",
    "run_explain",
    "run_saliency",
    "scanner_dependence",
    "stability_summary",
]
