"""Segmentation stage: lesion masks for cases without one, and what to annotate next.

Backs notebook ``04_segmentation`` and the ``pacs-workbench segment`` command. A small MONAI
3-D U-Net is trained on the cases with reference masks (:mod:`.net`, cached by content hash), or a
TorchScript/ONNX model is brought along (:mod:`.external`); every case is segmented by sliding
window with test-time augmentation, lesions are the connected components, the uncertainty around
them ranks the unlabelled cases for annotation (:mod:`.run`), and the model masks are written as
DICOM SEG on the source series (:mod:`.dicomseg`). :mod:`.report` holds the notebook's tables and
figures, :mod:`.active` the active-learning simulation.
"""

from pacs_workbench.segment.active import (
    compare_strategies,
    curve_summary,
    describe_simulation,
    plot_curves,
    run_simulation,
    simulate_active_learning,
)
from pacs_workbench.segment.data import SegmentationError, assign_splits, read_cases
from pacs_workbench.segment.external import load_external_model
from pacs_workbench.segment.net import TrainConfig, build_unet, dice, train_network
from pacs_workbench.segment.report import (
    dice_summary,
    per_case,
    pick_cases,
    plot_cases,
    plot_training_curve,
    training_text,
)
from pacs_workbench.segment.run import MIN_LESION_MM3, SegmentationRun, hd95, rank_worklist, segment_cases

__all__ = [
    "MIN_LESION_MM3",
    "SegmentationError",
    "SegmentationRun",
    "TrainConfig",
    "assign_splits",
    "build_unet",
    "compare_strategies",
    "curve_summary",
    "describe_simulation",
    "dice",
    "dice_summary",
    "hd95",
    "load_external_model",
    "per_case",
    "pick_cases",
    "plot_cases",
    "plot_curves",
    "plot_training_curve",
    "rank_worklist",
    "read_cases",
    "run_simulation",
    "segment_cases",
    "simulate_active_learning",
    "train_network",
    "training_text",
]
