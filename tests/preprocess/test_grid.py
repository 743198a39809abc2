"""Resampling grids: IBSI centre alignment."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pacs_workbench.preprocess.grid import target_grid


def test_target_grid_keeps_the_centre_and_rounds_up() -> None:
    image = sitk.Image([204, 201, 60], sitk.sitkFloat32)
    image.SetSpacing([0.977, 0.977, 3.0])
    image.SetOrigin([-174.4, -79.6, -100.4])
    grid = target_grid(image, (2, 2, 2), "center")
    assert grid.size == (100, 99, 90)  # ceil(204 * 0.977 / 2), ceil(201 * 0.977 / 2), ceil(60 * 3 / 2)
    centre_in = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    centre_out = grid.index_to_physical(np.array([(n - 1) / 2 for n in grid.size]))[0]
    assert np.allclose(centre_in, centre_out)
    in_plane = target_grid(image, (2, 2, 0), "center")
    assert in_plane.size == (100, 99, 60) and in_plane.spacing[2] == 3.0
    corner = target_grid(image, (2, 2, 2), "corner")
    assert corner.origin[0] == pytest.approx(-174.4 + (2 - 0.977) / 2)
