"""The cohort stage, backing notebook ``01_cohort``: from the PACS index to a pseudonymized cohort.

It indexes a DICOM extract (a folder, or a PACS over DICOMweb or DIMSE) into Parquet
(:func:`build_index`, queried with :func:`connect_index`), harmonizes what the vendors write
(:func:`normalize_series`), links the EHR (:func:`load_and_link`) and the findings mined from
the radiology reports (:func:`mine_reports`, :func:`link_reports`), applies the inclusion
criteria with an attrition table (:class:`CohortCriteria`, :func:`select_cohort`), shows how
the cohort spreads (:func:`distribution_table`, :func:`plot_distributions`, the radiation dose
per vendor and protocol from the dose SRs, :func:`dose_table`, the
:func:`cohort_explorer`) and writes it with keyed pseudonyms only (:func:`write_cohort`).
"""

from pacs_workbench.cohort.build import (
    Cohort,
    annotate_series,
    build_cohort,
    load_series_table,
    save_criteria,
    select_cohort,
    studies_table,
    write_cohort,
)
from pacs_workbench.cohort.criteria import CohortCriteria, apply_criteria, is_image_series
from pacs_workbench.cohort.dose import dose_report, dose_table, study_dose
from pacs_workbench.cohort.ehr import link_ehr, load_and_link, read_ehr
from pacs_workbench.cohort.explorer import cohort_explorer
from pacs_workbench.cohort.index import build_index
from pacs_workbench.cohort.index_views import connect_index
from pacs_workbench.cohort.plots import plot_distributions, plot_follow_up
from pacs_workbench.cohort.report_mining import link_reports, mine_reports
from pacs_workbench.cohort.summaries import (
    distribution_columns,
    distribution_table,
    follow_up_intervals,
    harmonization_table,
    studies_per_patient,
)
from pacs_workbench.cohort.vocab import normalize_series, unmapped_report

__all__ = [
    "Cohort",
    "CohortCriteria",
    "annotate_series",
    "apply_criteria",
    "build_cohort",
    "build_index",
    "cohort_explorer",
    "connect_index",
    "distribution_columns",
    "distribution_table",
    "dose_report",
    "dose_table",
    "follow_up_intervals",
    "harmonization_table",
    "is_image_series",
    "link_ehr",
    "link_reports",
    "load_and_link",
    "load_series_table",
    "mine_reports",
    "normalize_series",
    "plot_distributions",
    "plot_follow_up",
    "read_ehr",
    "save_criteria",
    "select_cohort",
    "studies_per_patient",
    "studies_table",
    "study_dose",
    "unmapped_report",
    "write_cohort",
]
