"""The engine on real DICOM: table-driven actions, identity, UIDs, dates, sequences, privates."""

from __future__ import annotations

import io
import re
import struct
from datetime import date
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs_workbench.core.pseudonym import pseudonymize
from pacs_workbench.deid.engine import Deidentifier
from pacs_workbench.deid.instance import DeidError, dataset_bytes
from pacs_workbench.deid.keyed import (
    DATE_OFFSET_MAX_DAYS,
    DATE_OFFSET_MIN_DAYS,
    date_offset_days,
    patient_identity,
    remap_uid,
    shift_date,
    shift_datetime,
)
from pacs_workbench.deid.profile import (
    CLEAN_UNLISTED,
    KEEP_LISTED,
    REMOVE_UNLISTED,
    RETAIN_UNLISTED,
    Option,
    Profile,
    iod_family,
    parse_options,
    row_for_tag,
)
from pacs_workbench.deid.text import collect_known_phi
from pacs_workbench.dicom.raw import MAX_SEQUENCE_DEPTH, encode_element, pad, read_file
from tests.deid.fixtures import (
    ALICE,
    BOB,
    INSTITUTION,
    StudySpec,
    make_ct_series,
    make_rtstruct,
    make_seg,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
UID_RE = re.compile(r"^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*$")

OPTION_SETS = {
    "basic": "basic",
    "research": "research",
    "retain-all": "retain-long-full-dates,retain-patient-chars,retain-device-id,retain-institution-id,"
    "retain-uids,retain-safe-private",
    "clean-all": "clean-descriptors,clean-structured-content,clean-graphics,retain-long-modified-dates",
}
PYDICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm", "test-SR.dcm", "waveform_ecg.dcm"]


def _load(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _sources() -> dict[str, bytes]:
    out = {}
    for name in PYDICOM_FILES:
        path = get_testdata_file(name)
        assert isinstance(path, str), name
        ds = pydicom.dcmread(path, force=True)
        out[name] = dataset_bytes(ds)
    spec = StudySpec(ALICE, "20200115", "ACC7781203")
    ct = make_ct_series(spec, 2)
    out["fixture-CT"] = dataset_bytes(ct[0])
    out["fixture-SEG"] = dataset_bytes(make_seg(ct))
    out["fixture-RTSTRUCT"] = dataset_bytes(make_rtstruct(spec, ct))
    return out


SOURCES = _sources()


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes | int | float):
        return [str(value)]
    try:
        return [str(v) for v in value]  # type: ignore[attr-defined]
    except TypeError:
        return [str(value)]


def _check_dataset(src: Dataset, out: Dataset, profile: Profile, family: str | None, nested: bool, ctx: dict) -> None:
    """Each element of ``src`` ended up as ``profile`` says (recursing into kept sequences)."""
    for elem in src:
        tag = int(elem.tag)
        group = tag >> 16
        if group in (0x0002,) or tag & 0xFFFF == 0:
            continue
        if group % 2 == 1:
            if (tag & 0xFFFF) <= 0xFF:
                continue
            creator = src.get((group << 16) | ((tag & 0xFFFF) >> 8))
            safe = profile.safe_private(str(creator.value) if creator is not None else "", tag)
            if safe is None:
                assert tag not in out, f"unsafe private {elem.tag} kept"
            continue
        action = profile.action(tag, family, nested)
        row = row_for_tag(tag)
        if row is not None:
            ctx["rows"].add(row.tag)
        present = tag in out
        if action in ("X", REMOVE_UNLISTED):
            assert not present, f"{elem.tag} {elem.keyword} should be removed ({action})"
            continue
        if tag in (0x00100010, 0x00100020, 0x00080050):
            if str(elem.value or "").strip():
                assert present and str(out[tag].value) != str(elem.value), elem.keyword
            continue
        if action == "C" and elem.VR in ("OB", "OW", "UN", "UR"):
            assert not present
            continue
        assert present, f"{elem.tag} {elem.keyword} missing after {action}"
        new = out[tag]
        if action == "Z":
            assert new.is_empty, f"{elem.keyword} not emptied"
        elif action == "D":
            if elem.VR == "SQ":
                # the items kept for the IOD, each value cleaned by its own row
                assert len(new.value) == len(elem.value)
                for old_item, new_item in zip(elem.value, new.value, strict=True):
                    _check_dataset(old_item, new_item, profile, family, True, ctx)
            else:
                assert not new.is_empty
                if elem.VR not in ("UI",) and _values(elem.value) != _values(new.value):
                    pass  # the dummy replaced the value
        elif action in ("U", RETAIN_UNLISTED) and elem.VR == "UI":
            for old_v, new_v in zip(_values(elem.value), _values(new.value), strict=True):
                if old_v and old_v in ctx["wellknown"]:
                    assert new_v == old_v
                elif old_v:
                    assert new_v == remap_uid(ctx["key"], old_v) and new_v.startswith("2.25.") and new_v != old_v
        elif elem.VR == "SQ" and action in ("K", "C", "U", KEEP_LISTED, RETAIN_UNLISTED):
            assert len(new.value) == len(elem.value)
            for old_item, new_item in zip(elem.value, new.value, strict=True):
                _check_dataset(old_item, new_item, profile, family, True, ctx)
        elif action == "C" and elem.VR == "DA":
            shifted = [shift_date(v, ctx["offset"]) for v in _values(elem.value)]
            assert _values(new.value) == [v for v in shifted if v is not None]
        elif action == "C" and elem.VR == "DT":
            shifted = [shift_datetime(v, ctx["offset"]) for v in _values(elem.value)]
            assert _values(new.value) == [v for v in shifted if v is not None]
        elif action == CLEAN_UNLISTED and elem.VR == "PN":
            assert new.is_empty, f"{elem.keyword}: a name outside the table is emptied"
        elif action in ("C", CLEAN_UNLISTED) and elem.VR in ("LO", "SH", "ST", "LT", "UT", "PN"):
            text = " ".join(_values(new.value)).lower()
            for term in ctx["phi"]:
                if len(term) >= 4:
                    assert not re.search(rf"(?<![a-z0-9]){re.escape(term.lower())}(?![a-z0-9])", text), elem.keyword
        elif action in ("K", KEEP_LISTED, RETAIN_UNLISTED) and elem.VR not in (
            "SQ",
            "LO",
            "SH",
            "ST",
            "LT",
            "UT",
            "PN",
            "DA",
            "DT",
        ):
            if tag == 0x00101010:
                continue  # Patient's Age is capped
            assert new.value == elem.value, f"{elem.keyword} changed under {action}"


@pytest.mark.parametrize("option_name", list(OPTION_SETS))
@pytest.mark.parametrize("source", list(SOURCES))
def test_actions_match_the_table(source: str, option_name: str) -> None:
    options = parse_options(OPTION_SETS[option_name])
    deid = Deidentifier(KEY, options)
    data = SOURCES[source]
    out = deid.deidentify_bytes(data)
    src = _load(data)
    dst = _load(out.data)
    from pydicom._uid_dict import UID_dictionary

    ctx: dict[str, Any] = {
        "key": KEY,
        "offset": date_offset_days(KEY, patient_identity(src)),
        "phi": collect_known_phi(src, include_institution=Option.RETAIN_INSTITUTION_ID not in options),
        "wellknown": set(UID_dictionary),
        "rows": set(),
    }
    _check_dataset(src, dst, Profile(options), iod_family(src.get("SOPClassUID")), False, ctx)
    assert dst.PatientIdentityRemoved == "YES"
    codes = {item.CodeValue for item in dst.DeidentificationMethodCodeSequence}
    assert "113100" in codes and len(codes) == len(options) + 1
    assert dst.file_meta.MediaStorageSOPInstanceUID == dst.SOPInstanceUID
    assert dst.SOPClassUID == src.SOPClassUID
    assert len(ctx["rows"]) >= 5


def test_rows_exercised_across_sources() -> None:
    """The table-driven test above covers many distinct E.1-1 rows."""
    seen: set[str] = set()
    for data in SOURCES.values():
        for elem in _load(data).iterall():
            row = row_for_tag(int(elem.tag))
            if row is not None:
                seen.add(row.tag)
    assert len(seen) >= 60


def _ct_bytes(spec: StudySpec, n: int = 2) -> list[bytes]:
    return [dataset_bytes(ds) for ds in make_ct_series(spec, n)]


def test_identity_is_keyed_and_consistent() -> None:
    deid = Deidentifier(KEY)
    a1 = [_load(deid.deidentify_bytes(b).data) for b in _ct_bytes(StudySpec(ALICE, "20200115", "ACC7781203"))]
    a2 = [_load(deid.deidentify_bytes(b).data) for b in _ct_bytes(StudySpec(ALICE, "20210302", "ACC7781999"))]
    b1 = [_load(deid.deidentify_bytes(b).data) for b in _ct_bytes(StudySpec(BOB, "20191120", "ACC5512001"))]
    alice_ids = {d.PatientID for d in a1 + a2}
    assert alice_ids == {pseudonymize(KEY, ALICE.mrn)}
    assert {str(d.PatientName) for d in a1 + a2} == alice_ids
    assert {d.PatientID for d in b1} != alice_ids
    # same interval between Alice's two studies, dates shifted by the same keyed offset
    days = (date.fromisoformat("2021-03-02") - date.fromisoformat("2020-01-15")).days
    d1 = date.fromisoformat(f"{a1[0].StudyDate[:4]}-{a1[0].StudyDate[4:6]}-{a1[0].StudyDate[6:]}")
    d2 = date.fromisoformat(f"{a2[0].StudyDate[:4]}-{a2[0].StudyDate[4:6]}-{a2[0].StudyDate[6:]}")
    assert (d2 - d1).days == days
    offset = (d1 - date(2020, 1, 15)).days
    assert -DATE_OFFSET_MAX_DAYS <= offset <= -DATE_OFFSET_MIN_DAYS
    assert offset == date_offset_days(KEY, ALICE.mrn)
    assert a1[0].AccessionNumber == pseudonymize(KEY, "ACC7781203", "accession")
    # a different key: different pseudonyms, UIDs and offsets
    other = _load(Deidentifier(OTHER_KEY).deidentify_bytes(_ct_bytes(StudySpec(ALICE, "20200115", "X1"))[0]).data)
    assert other.PatientID not in alice_ids


def test_same_key_same_bytes_and_pixels_untouched() -> None:
    data = _ct_bytes(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    first = Deidentifier(KEY).deidentify_bytes(data).data
    second = Deidentifier(KEY).deidentify_bytes(data).data
    assert first == second
    assert Deidentifier(OTHER_KEY).deidentify_bytes(data).data != first
    assert _load(first).PixelData == _load(data).PixelData


def test_uids_valid_and_references_consistent() -> None:
    spec = StudySpec(ALICE, "20200115", "ACC7781203")
    ct = make_ct_series(spec, 3)
    seg = make_seg(ct)
    rt = make_rtstruct(spec, ct)
    deid = Deidentifier(KEY)
    ct_out = [_load(deid.deidentify_bytes(dataset_bytes(d)).data) for d in ct]
    seg_out = _load(deid.deidentify_bytes(dataset_bytes(seg)).data)
    rt_out = _load(deid.deidentify_bytes(dataset_bytes(rt)).data)
    new_sops = {d.SOPInstanceUID for d in ct_out}
    for ds in [*ct_out, seg_out, rt_out]:
        for elem in ds.iterall():
            if elem.VR == "UI":
                for v in _values(elem.value):
                    assert len(v) <= 64 and UID_RE.match(v), elem.keyword
        assert ds.StudyInstanceUID == ct_out[0].StudyInstanceUID
        assert ds.FrameOfReferenceUID == ct_out[0].FrameOfReferenceUID if "FrameOfReferenceUID" in ds else True
    seg_refs = {
        item.ReferencedSOPInstanceUID for item in seg_out.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert seg_refs == new_sops
    assert seg_out.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_out[0].SeriesInstanceUID
    frame_refs = {
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in seg_out.PerFrameFunctionalGroupsSequence
    }
    assert frame_refs <= new_sops
    rt_series = rt_out.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert rt_series.SeriesInstanceUID == ct_out[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in rt_series.ContourImageSequence} == new_sops
    contour_ref = rt_out.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID
    assert contour_ref in new_sops
    # well-known UIDs are untouched
    assert seg_out.SOPClassUID == seg.SOPClassUID
    assert rt_out.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].ReferencedSOPClassUID == (
        "1.2.840.10008.3.1.2.3.1"
    )


def test_nested_and_private_sequences() -> None:
    ct = make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    out = _load(Deidentifier(KEY).deidentify_bytes(dataset_bytes(ct)).data)
    # unsafe private element and private sequence (with a public name inside) removed, creators too
    assert (0x0011, 0x1012) not in out and (0x0011, 0x0010) not in out
    assert (0x0021, 0x1010) not in out and (0x0021, 0x0010) not in out
    # the safe private element is kept; safe private text is cleaned of the patient's name
    assert out[0x00191023].value == "39.375"
    assert "Kowalczyk" not in str(out[0x0019109E].value)
    # a private element nested inside a public sequence is removed; the item is cleaned
    request = out.RequestAttributesSequence[0]
    assert all(int(e.tag) >> 16 != 0x0041 for e in request)
    assert request.AccessionNumber == pseudonymize(KEY, "ACC7781203", "accession")
    assert "RequestedProcedureID" not in request
    assert "Haverbrook" not in request.RequestedProcedureDescription
    assert "OtherPatientIDsSequence" not in out
    assert "ReferencedImageSequence" not in out  # X/Z/U*, Type 3 in CT
    assert INSTITUTION not in str(out.get("InstitutionName", ""))
    assert "Kowalczyk" not in str(out.StudyDescription) and "CT CHEST W/O" in str(out.StudyDescription)
    assert "555" not in str(out.PatientComments)
    assert out.PatientBirthDate == ""
    assert "PatientAddress" not in out and "PatientTelephoneNumbers" not in out


def test_age_cap_and_patient_characteristics() -> None:
    bob = make_ct_series(StudySpec(BOB, "20191120", "ACC5512001"), 1)[0]
    out = _load(Deidentifier(KEY).deidentify_bytes(dataset_bytes(bob)).data)
    assert out.PatientAge == "090Y" and out.PatientSex == "M" and out.PatientWeight == "61.5"
    basic = _load(Deidentifier(KEY, parse_options("basic")).deidentify_bytes(dataset_bytes(bob)).data)
    assert "PatientAge" not in basic and basic.PatientSex == ""
    assert basic.LongitudinalTemporalInformationModified == "REMOVED"
    assert "SeriesDate" not in basic and basic.StudyDate == ""


def test_option_variants() -> None:
    ct = make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    full = _load(
        Deidentifier(KEY, parse_options("retain-long-full-dates,retain-uids,retain-institution-id"))
        .deidentify_bytes(dataset_bytes(ct))
        .data
    )
    assert full.StudyDate == "20200115" and full.SOPInstanceUID == ct.SOPInstanceUID
    assert full.InstitutionName == INSTITUTION
    assert full.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert (0x0019, 0x1023) not in full  # no retain-safe-private


def test_other_encodings_and_un_sequences() -> None:
    ct = make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    deid = Deidentifier(KEY)
    explicit = _load(deid.deidentify_bytes(dataset_bytes(ct)).data)
    # implicit VR little endian
    ct_implicit = make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    ct_implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = _load(deid.deidentify_bytes(dataset_bytes(ct_implicit)).data)
    assert out.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert out.PatientID == explicit.PatientID and "Kowalczyk" not in str(out.StudyDescription)
    assert out[0x00191023].value == "39.375"
    # deflated explicit VR little endian
    ct_deflated = make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    ct_deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    result = deid.deidentify_bytes(dataset_bytes(ct_deflated))
    inflated = read_file(result.data)
    assert inflated.deflated and b"Kowalczyk" not in inflated.body and b"Kowalczyk" not in result.data
    assert _load(result.data).PatientID == explicit.PatientID
    # a public sequence stored as UN (implicit VR items inside an explicit file) is still cleaned
    item = encode_element(0x00080050, "SH", pad(b"ACC7781203", "SH"), True) + encode_element(
        0x00100010, "PN", pad(ALICE.dicom_name.encode(), "PN"), True
    )
    un_value = b"\xfe\xff\x00\xe0" + struct.pack("<I", len(item)) + item  # one item, implicit VR
    ct_un = make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    del ct_un.RequestAttributesSequence
    base = dataset_bytes(ct_un)
    parsed = read_file(base)
    at = next(e.start for e in parsed.elements if e.tag > 0x00400275)
    body_start = len(base) - len(parsed.body)
    element = encode_element(0x00400275, "UN", un_value, False)
    spliced = base[: body_start + at] + element + base[body_start + at :]
    out_un = deid.deidentify_bytes(spliced)
    assert _load(out_un.data).RequestAttributesSequence[0].AccessionNumber
    assert b"Kowalczyk" not in out_un.data and b"ACC7781203" not in out_un.data


def test_refuses_what_it_cannot_handle() -> None:
    deid = Deidentifier(KEY)
    data = dataset_bytes(make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0])
    with pytest.raises(DeidError, match="truncated"):
        deid.deidentify_bytes(data[: len(data) - 100])
    with pytest.raises(DeidError, match="DICM"):
        deid.deidentify_bytes(b"not a dicom file" * 20)
    no_sop = make_ct_series(StudySpec(ALICE, "20200115", "A"), 1)[0]
    del no_sop.SOPInstanceUID
    with pytest.raises(DeidError, match="SOP Instance UID"):
        deid.deidentify_bytes(dataset_bytes(no_sop))
    unknown = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.9.9.9\x00", 1)  # same length
    with pytest.raises(DeidError, match="unknown transfer syntax"):
        deid.deidentify_bytes(unknown)
    short = make_ct_series(StudySpec(ALICE, "20200115", "A"), 1)[0]
    short.PixelData = short.PixelData[:100]
    with pytest.raises(DeidError, match="pixel data shorter"):
        deid.deidentify_bytes(dataset_bytes(short))


@pytest.mark.parametrize(
    ("tag", "vr", "reason"),
    [
        (b"\x08\x00\x20\x00", b"UL", r"\(0008,0020\) Study Date has VR UL, expected DA"),
        (b"\x08\x00\x20\x00", b"XX", r"\(0008,0020\) Study Date has unknown VR XX"),
        (b"\x28\x00\x04\x00", b"SH", r"\(0028,0004\) Photometric Interpretation has VR SH, expected CS"),
    ],
)
def test_refuses_an_element_whose_vr_disagrees_with_the_dictionary(tag: bytes, vr: bytes, reason: str) -> None:
    data = dataset_bytes(make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0])
    at = data.index(tag, 132)
    with pytest.raises(DeidError, match=reason):
        Deidentifier(KEY).deidentify_bytes(data[: at + 4] + vr + data[at + 6 :])


