"""Tests for pacs_workbench.cohort.index_views: the DuckDB views over an index."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs_workbench.cohort.index import build_index
from pacs_workbench.cohort.index_views import connect_index
from tests.cohort.index_fixtures import (
    PATIENT_ID,
    make_study,
    query,
)


def test_views_count_studies_series_and_extent(tmp_path: Path) -> None:
    root = tmp_path / "src"
    first = make_study(root / "a", n_slices=4)
    second = make_study(root / "b", n_slices=3)
    (root / "junk.txt").write_text("x")
    out = tmp_path / "index"
    build_index([root], out, workers=1, progress=False)
    con = connect_index(out)
    assert con.execute("SELECT count(*) FROM instances").fetchall() == [(14,)]
    assert con.execute("SELECT count(*) FROM errors").fetchall() == [(1,)]
    studies = {r["StudyInstanceUID"]: r for r in query(con, "SELECT * FROM studies")}
    assert set(studies) == {first["study"], second["study"]}
    study = studies[first["study"]]
    assert study["n_series"] == 2 and study["n_instances"] == 8 and study["n_files"] == 8
    assert study["modalities"] == ["CT"] and study["manufacturers"] == ["GE MEDICAL SYSTEMS"]
    assert study["PatientID"] == PATIENT_ID and study["AccessionNumber"] == "ACC0001"
    assert str(study["study_date"]) == "2021-03-04"
    assert study["contrast"] is True
    series = {r["SeriesInstanceUID"]: r for r in query(con, "SELECT * FROM series")}
    assert len(series) == 4
    plain = series[first["plain"]]
    assert plain["n_instances"] == 4 and plain["n_frames"] == 4
    assert plain["StudyInstanceUID"] == first["study"]
    assert plain["SeriesNumber"] == 2 and plain["SeriesDescription"] == "AXIAL 2"
    assert plain["extent_mm"] == pytest.approx(7.5)
    assert plain["min_slice_location"] == pytest.approx(-7.5) and plain["max_slice_location"] == 0.0
    assert plain["contrast"] is False and series[first["contrast"]]["contrast"] is True
    assert plain["PixelSpacing"] == [0.5, 0.5]
    assert Path(plain["first_path"]).name == "plain_000.dcm"
    assert series[second["plain"]]["extent_mm"] == pytest.approx(5.0)
    with pytest.raises(FileNotFoundError):
        connect_index(tmp_path / "nothing")
