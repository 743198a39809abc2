"""What every stage's figures and widgets share: slices through a lesion, a static note, PNG bytes.

Figures never label anything with identifiers: pseudonymous keys, counts and distributions only.
Under papermill nobody scrolls, so a widget's plain-text form is a note saying where to open it.
"""

from __future__ import annotations

import io
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def slices_through(mask: np.ndarray, n: int) -> list[int]:
    """``n`` axial slice indices spread over the mask's extent (its middle slice when ``n`` is 1)."""
    z = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if z.size == 0:
        return [mask.shape[0] // 2]
    if n == 1:
        return [int(z[z.size // 2])]
    picks = np.quantile(z, np.linspace(0.15, 0.85, n)).round().astype(int)
    return sorted({int(v) for v in picks})


def window_limits(array: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is not None:
        return float(window[0]), float(window[1])
    lo, hi = np.percentile(array, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def draw_slice(
    ax: Axes,
    image: np.ndarray,
    mask: np.ndarray | None,
    z: int,
    *,
    window: tuple[float, float] | None = None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    color: str = "#ff3b30",
) -> None:
    """One axial slice ``z`` of an (z, y, x) volume with the mask outlined in ``color``."""
    lo, hi = window_limits(image, window)
    extent = (0, image.shape[2] * spacing[0], image.shape[1] * spacing[1], 0)
    ax.imshow(image[z], cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
    if mask is not None and mask[z].any():
        ys = (np.arange(mask.shape[1]) + 0.5) * spacing[1]
        xs = (np.arange(mask.shape[2]) + 0.5) * spacing[0]
        ax.contour(xs, ys, mask[z].astype(float), levels=[0.5], colors=color, linewidths=1.2)
    ax.set_xticks([])
    ax.set_yticks([])


def note_figure(text: str, size: tuple[float, float] = (6.0, 1.6)) -> Figure:
    """A figure that only says why there is nothing to draw."""
    fig, ax = plt.subplots(figsize=size)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.axis("off")
    return fig


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """``fig`` as PNG bytes, closed afterwards (for an Image widget or an inline data URI)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


class NotedBox(widgets.VBox):
    """A VBox whose plain-text form is ``note``: what a static report shows instead of the widget."""

    def __init__(self, children: Any, note: str) -> None:
        super().__init__(children)
        self.note = note

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        data = super()._repr_mimebundle_(**kwargs)
        if data is not None:
            data["text/plain"] = self.note
        return data
