"""The case picker for JupyterLab: any explained case's SHAP waterfall beside its lesion."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import pandas as pd

from pacs_workbench.core.display import NotedBox, figure_png
from pacs_workbench.explain.cases import case_summary
from pacs_workbench.explain.plots import plot_case_studies
from pacs_workbench.explain.review import ShapReview

_PICKER_NOTE = "Case picker: open the notebook in JupyterLab to show any case's waterfall and lesion."


def case_picker(review: ShapReview, *, top: int = 8, n_slices: int = 3) -> widgets.Widget:
    """Pick any explained case and see its SHAP waterfall beside its lesion and mask.

    Parameters
    ----------
    review
        :class:`~pacs_workbench.explain.review.ShapReview`.
    top, n_slices
        Contributions in the waterfall; slices through the lesion.

    The list holds pseudonymous case keys with risk and outcome, highest risk first; it opens on
    the case of median risk.
    """
    cases = case_summary(review.explanations).sort_values("risk", ascending=False, kind="stable")
    if cases.empty:
        return NotedBox([widgets.HTML("no explained cases to show")], _PICKER_NOTE)

    def label(row: Any) -> str:
        outcome = "outcome unknown" if pd.isna(row["label"]) else ("event" if int(row["label"]) == 1 else "no event")
        return f"{row['case_id']}  (risk {row['risk']:.2f}, {outcome})"

    options = [(label(row), str(row["case_id"])) for row in cases.to_dict(orient="records")]
    picker = widgets.Dropdown(options=options, description="case", layout=widgets.Layout(width="420px"))
    # An Image widget rather than an Output widget: capturing figures in an Output widget while
    # papermill executes the cell can leave the run waiting for messages forever.
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))

    def draw(*_: Any) -> None:
        fig = plot_case_studies(review, [str(picker.value)], top=top, n_slices=n_slices)
        image.value = figure_png(fig, dpi=90)

    typical = review.typical_cases(1)
    if typical:
        picker.value = typical[0]
    picker.observe(draw, names="value")
    draw()
    return NotedBox([picker, image], _PICKER_NOTE)
