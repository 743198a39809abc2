"""Burned-in text: which images are checked, text found and blanked in every frame, failing closed."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from pacs_workbench.deid.engine import Deidentifier
from pacs_workbench.deid.instance import DeidError, dataset_bytes
from pacs_workbench.deid.pixels import (
    assess_pixel_risk,
    content_box,
    detect_text_boxes,
    frames_array,
    read_text,
    render_frame,
    vendor_regions,
)
from pacs_workbench.deid.profile import parse_options
from tests.deid.fixtures import ALICE, StudySpec, make_ct_series, make_dose_screen, text_image

KEY = bytes(range(32))
SPEC = StudySpec(ALICE, "20200115", "ACC7781203")


def _ocr_lines(ds: pydicom.Dataset, frames: int | None = None) -> list[str]:
    arr = frames_array(ds)
    out = []
    for frame in arr[:frames]:
        out += [
            text for _, text, score in read_text(render_frame(frame, str(ds.PhotometricInterpretation))) if score > 0.5
        ]
    return out


def test_which_images_are_checked() -> None:
    ct = make_ct_series(SPEC, 1)[0]
    assert assess_pixel_risk(ct) == []
    dose = make_dose_screen(SPEC)
    reasons = assess_pixel_risk(dose)
    assert "BurnedInAnnotation YES" in reasons and "Secondary Capture SOP Class" in reasons
    us = make_ct_series(SPEC, 1)[0]
    us.Modality = "US"
    assert assess_pixel_risk(us) == ["modality US"]
    gone = make_ct_series(SPEC, 1)[0]
    del gone.PixelData
    assert assess_pixel_risk(gone) == []


def test_vendor_regions_table() -> None:
    ds = pydicom.Dataset()
    ds.Modality = "CT"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.ManufacturerModelName = "LightSpeed VCT"
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.Rows = 512
    ds.Columns = 512
    assert vendor_regions(ds) == [(0, 0, 512, 121)]
    ds.Rows = 256
    assert vendor_regions(ds) == []


@pytest.mark.slow
def test_text_is_found_and_blanked_in_every_frame() -> None:
    source = make_dose_screen(SPEC, rgb=False, frames=2)
    assert any("Kowalczyk".lower() in t.lower() for t in _ocr_lines(source, frames=1))  # the fixture really has text
    out = Deidentifier(KEY).deidentify_bytes(dataset_bytes(source))
    assert out.pixels is not None and out.pixels.boxes and out.pixels.frames == 2
    assert out.counts["n_pixel_boxes"] == len(out.pixels.boxes)
    ds = out.dataset
    assert ds.BurnedInAnnotation == "NO"
    assert _ocr_lines(ds) == []
    arr = ds.pixel_array
    for x0, y0, x1, y1 in out.pixels.boxes:
        assert (arr[:, y0:y1, x0:x1] == arr.min()).all()  # blanked in both frames


@pytest.mark.slow
def test_rgb_screen_is_cleaned_deterministically() -> None:
    data = dataset_bytes(make_dose_screen(SPEC, rgb=True))
    first = Deidentifier(KEY).deidentify_bytes(data)
    second = Deidentifier(KEY).deidentify_bytes(data)
    assert first.data == second.data
    ds = first.dataset
    assert ds.PhotometricInterpretation == "RGB" and ds.BurnedInAnnotation == "NO"
    assert b"Kowalczyk" not in first.data


def test_fails_closed() -> None:
    deid = Deidentifier(KEY)
    # compressed data no installed decoder reads (JPEG Lossless, Process 14 SV1), burned-in text flagged
    dose = make_dose_screen(SPEC, rgb=False)
    dose.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\x00" * 60 + b"\xff\xd9"])
    dose["PixelData"].VR = "OB"
    dose.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.70")
    with pytest.raises(DeidError, match="could not be decoded by the installed decoders"):
        deid.deidentify_bytes(dataset_bytes(dose))
    # a palette image whose palette is missing cannot be shown, so it cannot be checked
    palette = make_dose_screen(SPEC, rgb=False)
    palette.PhotometricInterpretation = "PALETTE COLOR"
    with pytest.raises(DeidError, match="palette could not be applied"):
        deid.deidentify_bytes(dataset_bytes(palette))
    # an image to check without the Clean Pixel Data option
    with pytest.raises(DeidError, match="clean-pixel-data"):
        Deidentifier(KEY, parse_options("basic")).deidentify_bytes(dataset_bytes(make_dose_screen(SPEC)))


def test_images_needing_no_check_keep_their_pixel_bytes() -> None:
    ct = make_ct_series(SPEC, 1)[0]
    out = Deidentifier(KEY).deidentify_bytes(dataset_bytes(ct))
    assert out.pixels is None
    assert pydicom.dcmread(io.BytesIO(out.data)).PixelData == ct.PixelData
    assert np.array_equal(out.dataset.pixel_array, ct.pixel_array)


def test_text_in_a_corner_is_read_on_the_content_and_mapped_back() -> None:
    assert content_box(np.full((300, 400), 7, np.uint8)) is None  # uniform: no text, no OCR
    assert detect_text_boxes(np.full((300, 400), 7, np.uint8), mode="sensitive") == []
    assert read_text(np.zeros((64, 64, 3), np.uint8)) == []
    text = text_image([f"ID {ALICE.mrn}"], size=(200, 50))
    big = np.zeros((600, 800), np.uint8)
    big[500:550, 560:760] = text  # a small label far from the origin: read on its crop only
    assert content_box(big) is not None and content_box(big)[0] >= 560  # type: ignore[index]
    for mode in ("fast", "sensitive", "thorough"):
        boxes = detect_text_boxes(big, margin=0, mode=mode)
        assert boxes, mode
        for x0, y0, x1, y1 in boxes:  # in the frame's coordinates, on the label
            assert 540 <= x0 < x1 <= 780 and 480 <= y0 < y1 <= 570, (mode, boxes)
    lines = read_text(big)
    assert any(ALICE.mrn in t.replace(" ", "") for _, t, score in lines if score > 0.5), lines
    (x0, y0, x1, y1), _, _ = lines[0]
    assert x0 >= 540 and y0 >= 480
