"""The byte-level scanner (pacs_workbench.dicom.raw): sniffing, element headers, fragments, VRs, the file tree."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from pacs_workbench.dicom.raw import (
    PIXEL_DATA,
    FragmentError,
    RawFormatError,
    element_header,
    implicit_vr,
    is_dicom_file,
    parse_meta,
    read_file,
    sniff_dicom,
    vr_problem,
    walk_fragments,
)
from pacs_workbench.dicom.scan import scan_header
from tests.dicom.fixtures import bundled, pydicom_files, write_ct

# --- sniffing ----------------------------------------------------------------------------------


def test_sniff_recognizes_encodings_and_rejects_other_bytes(tmp_path: Path) -> None:
    part10 = tmp_path / "a.dcm"
    write_ct(part10)
    assert sniff_dicom(part10.read_bytes()[:132]) == "part10"
    no_meta_le = bundled("ExplVR_LitEndNoMeta.dcm")
    no_meta_be = bundled("ExplVR_BigEndNoMeta.dcm")
    assert sniff_dicom(no_meta_le.read_bytes()[:132]) == "explicit_le"
    assert sniff_dicom(no_meta_be.read_bytes()[:132]) == "explicit_be"
    implicit = b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100"
    assert sniff_dicom(implicit) == "implicit_le"
    assert sniff_dicom(b"hello world, this is not DICOM" * 10) is None
    assert sniff_dicom(b"") is None
    assert sniff_dicom(b"\x08\x00") is None
    # Group 0008 with a huge implicit length is not a plausible first element.
    assert sniff_dicom(b"\x08\x00\x05\x00\xff\xff\xff\x7f" + bytes(200)) is None
    assert is_dicom_file(part10)
    assert not is_dicom_file(tmp_path / "missing.dcm")


# --- element headers and fragments -------------------------------------------------------------


def test_element_header_reads_every_encoding() -> None:
    short = b"\x10\x00\x10\x00PN\x04\x00Doe^"
    assert element_header(short, 0, False, len(short)) == (0x00100010, b"PN", 4, 8)
    long = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", 8) + bytes(8)
    assert element_header(long, 0, False, len(long)) == (PIXEL_DATA, b"OB", 8, 12)
    implicit = b"\x28\x00\x10\x00" + struct.pack("<I", 2) + b"\x00\x02"
    assert element_header(implicit, 0, True, len(implicit)) == (0x00280010, b"", 2, 8)
    big = b"\x00\x28\x00\x10US\x00\x02\x02\x00"
    assert element_header(big, 0, False, len(big), little=False) == (0x00280010, b"US", 2, 8)
    with pytest.raises(RawFormatError, match="truncated"):
        element_header(long[:10], 0, False, 10)
    with pytest.raises(RawFormatError, match="truncated"):
        element_header(short[:6], 0, False, 6)


def _item(value: bytes) -> bytes:
    return b"\xfe\xff\x00\xe0" + struct.pack("<I", len(value)) + value


def test_walk_fragments_finds_the_end_and_says_what_is_wrong() -> None:
    delimiter = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    data = _item(b"") + _item(b"\xff\xd8\xff\xd9") + delimiter

    def read(pos: int, n: int) -> bytes:
        return data[pos : pos + n]

    assert walk_fragments(read, 0, len(data)) == len(data)
    cut = data[:-8]
    with pytest.raises(FragmentError, match="ends after 2 items without a delimiter") as error:
        walk_fragments(lambda pos, n: cut[pos : pos + n], 0, len(cut))
    assert not error.value.malformed
    short = data[:18]
    with pytest.raises(FragmentError, match="item 1 needs 4 bytes") as error:
        walk_fragments(lambda pos, n: short[pos : pos + n], 0, len(short))
    assert not error.value.malformed
    bad = b"\x08\x00\x05\x00" + data[4:]
    with pytest.raises(FragmentError, match="item 0 is malformed") as error:
        walk_fragments(lambda pos, n: bad[pos : pos + n], 0, len(bad))
    assert error.value.malformed


# --- VRs ---------------------------------------------------------------------------------------


def test_vr_problem_follows_the_data_dictionary() -> None:
    assert vr_problem(0x00080020, "DA") is None
    assert vr_problem(0x00080020, "UL") == "(0008,0020) Study Date has VR UL, expected DA"
    assert vr_problem(0x00080020, "ZZ") == "(0008,0020) Study Date has unknown VR ZZ"
    assert vr_problem(0x00280106, "SS") is None and vr_problem(0x00280106, "US") is None  # US or SS
    assert vr_problem(0x00080020, "UN") is None  # read with the dictionary VR
    assert vr_problem(0x00291010, "UL") is None  # private: no dictionary to disagree with
    assert implicit_vr(0x00280106) == "US" and implicit_vr(0x7FE00010) == "OW" and implicit_vr(0x00290010) == "LO"


# --- the file tree -----------------------------------------------------------------------------


def test_read_file_splits_meta_and_data_set(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    written = write_ct(path)
    data = path.read_bytes()
    meta, pos = parse_meta(data, 132)
    assert {e.tag for e in meta} >= {0x00020002, 0x00020003, 0x00020010}
    raw = read_file(data)
    assert raw.body == data[pos:]
    top = {e.tag: e for e in raw.elements}
    sop = top[0x00080018]
    assert raw.body[sop.value_start : sop.value_end].rstrip(b"\x00").decode() == written.SOPInstanceUID
    sequence = top[0x00400275]  # Request Attributes Sequence, with one item
    assert sequence.items is not None and len(sequence.items) == 1
    assert top[PIXEL_DATA].value_end - top[PIXEL_DATA].value_start == len(written.PixelData)


def test_read_file_inflates_deflated_and_refuses_big_endian(tmp_path: Path) -> None:
    deflated = tmp_path / "deflated.dcm"
    write_ct(deflated, transfer_syntax=DeflatedExplicitVRLittleEndian)
    raw = read_file(deflated.read_bytes())
    assert raw.deflated and any(e.tag == PIXEL_DATA for e in raw.elements)
    big = tmp_path / "big.dcm"
    write_ct(big, transfer_syntax=ExplicitVRBigEndian)
    with pytest.raises(RawFormatError, match="big-endian"):
        read_file(big.read_bytes())
    with pytest.raises(RawFormatError, match="no DICM prefix"):
        read_file(bytes(200))


def test_read_file_and_scan_header_see_the_same_top_level_values() -> None:
    n_compared = 0
    for path in pydicom_files():
        data = path.read_bytes()
        try:
            raw = read_file(data)
        except (RawFormatError, struct.error):
            continue
        if raw.deflated:
            continue
        tags = [e.tag for e in raw.elements if e.tag >> 16 != 0x7FE0]
        scan = scan_header(io.BytesIO(data), len(data), tags)
        if scan is None:
            continue
        offset = len(data) - len(raw.body)
        for e in raw.elements:
            if e.tag in scan.elements:
                assert scan.elements[e.tag][1] == data[offset + e.value_start : offset + e.value_end], path.name
        n_compared += 1
    assert n_compared > 50


def test_scan_header_defers_unusual_files_to_pydicom(tmp_path: Path) -> None:
    big = tmp_path / "big.dcm"
    write_ct(big, transfer_syntax=ExplicitVRBigEndian)
    deflated = tmp_path / "deflated.dcm"
    write_ct(deflated, transfer_syntax=DeflatedExplicitVRLittleEndian)
    for path in (big, deflated, bundled("ExplVR_LitEndNoMeta.dcm")):
        data = path.read_bytes()
        assert scan_header(io.BytesIO(data), len(data), [0x00080018]) is None, path.name
    good = tmp_path / "good.dcm"
    written = write_ct(good)
    data = good.read_bytes()
    scan = scan_header(io.BytesIO(data), len(data), [0x00100020])
    assert scan is not None and scan.pixel_problem is None
    assert scan.elements[0x00100020] == ("LO", b"MRN0042 ")
    assert scan.media_sop_instance == written.SOPInstanceUID
    cut = data[:-10]
    scan = scan_header(io.BytesIO(cut), len(cut), [0x00100020])
    assert scan is not None and scan.pixel_problem is not None and "Pixel Data needs" in scan.pixel_problem
    assert pydicom.dcmread(good).PatientID == "MRN0042"
