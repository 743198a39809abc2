"""The run: every case accounted for, masks where references are hidden, worklist, bring-your-own model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from pacs_workbench.segment import SegmentationError, segment_cases
from tests.segment.fixtures import TINY, write_cases


def test_hidden_references_get_model_masks_scored_against_them(tmp_path) -> None:
    cases = write_cases(tmp_path / "cases", 6, constant="case05")
    run = segment_cases(cases, tmp_path / "out", labelled_fraction=0.7, config=TINY, threads=1, progress=False)
    table = run.table
    assert set(table["case_id"]) == set(cases["case_id"]), "every case has a row"
    bad = table[table["case_id"] == "case05"].iloc[0]
    assert bad["status"] == "error" and "empty volume" in bad["reason"]
    model = table[(table["mask_source"] == "model") & (table["status"] == "ok")]
    assert not model.empty and model["dice"].notna().all() and model["hd95_mm"].notna().all()
    for path in model["mask"]:
        assert sitk.GetArrayFromImage(sitk.ReadImage(path)).any()
    reference = table[table["mask_source"] == "reference"]
    assert (reference["mask"] == cases.set_index("case_id").loc[reference["case_id"], "mask"].values).all()
    saved = pd.read_parquet(tmp_path / "out" / "segmentation.parquet")
    assert list(saved["case_id"]) == list(table["case_id"])
    worklist = pd.read_csv(tmp_path / "out" / "worklist.csv")
    assert set(worklist["case_id"]) <= set(table.loc[table["split"] == "unlabelled", "case_id"])
    assert worklist["uncertainty"].is_monotonic_decreasing
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "probability").iterdir()}
    rerun = segment_cases(cases, tmp_path / "out", labelled_fraction=0.7, config=TINY, threads=1, progress=False)
    assert rerun.summary["cached"] and rerun.summary["checkpoint_sha256"] == run.summary["checkpoint_sha256"]
    # Nothing changed: every case's rows come back as they were, and no map is written again.
    pd.testing.assert_frame_equal(rerun.table, table)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "probability").iterdir()} == written


def test_seg_key_follows_the_masks_and_the_model(tmp_path) -> None:
    from pacs_workbench.segment.reuse import mark_seg, seg_is_current, seg_key

    source, mask, target = tmp_path / "1.dcm", tmp_path / "m.nii.gz", tmp_path / "seg" / "s.dcm"
    source.write_bytes(b"source")
    mask.write_bytes(b"mask")
    key = seg_key("model", "1.0", "1.2.3", [source], [mask])
    assert not seg_is_current(tmp_path, target, key), "nothing written yet"
    target.parent.mkdir()
    target.write_bytes(b"seg")
    mark_seg(tmp_path, target, key)
    assert seg_is_current(tmp_path, target, key)
    assert seg_key("other model", "1.0", "1.2.3", [source], [mask]) != key
    mask.write_bytes(b"mask, edited")
    assert not seg_is_current(tmp_path, target, seg_key("model", "1.0", "1.2.3", [source], [mask]))
    mask.unlink()
    assert seg_key("model", "1.0", "1.2.3", [source], [mask]) != key


def test_no_labelled_case_when_training(tmp_path) -> None:
    cases = write_cases(tmp_path / "cases", 2)
    with pytest.raises(SegmentationError, match="no labelled case to train on"):
        segment_cases(cases, tmp_path / "out", labelled_fraction=0.0, config=TINY, progress=False)


class _Threshold(torch.nn.Module):
    """Lesion logit rises with intensity: soft tissue in lung, no training needed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion = (x - 0.5) * 20.0
        return torch.cat([torch.zeros_like(lesion), lesion], dim=1)


def _save_model(tmp_path, **settings):
    path = tmp_path / "byo" / "model.pt"
    path.parent.mkdir()
    torch.jit.script(_Threshold()).save(str(path))
    yaml = {"spacing_mm": [1.0, 1.0, 1.0], "intensity": [-1000, 400], "in_channels": 1, "roi_size": 16, **settings}
    path.with_suffix(".yaml").write_text("\n".join(f"{k}: {v}" for k, v in yaml.items()) + "\n")
    return path


def test_bring_your_own_torchscript_model(tmp_path) -> None:
    cases = write_cases(tmp_path / "cases", 3)
    model = _save_model(tmp_path)
    run = segment_cases(cases, tmp_path / "out", model=model, progress=False)
    assert (run.table["mask_source"] == "model").all() and (run.table["status"] == "ok").all()
    assert np.median(run.table.groupby("case_id")["dice"].first()) > 0.8
    assert run.summary["model"] == "external" and len(run.summary["checkpoint_sha256"]) == 64


def test_a_model_with_other_channels_or_spacing_is_refused(tmp_path) -> None:
    cases = write_cases(tmp_path / "cases", 2)
    with pytest.raises(SegmentationError, match="expects 3 input channels"):
        segment_cases(cases, tmp_path / "o1", model=_save_model(tmp_path, in_channels=3), progress=False)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(SegmentationError, match=r"trained at \[0.7, 0.7, 2.0\] mm"):
        segment_cases(cases, tmp_path / "o2", model=_save_model(other, spacing_mm=[0.7, 0.7, 2.0]), progress=False)


def test_a_nifti_mask_drawn_in_a_viewer_joins_the_training_set_next_run(tmp_path) -> None:
    cases = write_cases(tmp_path / "cases", 5)
    drawn = cases.loc[cases["case_id"] == "case04", "mask"].iloc[0]
    cases.loc[cases["case_id"] == "case04", "mask"] = None  # the export had no mask for this series
    out = tmp_path / "out"
    first = segment_cases(cases, out, labelled_fraction=0.5, config=TINY, threads=1, progress=False)
    row = first.table[first.table["case_id"] == "case04"].iloc[0]
    assert row["split"] == "unlabelled" and row["mask_source"] == "model"
    (out / "annotations").mkdir()
    target = out / "annotations" / "case04_mask.nii.gz"
    sitk.WriteImage(sitk.ReadImage(drawn), str(target))
    second = segment_cases(cases, out, labelled_fraction=0.5, config=TINY, threads=1, progress=False)
    row = second.table[second.table["case_id"] == "case04"].iloc[0]
    assert row["split"] == "train" and row["mask_source"] == "reference" and row["mask"] == str(target)
    assert second.summary["n_annotated"] == 1
    assert second.summary["n_labelled"] == first.summary["n_labelled"] + 1
    assert not second.summary["cached"], "the new annotation retrains the model"
    assert "case04" not in set(second.worklist["case_id"])
