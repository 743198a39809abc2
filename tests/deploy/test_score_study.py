"""The study scorer's parts: which series it scores, the age it reads, lesion measurements, packages it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pacs_workbench.cli import main
from pacs_workbench.deploy import PackageError, StudyScorer, load_package
from pacs_workbench.deploy.score_study import age_years, lesion_measurement, matching_series
from tests.deploy.fixtures import DEV_VENDORS, develop, make_site
from tests.preprocess.fixtures import make_series, write


def _study(folder: Path, *series: tuple[str, int, bool]) -> Path:
    """One study of series ``(modality, slices, localizer)`` written into ``folder``, flat as the SCP keeps it."""
    study = pydicom.uid.generate_uid()
    for number, (modality, n, localizer) in enumerate(series):
        datasets = make_series(n=n, rows=8, cols=8, modality=modality, study_uid=study, deidentified=True)
        for ds in datasets:
            if localizer:
                ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        for i, path in enumerate(write(datasets, folder / f"s{number}")):
            path.rename(folder / f"{number}-{i}.dcm")
    return folder


def test_the_ct_series_with_most_slices_is_scored(tmp_path: Path) -> None:
    folder = _study(tmp_path / "study", ("CT", 1, True), ("CT", 4, False), ("CT", 6, False), ("MR", 8, False))
    files, header = matching_series(folder, {"CT"}, 2)
    assert len(files) == 6 and header.Modality == "CT"


def test_a_study_without_a_matching_series_is_refused_with_what_it_holds(tmp_path: Path) -> None:
    folder = _study(tmp_path / "study", ("CT", 1, True), ("MR", 8, False))
    with pytest.raises(ValueError, match=r"no series matches .*CT images.*CT localizer \(1 image\(s\)\), MR \(8"):
        matching_series(folder, {"CT"}, 2)


def test_age_from_patients_age_or_birth_date() -> None:
    ds = pydicom.Dataset()
    ds.PatientAge, ds.PatientBirthDate, ds.StudyDate = "067Y", "19500101", "20200101"
    assert age_years(ds) == 67.0
    del ds.PatientAge
    assert age_years(ds) == 70.0
    ds.PatientBirthDate = "19000101"
    assert age_years(ds) == 90.0  # ages above 89 count as 90
    ds.PatientBirthDate = ""
    assert np.isnan(age_years(ds))


def test_lesion_volume_and_diameter_of_a_sphere() -> None:
    zz, yy, xx = np.indices((21, 41, 41))
    sphere = (((zz - 10) * 2.0) ** 2 + ((yy - 20) * 0.5) ** 2 + ((xx - 20) * 0.5) ** 2) <= 8.0**2
    image = sitk.GetImageFromArray(np.zeros(sphere.shape, dtype=np.float32))
    image.SetSpacing((0.5, 0.5, 2.0))
    measured = lesion_measurement(sphere, image)
    assert measured.volume_mm3 == pytest.approx(4 / 3 * np.pi * 8.0**3, rel=0.1)
    assert measured.diameter_mm == pytest.approx(16.0, abs=1.0)


def test_a_package_without_a_segmentation_model_is_refused(tmp_path: Path) -> None:
    make_site(tmp_path / "dev", 16, seed=1, vendors=DEV_VENDORS)
    develop(tmp_path / "dev", tmp_path / "model")
    package = load_package(tmp_path / "model" / "package")
    assert package.segmentation is None
    with pytest.raises(PackageError, match="holds no segmentation model"):
        StudyScorer(package, tmp_path / "out", b"k" * 32)
    code = main(["listen", "--package", str(tmp_path / "model" / "package"), "--ae-title", "LISTEN", "--port", "0",
                 "--out", str(tmp_path / "listen"), "--allow-ae", "MODALITY"])  # fmt: skip
    assert code == 2
