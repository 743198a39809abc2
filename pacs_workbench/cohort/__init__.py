"""The cohort stage (notebook 01_cohort): from the PACS index to a pseudonymized cohort."""

from pacs_workbench.cohort.index import build_index

__all__ = ["build_index"]