def test_multi_vr_attributes_accept_each_of_their_vrs() -> None:
    ds = make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    ds.PixelRepresentation = 1
    ds.add_new(0x00280106, "SS", -5)  # Smallest Image Pixel Value: "US or SS"
    out = Deidentifier(KEY).deidentify_bytes(dataset_bytes(ds))
    assert _load(out.data).SmallestImagePixelValue == -5


def _nested(depth: int) -> bytes:
    ds = make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3.4"
    for _ in range(depth - 1):
        outer = Dataset()
        outer.ReferencedSeriesSequence = [inner]
        inner = outer
    ds.ReferencedSeriesSequence = [inner]
    return dataset_bytes(ds)


def test_refuses_sequences_nested_deeper_than_the_audit_can_check() -> None:
    deid = Deidentifier(KEY)
    assert deid.deidentify_bytes(_nested(MAX_SEQUENCE_DEPTH)).data
    with pytest.raises(DeidError, match=f"sequence nesting deeper than {MAX_SEQUENCE_DEPTH} levels"):
        deid.deidentify_bytes(_nested(MAX_SEQUENCE_DEPTH + 1))


def test_refuses_an_image_whose_pixel_attributes_a_reader_needs_are_missing() -> None:
    ds = make_ct_series(StudySpec(ALICE, "20200115", "ACC7781203"), 1)[0]
    del ds.BitsStored
    with pytest.raises(DeidError, match=r"\(0028,0101\) Bits Stored"):
        Deidentifier(KEY).deidentify_bytes(dataset_bytes(ds))
