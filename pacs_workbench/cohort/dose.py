"""Radiation dose per study from the index: the X-Ray Radiation Dose SRs' rows, and dose tables.

The index reads each X-Ray Radiation Dose SR's content tree (TID 10011, see
:mod:`pacs_workbench.dicom.dose`) into its row; :func:`study_dose` makes one row per study of
them, which the cohort's series rows take by (0020,000D) Study Instance UID. :func:`dose_table`
summarizes the dose of a cohort per vendor and protocol class (counts and medians only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from pacs_workbench.dicom.dose import XRAY_RADIATION_DOSE_SR

#: Dose columns a cohort row carries (``CTDIvol_mGy`` of the study's main acquisition, the study's
#: total DLP and the CTDIw phantom of that acquisition).
DOSE_COLUMNS = ["CTDIvol_mGy", "DLP_mGycm_total", "CTDIw_phantom"]


def study_dose(index_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per study with a dose SR: ``StudyInstanceUID`` and :data:`DOSE_COLUMNS`.

    A study with several dose SRs (re-sent or split reports) keeps the one with the largest total
    DLP. An index written before dose columns existed gives an empty table.
    """
    path = Path(index_dir) / "instances.parquet"
    columns = ["StudyInstanceUID", "SOPClassUID", *DOSE_COLUMNS]
    empty = pd.DataFrame({c: pd.Series(dtype=object if c in ("StudyInstanceUID", "CTDIw_phantom") else float)
                          for c in ["StudyInstanceUID", *DOSE_COLUMNS]})  # fmt: skip
    if not path.is_file() or not set(columns) <= set(pq.read_schema(path).names):
        return empty
    rows = pd.read_parquet(path, columns=columns, filters=[("SOPClassUID", "==", XRAY_RADIATION_DOSE_SR)])
    rows = rows.dropna(subset=["StudyInstanceUID"])
    rows = rows[rows["CTDIvol_mGy"].notna() | rows["DLP_mGycm_total"].notna()]
    if rows.empty:
        return empty
    rows = rows.sort_values(["StudyInstanceUID", "DLP_mGycm_total"], ascending=[True, False], na_position="last")
    return rows.drop_duplicates("StudyInstanceUID")[["StudyInstanceUID", *DOSE_COLUMNS]].reset_index(drop=True)


def dose_table(cohort: pd.DataFrame, by: tuple[str, ...] = ("Manufacturer", "protocol_norm")) -> pd.DataFrame:
    """Studies, median and range of CTDIvol and median total DLP per vendor and protocol class.

    One value per study (its series share the study's dose); studies without a dose SR count
    in ``studies`` and ``without_dose``.
    """
    missing = [c for c in (*by, "pseudo_study_id", "CTDIvol_mGy", "DLP_mGycm_total") if c not in cohort.columns]
    if missing:
        raise ValueError(f"the cohort has no {', '.join(missing)} column(s); build it from an index with dose SRs")
    studies = cohort.drop_duplicates("pseudo_study_id").copy()
    keys = [studies[c].astype(object).where(studies[c].notna(), "(missing)").astype(str) for c in by]
    grouped = studies.groupby(keys)
    table = pd.DataFrame(
        {
            "studies": grouped.size(),
            "without_dose": grouped["CTDIvol_mGy"].apply(lambda v: int(v.isna().sum())),
            "CTDIvol_mGy_median": grouped["CTDIvol_mGy"].median().round(2),
            "CTDIvol_mGy_min": grouped["CTDIvol_mGy"].min().round(2),
            "CTDIvol_mGy_max": grouped["CTDIvol_mGy"].max().round(2),
            "DLP_mGycm_total_median": grouped["DLP_mGycm_total"].median().round(1),
        }
    )
    return table.rename_axis(list(by)).reset_index()


def dose_report(cohort: pd.DataFrame) -> pd.DataFrame | Any:
    """:func:`dose_table` for a cohort with CT studies; a sentence for one without (MR: no radiation dose).

    Returns
    -------
    pandas.DataFrame or IPython Markdown
        The table, or Markdown saying why there is none.
    """
    from IPython.display import Markdown

    modalities = set(cohort["Modality"].dropna().astype(str).str.upper()) if "Modality" in cohort.columns else set()
    if modalities and not modalities & {"CT", "PT", "NM", "XA", "RF", "MG", "CR", "DX"}:
        names = ", ".join(sorted(modalities))
        return Markdown(f"No radiation dose for {names}: the cohort holds no ionising-radiation studies, so no "
                        "X-Ray Radiation Dose SR applies and dose is no covariate here.")  # fmt: skip
    if "CTDIvol_mGy" not in cohort.columns or cohort["CTDIvol_mGy"].isna().all():
        return Markdown("No study of the cohort has an X-Ray Radiation Dose SR in the index.")
    return dose_table(cohort)
