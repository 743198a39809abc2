"""The masked-image viewer: the de-identified side only, browsable, labelled by counts alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom
from matplotlib.patches import Rectangle

from pacs_workbench.deid import masked_image_viewer, masked_images
from pacs_workbench.deid.viewer import masked_figure

PNG = b"\x89PNG\r\n\x1a\n"


def test_viewer_browses_every_checked_image_masked_first(extract: dict[str, Path]) -> None:
    viewer = masked_image_viewer(extract["dst"])
    controls, image = viewer.children
    picker, frame = controls.children
    labels = [label for label, _ in picker.options]
    checked = masked_images(extract["dst"])
    assert len(labels) == len(checked) and labels
    # Counts only: no path, UID or name in what the viewer shows.
    assert all(re.fullmatch(r"image \d+ of \d+: \d+ box(es)? blanked", label) for label in labels), labels
    assert int(re.search(r": (\d+) box", labels[0]).group(1)) == checked["n_pixel_boxes"].max()  # type: ignore[union-attr]
    assert bytes(image.value).startswith(PNG) and frame.value == 1
    if len(labels) > 1:
        shown = bytes(image.value)
        picker.value = len(labels) - 1
        assert bytes(image.value).startswith(PNG) and bytes(image.value) != shown
    assert "open the notebook in JupyterLab" in viewer._repr_mimebundle_()["text/plain"]


def test_figure_draws_the_delivered_pixels_with_the_blanked_boxes_outlined(extract: dict[str, Path]) -> None:
    row = masked_images(extract["dst"]).sort_values("n_pixel_boxes").iloc[-1]
    boxes = json.loads(row["pixel_boxes"])
    delivered = pydicom.dcmread(extract["dst"] / row["output"]).pixel_array
    frame = delivered[0] if delivered.ndim == 3 and delivered.shape[-1] not in (3, 4) else delivered
    fig = masked_figure(frame, boxes, "image 1 of 1")
    left, right = fig.axes
    assert np.array_equal(left.images[0].get_array(), frame)  # what is handed over, not the source
    assert not [p for p in left.patches if isinstance(p, Rectangle)]
    assert len([p for p in right.patches if isinstance(p, Rectangle)]) == len(boxes) > 0
