"""Tables and figures of a de-identification run, for ``02_deid_audit`` (no PHI, ever).

Everything here reads what ``deid`` wrote into DST (``deid_log.parquet``,
``deid_actions.parquet``, ``deid_run.json`` and the de-identified images): tags,
keywords, counts, pseudonymous paths and blanked rectangles. Nothing reads the
source or the quarantine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pacs_workbench.core.files import write_text_atomic
from pacs_workbench.deid.engine import COUNT_FIELDS
from pacs_workbench.deid.profile import BASIC_CODE, OPTION_CODES, parse_options
from pacs_workbench.deid.run import ACTIONS_NAME, LOG_NAME, RUN_NAME

AUDIT_SUMMARY = "audit_summary.json"
ACTION_MEANINGS = {
    "X": "removed (E.1-1 X)",
    "Z": "emptied or pseudonym (Z)",
    "D": "dummy or pseudonym (D)",
    "U": "UID replaced (U)",
    "K": "kept (K)",
    "C": "cleaned (C)",
    "keep": "kept: research keep-list",
    "remove": "removed: not in E.1-1",
}


def load_log(deid_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``DST/deid_log.parquet``: one row per input file."""
    return pd.read_parquet(Path(deid_dir) / LOG_NAME)


def outcome_table(deid_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Files written and quarantined, with the total of each action count."""
    log = load_log(deid_dir)
    rows = [{"measure": "input files", "value": len(log)}]
    rows += [
        {"measure": f"files {o}", "value": int((log["outcome"] == o).sum())}
        for o in ("written", "duplicate", "quarantined")
    ]
    rows += [{"measure": c, "value": int(log[c].sum())} for c in COUNT_FIELDS]
    return pd.DataFrame(rows)


def action_summary(deid_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Actions per attribute (``tag``, ``keyword``, ``action``, ``count``, ``meaning``), most frequent first."""
    table = pd.read_parquet(Path(deid_dir) / ACTIONS_NAME)
    table["meaning"] = table["action"].map(ACTION_MEANINGS).fillna(table["action"])
    table.loc[table["keyword"] == "", "keyword"] = "(private)"
    return table.sort_values(["count", "tag"], ascending=[False, True]).reset_index(drop=True)


def plot_actions(summary: pd.DataFrame, top: int = 25) -> Figure:
    """Horizontal bars: how often each action hit the ``top`` most frequent attributes."""
    pivot = summary.assign(label=summary["keyword"] + " " + summary["tag"]).pivot_table(
        index="label", columns="action", values="count", aggfunc="sum", fill_value=0
    )
    pivot = pivot.loc[pivot.sum(axis=1).sort_values(ascending=False).index[:top]].iloc[::-1]
    fig = Figure(figsize=(8, max(3.0, 0.28 * len(pivot) + 1)))
    ax = fig.subplots()
    pivot.plot.barh(stacked=True, ax=ax, width=0.8)
    ax.set_xlabel("elements (all files)")
    ax.set_ylabel("")
    ax.legend(title="action", fontsize=8)
    fig.tight_layout()
    return fig


def options_table(deid_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The Basic Profile and every option, with its CID 7050 code and whether it was in force."""
    run = json.loads((Path(deid_dir) / RUN_NAME).read_text(encoding="utf-8"))
    chosen = parse_options(run["options"])
    rows = [{"option": "basic", "code": BASIC_CODE[0], "meaning": BASIC_CODE[1], "in force": True}]
    for option, (code, meaning) in sorted(OPTION_CODES.items(), key=lambda kv: kv[1][0]):
        rows.append({"option": option.value, "code": code, "meaning": meaning, "in force": option in chosen})
    return pd.DataFrame(rows)


def quarantine_table(deid_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Quarantined files per reason (the reasons name no value from the files)."""
    log = load_log(deid_dir)
    q = log[log["outcome"] == "quarantined"]
    if q.empty:
        return pd.DataFrame({"reason": pd.Series(dtype=str), "files": pd.Series(dtype=int)})
    return q.groupby("reason").size().rename("files").reset_index().sort_values("files", ascending=False)


def masked_images(deid_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Written images whose pixels were checked for burned-in text, with their blanked boxes."""
    log = load_log(deid_dir)
    checked = log[(log["outcome"] == "written") & log["pixel_check"].notna()]
    return checked[["output", "pixel_check", "n_pixel_boxes", "pixel_boxes"]].reset_index(drop=True)


def plot_masked_thumbnails(deid_dir: str | os.PathLike[str], max_images: int = 6) -> Figure:
    """The de-identified side of masked images (first frame), blanked boxes outlined in red."""
    import pydicom

    rows = masked_images(deid_dir).head(max_images)
    n = max(1, len(rows))
    fig = Figure(figsize=(3.2 * n, 3.2))
    axes = fig.subplots(1, n, squeeze=False)
    for ax in axes[0]:
        ax.axis("off")
    if rows.empty:
        axes[0][0].text(0.5, 0.5, "no image needed pixel cleaning", ha="center", va="center")
        return fig
    for ax, row in zip(axes[0], rows.itertuples(), strict=False):
        ds = pydicom.dcmread(Path(deid_dir) / str(row.output))
        frame = np.asarray(ds.pixel_array)
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            frame = frame[0]
        ax.imshow(frame, cmap="gray" if frame.ndim == 2 else None)
        for x0, y0, x1, y1 in json.loads(str(row.pixel_boxes or "[]")):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1))
        ax.set_title(f"{row.n_pixel_boxes} boxes", fontsize=9)
    fig.tight_layout()
    return fig


def save_audit_summary(deid_dir: str | os.PathLike[str], summary: dict[str, Any]) -> Path:
    """Write the audit summary (counts, pseudonymous paths, no values) as ``DST/audit_summary.json``.

    The run's index page reads it for the audit verdict.
    """
    target = Path(deid_dir) / AUDIT_SUMMARY
    write_text_atomic(target, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return target


def audit_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The audit summary as a table: checks done and findings per category."""
    rows = [
        {"measure": "DICOM files checked", "value": summary["files_checked"]},
        {"measure": "other files checked (bytes)", "value": summary["other_files_checked"]},
        {"measure": "images checked by OCR", "value": summary["images_ocr_checked"]},
        {
            "measure": "of which verified by de-identification (same pixel hash)",
            "value": summary.get("images_ocr_reused", 0),
        },
        {"measure": "known PHI search terms", "value": summary["phi_terms"]},
        {"measure": "dangling references", "value": summary["dangling_references"]},
        {
            "measure": "shifted dates equal to another patient's birth date (not findings)",
            "value": summary.get("date_coincidences", 0),
        },
        {"measure": "findings", "value": summary["n_findings"]},
    ]
    rows += [{"measure": f"findings: {k}", "value": v} for k, v in summary["findings_by_category"].items()]
    return pd.DataFrame(rows)


def cohort_coverage(cohort_file: str | os.PathLike[str], deid_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """How many cohort patients (pseudonymous keys) have de-identified images.

    The cohort and the images use the same keyed pseudonym of the Patient ID, so they
    link without re-identification. Without a cohort file only the image count is given.
    """
    log = load_log(deid_dir)
    imaged = {str(o).split("/", 1)[0] for o in log.loc[log["outcome"] == "written", "output"]}
    rows = [{"measure": "patients with de-identified images", "value": len(imaged)}]
    path = Path(cohort_file)
    if not path.is_file():
        return pd.DataFrame(rows)
    cohort = pd.read_parquet(path)
    column = next((c for c in ("pseudo_patient_id", "PatientID", "patient_id") if c in cohort.columns), None)
    if column is not None:
        keys = set(cohort[column].astype(str))
        rows += [
            {"measure": "cohort patients", "value": len(keys)},
            {"measure": "cohort patients with images", "value": len(keys & imaged)},
        ]
    return pd.DataFrame(rows)
