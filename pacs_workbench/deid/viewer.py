"""The masked-image viewer for JupyterLab: browse the images checked for burned-in text.

Only the de-identified side is ever read (the files under DST): each image as it is handed over,
beside the same image with the blanked boxes outlined. Labels are counts, never a path or a UID.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pacs_workbench.core.display import NotedBox, figure_png
from pacs_workbench.deid.report import masked_images

_VIEWER_NOTE = "Masked-image viewer: open the notebook in JupyterLab to browse every image checked for burned-in text."


def _frames(path: Path) -> np.ndarray:
    """The image's frames as (frames, rows, columns[, samples])."""
    import pydicom

    ds = pydicom.dcmread(path)
    pixels = np.asarray(ds.pixel_array)
    return pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[np.newaxis]


def masked_figure(frame: np.ndarray, boxes: list[list[int]], title: str) -> Figure:
    """One de-identified frame as handed over (left) and with its blanked boxes outlined (right)."""
    fig = Figure(figsize=(8.0, 4.2))
    axes = fig.subplots(1, 2)
    for ax, outlined in zip(axes, (False, True), strict=True):
        ax.imshow(frame, cmap="gray" if frame.ndim == 2 else None)
        ax.axis("off")
        if outlined:
            for x0, y0, x1, y1 in boxes:
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1.2))
    axes[0].set_title("de-identified, as handed over", fontsize=9)
    axes[1].set_title(f"blanked boxes outlined ({len(boxes)})", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _label(position: int, total: int, boxes: int) -> str:
    return f"image {position} of {total}: {boxes} box{'es' if boxes != 1 else ''} blanked"


def masked_image_viewer(deid_dir: str | os.PathLike[str]) -> widgets.Widget:
    """Browse every image checked for burned-in text, masked ones first, frame by frame.

    Parameters
    ----------
    deid_dir
        The de-identified output folder (``deid_log.parquet`` and the written files).

    Returns
    -------
    ipywidgets.Widget
        An image picker, a frame slider and the two panels of :func:`masked_figure`; its plain-text
        form (what a static report shows) says where to open it.
    """
    root = Path(deid_dir)
    rows = masked_images(root).sort_values("n_pixel_boxes", ascending=False, kind="stable").reset_index(drop=True)
    if rows.empty:
        return NotedBox([widgets.HTML("no image needed a check for burned-in text")], _VIEWER_NOTE)
    options = [(_label(i + 1, len(rows), int(n)), i) for i, n in enumerate(rows["n_pixel_boxes"])]
    picker = widgets.Dropdown(options=options, description="image", layout=widgets.Layout(width="420px"))
    frame = widgets.IntSlider(min=1, max=1, value=1, description="frame", continuous_update=False)
    # An Image widget, not an Output widget: capturing figures in an Output widget while papermill
    # executes the cell can leave the run waiting for messages forever.
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
    state: dict[str, Any] = {}

    def draw(*_: Any) -> None:
        row: pd.Series = rows.iloc[int(picker.value)]
        boxes = json.loads(str(row["pixel_boxes"] or "[]"))
        title = f"{picker.label}, frame {frame.value} of {len(state['frames'])}"
        image.value = figure_png(masked_figure(state["frames"][frame.value - 1], boxes, title), dpi=90)

    def select(*_: Any) -> None:
        state["frames"] = _frames(root / str(rows.iloc[int(picker.value)]["output"]))
        frame.unobserve(draw, names="value")
        frame.max, frame.value = len(state["frames"]), 1
        frame.observe(draw, names="value")
        draw()

    picker.observe(select, names="value")
    frame.observe(draw, names="value")
    select()
    return NotedBox([widgets.HBox([picker, frame]), image], _VIEWER_NOTE)
