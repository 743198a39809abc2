"""Tests for pacs_workbench.dicom.net.store: series folders, whole instance files, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pacs_workbench.dicom.net.store import (
    MANIFEST,
    SeriesRef,
    on_disk,
    read_manifest,
    series_dir,
    valid_uid,
    write_instance,
    write_manifest,
)


def _instance() -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def test_uids_are_checked_before_they_become_file_names() -> None:
    assert valid_uid("1.2.840.10008.5.1.4.1.1.2")
    for bad in ("", "../../etc", "1.2.x", "1" * 65):
        assert not valid_uid(bad)


def test_manifest_round_trip_and_damaged_manifest(tmp_path: Path) -> None:
    ref = SeriesRef("1.2", "1.2.3")
    folder = series_dir(tmp_path, ref)
    assert folder == tmp_path / "1.2" / "1.2.3"
    assert read_manifest(folder) is None
    write_manifest(folder, ref, ["1.2.3.2", "1.2.3.1"], [CTImageStorage, CTImageStorage])
    manifest = read_manifest(folder)
    assert manifest is not None
    assert manifest["expected"] == ["1.2.3.1", "1.2.3.2"] and manifest["sop_classes"] == [CTImageStorage]
    (folder / MANIFEST).write_text("{not json")
    assert read_manifest(folder) is None  # rebuilt from the PACS
    (folder / MANIFEST).write_text(json.dumps({"expected": "1.2.3.1"}))
    assert read_manifest(folder) is None


def test_instances_are_whole_files_and_temporaries_do_not_count(tmp_path: Path) -> None:
    ds = _instance()
    write_instance(tmp_path, str(ds.SOPInstanceUID), ds)
    (tmp_path / f".{ds.SOPInstanceUID}.dcm.4242-abcd.tmp").write_bytes(b"partial")
    assert on_disk(tmp_path) == {str(ds.SOPInstanceUID)}
    assert pydicom.dcmread(tmp_path / f"{ds.SOPInstanceUID}.dcm").SOPInstanceUID == ds.SOPInstanceUID
    encoded = (tmp_path / f"{ds.SOPInstanceUID}.dcm").read_bytes()
    write_instance(tmp_path, "1.2.3", encoded)  # bytes as a C-STORE delivers them
    assert (tmp_path / "1.2.3.dcm").read_bytes() == encoded
    assert on_disk(tmp_path) == {str(ds.SOPInstanceUID), "1.2.3"}
