"""Preprocessing: DICOM series and segmentations to analysis-ready image/mask volumes.

The stage turns each case (an image series plus one lesion's segmentation) into a pair of
NIfTI files on a common grid, records what every step did, and caches the result by a
hash of the input files and the parameters that affect the case.

Backs notebook ``03_preprocessing``.

* :func:`load_series` / :func:`inspect_series` (:mod:`.series`, checks in :mod:`.checks`, headers
  in :mod:`.headers`): series to volume with geometry checks; invalid series raise
  :class:`SeriesError`. Enhanced multi-frame images (Enhanced CT/MR, Legacy Converted Enhanced)
  are checked frame by frame and read with highdicom (:mod:`.enhanced`); :func:`load_volumes`
  gives one volume per stack or time point.
* :func:`load_mask` (:mod:`.masks`): DICOM SEG (highdicom), RTSTRUCT (contours rasterized on voxel
  centres, even-odd rule) or a NIfTI/NRRD label map, onto the image's grid.
* :func:`preprocess_image` (:mod:`.image`, grids in :mod:`.grid`): resampling (IBSI grid
  alignment), CT rounding, re-segmentation range, HU clipping, normalization, denoising, N4
  bias-field correction, cropping.
* :func:`scan_tree` / :func:`find_cases` (:mod:`.cases`): discover cases in any DICOM tree by header.
* :func:`preprocess_cases` (:mod:`.run`): the cached, parallel run writing ``volumes/``,
  ``preprocess.parquet`` and ``cases.parquet``/``cases.csv``.
* :mod:`.qc`, :mod:`.plots`, :mod:`.viewer`: the notebook's tables (no UIDs or paths), figures and
  slice viewer.

IBSI grid alignment (``grid_alignment="center"``, the default): the resampled grid keeps
the centre of the original grid, its size along each axis is ``ceil(n * s / s')`` and
the mask is interpolated linearly and thresholded at 0.5 (IBSI 1, section 2.4);
``"corner"`` reproduces pyradiomics, which aligns the corner of the origin voxel.
"""

from pacs_workbench.preprocess.cases import TreeScan, find_cases, scan_tree
from pacs_workbench.preprocess.checks import SeriesReport, inspect_headers
from pacs_workbench.preprocess.grid import Grid, target_grid
from pacs_workbench.preprocess.headers import read_header
from pacs_workbench.preprocess.image import PreprocessParams, preprocess_image
from pacs_workbench.preprocess.masks import MaskError, MaskReport, detect_mask_source, load_mask, read_mask
from pacs_workbench.preprocess.plots import (
    plot_intensity_histograms,
    plot_mask_montage,
    plot_spacing_before_after,
)
from pacs_workbench.preprocess.qc import (
    case_labels,
    cases_preview,
    exclusions_table,
    flag_counts,
    flagged_cases,
    mask_summary,
    montage_cases,
    montage_inputs,
    run_summary,
    series_table,
    spacing_summary,
)
from pacs_workbench.preprocess.run import CASES_COLUMNS, preprocess_cases, process_case
from pacs_workbench.preprocess.series import SeriesError, inspect_series, load_series, load_volumes, read_series
from pacs_workbench.preprocess.viewer import case_viewer, slice_viewer

__all__ = [
    "CASES_COLUMNS",
    "Grid",
    "MaskError",
    "MaskReport",
    "PreprocessParams",
    "SeriesError",
    "SeriesReport",
    "TreeScan",
    "case_labels",
    "case_viewer",
    "cases_preview",
    "detect_mask_source",
    "exclusions_table",
    "find_cases",
    "flag_counts",
    "flagged_cases",
    "inspect_headers",
    "inspect_series",
    "load_mask",
    "load_series",
    "load_volumes",
    "mask_summary",
    "montage_cases",
    "montage_inputs",
    "plot_intensity_histograms",
    "plot_mask_montage",
    "plot_spacing_before_after",
    "preprocess_cases",
    "preprocess_image",
    "process_case",
    "read_header",
    "read_mask",
    "read_series",
    "run_summary",
    "scan_tree",
    "series_table",
    "slice_viewer",
    "spacing_summary",
    "target_grid",
]
