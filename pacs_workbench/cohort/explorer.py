"""Interactive viewers for JupyterLab (ipywidgets).

Under papermill nobody scrolls, so reports rely on static figures from
:mod:`pacs_workbench.plots`; these viewers show a short note there instead of a dead widget.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from pacs_workbench.cohort.build import save_criteria
from pacs_workbench.cohort.criteria import (
    AGE_CAP,
    CONTRAST_CHOICES,
    KERNEL_CHOICES,
    NODULE_CHANGE_CHOICES,
    SEQUENCE_CHOICES,
    CohortCriteria,
    apply_criteria,
)
from pacs_workbench.cohort.plots import plot_cohort_histograms
from pacs_workbench.core.display import NotedBox, figure_png

_EXPLORER_NOTE = "Cohort explorer: open the notebook in JupyterLab to change the criteria and see the counts live."


def _options(values: pd.Series) -> list[str]:
    return sorted({str(v) for v in values.dropna() if str(v).strip()})


def _as_date(text: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _counts_html(counts: dict[str, int]) -> str:
    return f"<b>{counts['patients']}</b> patients, <b>{counts['studies']}</b> studies, <b>{counts['series']}</b> series"


def _criteria_table(criteria: CohortCriteria) -> pd.DataFrame:
    params = criteria.to_params()
    params["vendors"] = ", ".join(params["vendors"]) or "(all)"
    return pd.DataFrame({"value": {k: str(v) for k, v in params.items()}}).rename_axis("criterion")


class CohortExplorer:
    """Live cohort criteria over the candidate series, for JupyterLab.

    Filters for modality, vendor, study dates, slice thickness, contrast, kernel class, MR sequence,
    radiation dose (CTDIvol from the dose SR), age at scan, outcome and report findings; every
    change recomputes the counts, the attrition table and small histograms. *Save criteria*
    writes the current criteria to the ``01_cohort`` section of the run parameter file
    (:func:`pacs_workbench.cohort.build.save_criteria`), so the next papermill run reproduces the exploration.

    Only counts, the attrition table and histograms are shown: no identifier. The
    candidates themselves (identified zone) stay in the kernel.

    Parameters
    ----------
    candidates
        From :func:`pacs_workbench.cohort.build.annotate_series`.
    criteria
        Initial criteria (e.g. the notebook's parameters).
    params_file
        Parameter file the *Save criteria* button writes; ``None`` disables saving.
    section
        Section of the parameter file.

    Attributes
    ----------
    controls
        The filter widgets by name (``modality``, ``vendors``, ``date_from``, ``date_to``,
        ``slice_thickness``, ``contrast``, ``kernel``, ``sequence``, ``max_ctdivol_mgy``, ``age``, ``outcome_known``,
        ``min_baseline_nodule_mm``, ``nodule_change``, ``min_instances``).
    counts, attrition
        Patients/studies/series left, and the attrition table, for the current filters.
    """

    def __init__(
        self,
        candidates: pd.DataFrame,
        criteria: CohortCriteria | None = None,
        *,
        params_file: str | os.PathLike[str] | None = None,
        section: str = "01_cohort",
    ) -> None:

        self.candidates = candidates
        self.params_file = params_file
        self.section = section
        start = criteria if criteria is not None else CohortCriteria()
        vendors = _options(candidates["Manufacturer"])
        chosen = [v for v in vendors if any(n.lower() in v.lower() for n in start.vendors)]
        thickness = pd.to_numeric(candidates["SliceThickness"], errors="coerce")
        top = float(max(10.0, np.ceil(thickness.max()) if thickness.notna().any() else 10.0))
        sizes = pd.to_numeric(candidates.get("nodule_size_mm", pd.Series(dtype=float)), errors="coerce")
        largest = float(max(30.0, np.ceil(sizes.max()) if sizes.notna().any() else 30.0))
        doses = pd.to_numeric(candidates.get("CTDIvol_mGy", pd.Series(dtype=float)), errors="coerce")
        dose_top = float(max(30.0, np.ceil(doses.max()) if doses.notna().any() else 30.0))
        wide = {"description_width": "140px"}
        layout = widgets.Layout(width="420px")
        modalities = _options(candidates["Modality"])
        if start.modality and start.modality not in modalities:
            modalities.append(start.modality)
        self.controls: dict[str, Any] = {
            "modality": widgets.Dropdown(
                options=[("(all)", ""), *[(m, m) for m in modalities]], value=start.modality,
                description="modality", style=wide, layout=layout,
            ),
            "min_instances": widgets.BoundedIntText(
                value=int(start.min_instances), min=0, max=100_000, description="min images", style=wide,
            ),
            "vendors": widgets.SelectMultiple(
                options=vendors, value=tuple(chosen), rows=min(6, max(2, len(vendors))),
                description="vendors (none: all)", style=wide, layout=layout,
            ),
            "date_from": widgets.DatePicker(value=_as_date(start.date_from), description="study from", style=wide),
            "date_to": widgets.DatePicker(value=_as_date(start.date_to), description="study to", style=wide),
            "slice_thickness": widgets.FloatRangeSlider(
                value=(float(start.slice_thickness_min), min(float(start.slice_thickness_max), top)),
                min=0.0, max=top, step=0.5, description="thickness (mm)", style=wide, layout=layout,
                continuous_update=False,
            ),
            "max_ctdivol_mgy": widgets.FloatSlider(
                value=min(float(start.max_ctdivol_mgy), dose_top), min=0.0, max=dose_top, step=0.5,
                description="CTDIvol ≤ mGy (0: off)", style=wide, layout=layout, continuous_update=False,
            ),
            "contrast": widgets.Dropdown(options=list(CONTRAST_CHOICES), value=start.contrast,
                                         description="contrast", style=wide),
            "kernel": widgets.Dropdown(options=list(KERNEL_CHOICES), value=start.kernel,
                                       description="kernel class", style=wide),
            "sequence": widgets.Dropdown(options=list(SEQUENCE_CHOICES), value=start.sequence,
                                         description="MR sequence", style=wide),
            "age": widgets.FloatRangeSlider(
                value=(float(start.age_min), min(float(start.age_max), float(AGE_CAP))), min=0.0,
                max=float(AGE_CAP), step=1.0, description="age at scan", style=wide, layout=layout,
                continuous_update=False,
            ),
            "outcome_known": widgets.Checkbox(value=bool(start.outcome_known), description="outcome known (EHR)"),
            "min_baseline_nodule_mm": widgets.FloatSlider(
                value=min(float(start.min_baseline_nodule_mm), largest), min=0.0, max=largest, step=1.0,
                description="baseline nodule ≥ mm", style=wide, layout=layout, continuous_update=False,
            ),
            "nodule_change": widgets.Dropdown(options=list(NODULE_CHANGE_CHOICES), value=start.nodule_change,
                                              description="nodule change", style=wide),
        }  # fmt: skip
        self.count_label = widgets.HTML()
        self.attrition_html = widgets.HTML()
        self.histograms = widgets.Image(format="png")
        self.message = widgets.HTML()
        self.save_button = widgets.Button(
            description="Save criteria", icon="save", disabled=params_file is None,
            tooltip="write these criteria to the run parameter file",
        )  # fmt: skip
        self.save_button.on_click(lambda _button: self.save())
        self.counts: dict[str, int] = {}
        self.attrition = pd.DataFrame()
        self._criteria_error: str | None = None
        for control in self.controls.values():
            control.observe(self.update, names="value")
        self.update()

    @property
    def criteria(self) -> CohortCriteria:
        """The criteria the filters currently describe (:class:`~pacs_workbench.cohort.criteria.CohortCriteria`)."""
        c = self.controls
        thickness = c["slice_thickness"].value
        age = c["age"].value
        dates = [c[name].value for name in ("date_from", "date_to")]
        return CohortCriteria.from_mapping(
            {
                "modality": c["modality"].value,
                "min_instances": int(c["min_instances"].value),
                "date_from": dates[0].isoformat() if dates[0] else "",
                "date_to": dates[1].isoformat() if dates[1] else "",
                "slice_thickness_min": float(thickness[0]),
                "slice_thickness_max": float(thickness[1]),
                "contrast": c["contrast"].value,
                "vendors": list(c["vendors"].value),
                "kernel": c["kernel"].value,
                "sequence": c["sequence"].value,
                "max_ctdivol_mgy": float(c["max_ctdivol_mgy"].value),
                "age_min": float(age[0]),
                "age_max": float(age[1]),
                "outcome_known": bool(c["outcome_known"].value),
                "min_baseline_nodule_mm": float(c["min_baseline_nodule_mm"].value),
                "nodule_change": c["nodule_change"].value,
            }
        )

    def update(self, *_: Any) -> None:
        """Recompute counts, attrition and histograms from the filters (the widgets' callback)."""
        try:
            criteria = self.criteria
        except ValueError as exc:  # e.g. an empty range while dragging: say so, keep the last result
            self.message.value = f"<span style='color:#b00020'>{exc}</span>"
            return
        kept, self.attrition = apply_criteria(self.candidates, criteria)
        last = self.attrition.iloc[-1]
        self.counts = {name: int(last[name]) for name in ("patients", "studies", "series")}
        self.count_label.value = _counts_html(self.counts)
        self.attrition_html.value = self.attrition.to_html(index=False, border=0)
        self.histograms.value = figure_png(plot_cohort_histograms(kept))
        self.message.value = ""

    def save(self, params_file: str | os.PathLike[str] | None = None) -> Path:
        """Write the current criteria to the parameter file's section; returns its path."""
        target = params_file or self.params_file
        if target is None:
            raise ValueError("no parameter file to save to (pass params_file)")
        path = save_criteria(self.criteria, target, self.section)
        self.message.value = f"saved to <code>{path.name}</code> [{self.section}]: rerun with this parameter file"
        return path

    def widget(self) -> widgets.Widget:
        """The explorer's layout: filters left, counts, attrition and histograms right."""
        c = self.controls
        filters = widgets.VBox(
            [
                widgets.HTML("<b>imaging</b>"), c["modality"], c["min_instances"], c["vendors"], c["date_from"],
                c["date_to"], c["slice_thickness"], c["contrast"], c["kernel"], c["sequence"],
                c["max_ctdivol_mgy"],
                widgets.HTML("<b>EHR</b>"), c["age"], c["outcome_known"],
                widgets.HTML("<b>reports</b>"), c["min_baseline_nodule_mm"], c["nodule_change"],
                widgets.HBox([self.save_button, self.message]),
            ]
        )  # fmt: skip
        results = widgets.VBox([self.count_label, self.attrition_html, self.histograms])
        return NotedBox([widgets.HBox([filters, results])], _EXPLORER_NOTE)

    def summary_html(self) -> str:
        """The static summary: criteria, counts, attrition table and histograms (for papermill runs)."""
        image = base64.b64encode(self.histograms.value).decode("ascii")
        return (
            f"<p>Cohort explorer (static; open the notebook in JupyterLab to explore): "
            f"{_counts_html(self.counts)}.</p>"
            f"<div style='display:flex;gap:2em;align-items:flex-start'>"
            f"{_criteria_table(self.criteria).to_html(border=0)}{self.attrition.to_html(index=False, border=0)}"
            f"</div><img src='data:image/png;base64,{image}' alt='histograms of the cohort'/>"
        )


class _StaticSummary:
    """What the explorer cell shows under papermill: HTML, no widget."""

    def __init__(self, html: str, counts: dict[str, int]) -> None:
        self.html = html
        self.counts = counts

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"cohort explorer (static): {self.counts}"


def cohort_explorer(
    candidates: pd.DataFrame,
    criteria: CohortCriteria | None = None,
    *,
    params_file: str | os.PathLike[str] | None = None,
    section: str = "01_cohort",
    interactive: bool = True,
) -> Any:
    """The cohort explorer widget, or its static summary when ``interactive`` is false.

    Under papermill there is no widget frontend: pass ``interactive=False`` (the run's
    parameter) and the same cell shows the criteria, counts, attrition table and
    histograms as HTML. See :class:`CohortExplorer` for the parameters.
    """
    explorer = CohortExplorer(candidates, criteria, params_file=params_file, section=section)
    if interactive:
        return explorer.widget()
    return _StaticSummary(explorer.summary_html(), explorer.counts)
