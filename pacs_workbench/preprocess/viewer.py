"""Slice viewers for JupyterLab: scroll through a volume or the preprocessed cases with their masks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import SimpleITK as sitk
from IPython.display import display

from pacs_workbench.core.display import NotedBox, draw_slice

_STATIC_NOTE = "Interactive slice viewer: open the notebook in JupyterLab to scroll through the cases."


def _arrays(image: sitk.Image, mask: sitk.Image | None) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]:
    volume = sitk.GetArrayFromImage(image)
    labels = sitk.GetArrayFromImage(mask) > 0 if mask is not None else None
    return volume, labels, tuple(float(v) for v in image.GetSpacing())


def _viewer(
    load: Callable[[str], tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]],
    choices: list[str],
    window: tuple[float, float] | None,
) -> widgets.Widget:
    picker = widgets.Dropdown(options=choices, description="case", layout=widgets.Layout(width="320px"))
    slider = widgets.IntSlider(min=0, max=0, value=0, description="slice", continuous_update=False)
    output = widgets.Output()
    state: dict[str, Any] = {}

    def draw(*_: Any) -> None:
        volume, labels, spacing = state["data"]
        z = int(slider.value)
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 5))
            draw_slice(ax, volume, labels, z, window=window, spacing=spacing)  # type: ignore[arg-type]
            ax.set_title(f"{picker.value}  slice {z + 1}/{volume.shape[0]}", fontsize=9)
            display(fig)
            plt.close(fig)

    def select(*_: Any) -> None:
        state["data"] = load(str(picker.value))
        volume, labels, _ = state["data"]
        slider.max = volume.shape[0] - 1
        if labels is not None and labels.any():
            z = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
            slider.value = int(z[z.size // 2])
        else:
            slider.value = volume.shape[0] // 2
        draw()

    picker.observe(select, names="value")
    slider.observe(draw, names="value")
    if choices:
        select()
    controls = widgets.HBox([picker, slider]) if len(choices) > 1 else widgets.HBox([slider])
    return NotedBox([controls, output], _STATIC_NOTE)


def slice_viewer(
    image: sitk.Image, mask: sitk.Image | None = None, *, window: tuple[float, float] | None = None
) -> widgets.Widget:
    """Scroll through the axial slices of one image, with its mask outlined.

    Parameters
    ----------
    image, mask
        A volume and (optionally) a binary mask on its grid.
    window
        Display range; the image's 1st-99th percentile when ``None``.
    """
    data = _arrays(image, mask)
    return _viewer(lambda _: data, ["image"], window)


def case_viewer(result: pd.DataFrame, *, window: tuple[float, float] | None = None) -> widgets.Widget:
    """Pick any preprocessed case from ``preprocess_cases``' table and scroll through it with its mask."""
    ok = result[result["status"] == "ok"].sort_values("case_id")
    paths = {str(r.case_id): (str(r.image), str(r.mask)) for r in ok.itertuples()}

    def load(case_id: str) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]:
        image_path, mask_path = paths[case_id]
        return _arrays(sitk.ReadImage(image_path), sitk.ReadImage(mask_path))

    if not paths:
        return NotedBox([widgets.HTML("no preprocessed cases to show")], _STATIC_NOTE)
    return _viewer(load, list(paths), window)
