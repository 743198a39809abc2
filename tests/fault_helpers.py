"""Shared helpers of the fault, fuzz and security tests.

Small real DICOM written with pydicom (CT slices with planted PHI, deeply nested
sequences, huge private elements, non-ASCII character sets, compressed transfer
syntaxes), byte-level mutations of such files, and process helpers to kill a run (its
whole process group, and any Jupyter kernel it started in a session of its own) at a
random moment.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLI = [PYTHON, "-m", "pacs_workbench"]
ROOT_UID = "1.2.826.0.1.3680043.10.1234."

# PHI planted in every file these helpers write; outputs that must be de-identified are searched for it.
PATIENT_NAME = "Vasquez-Thornbury^Ermengilda"
PATIENT_ID = "MRN5529031"
BIRTH_DATE = "19470219"
PHI_VALUES = (PATIENT_NAME, "Vasquez-Thornbury", "Ermengilda", PATIENT_ID, BIRTH_DATE)

# Value representations whose length field is 4 bytes in explicit VR (PS3.5 Table 7.1-1).
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


# --- DICOM builders ------------------------------------------------------------------------------


def ct_slice(
    *,
    study: str,
    series: str,
    frame: str,
    number: int,
    size: int = 16,
    z_step: float = 2.5,
    charset: str | list[str] | None = None,
    patient_name: str = PATIENT_NAME,
) -> Dataset:
    """One axial CT slice (``size`` x ``size``, int16) with PHI in the usual places."""
    sop = generate_uid(prefix=ROOT_UID)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyDate = "20190304"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC7781234"
    ds.Modality = "CT"
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = "Saint Quillan Infirmary"
    ds.ReferringPhysicianName = "Pemberton-Ashe^Dorothea"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = "AX 2.5"
    ds.PatientName = patient_name
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    other = Dataset()
    other.PatientID = "X" + PATIENT_ID
    ds.OtherPatientIDsSequence = DicomSequence([other])
    ds.SliceThickness = "2.5"
    ds.KVP = "120"
    ds.ConvolutionKernel = "B31f"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = 2
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [-8.0, -8.0, z_step * number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame
    ds.SliceLocation = str(z_step * number)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.BurnedInAnnotation = "NO"
    ds.private_block(0x0011, "FAULT TEST 1.0", create=True).add_new(0x01, "LO", PATIENT_ID)
    rng = np.random.default_rng(number)
    ds.PixelData = rng.normal(1000, 40, (size, size)).astype(np.int16).tobytes()
    return ds


def dicom_bytes(ds: Dataset, *, implicit: bool = False) -> bytes:
    """``ds`` as a Part 10 file (explicit or implicit VR little endian)."""
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return buffer.getvalue()


@dataclass
class Series:
    """A small CT series written to disk."""

    study: str
    series: str
    frame: str
    files: list[Path]


def write_ct_series(folder: Path, n: int = 4, *, size: int = 16, prefix: str = "slice") -> Series:
    """``n`` contiguous CT slices of one new series into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = (generate_uid(prefix=ROOT_UID) for _ in range(3))
    files = []
    for i in range(n):
        path = folder / f"{prefix}_{i:03d}.dcm"
        path.write_bytes(dicom_bytes(ct_slice(study=study, series=series, frame=frame, number=i + 1, size=size)))
        files.append(path)
    return Series(study, series, frame, files)


def _explicit_element(tag: int, vr: str, value: bytes, *, undefined: bool = False) -> bytes:
    head = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
    if vr in LONG_VRS:
        length = 0xFFFFFFFF if undefined else len(value)
        return head + vr.encode() + b"\0\0" + length.to_bytes(4, "little") + value
    return head + vr.encode() + len(value).to_bytes(2, "little") + value


def nested_sequence_bytes(depth: int = 200, tag: int = 0x00081115) -> bytes:
    """A CT slice with a sequence (default (0008,1115) Referenced Series Sequence) nested ``depth`` levels deep.

    Written by hand (undefined lengths, item and sequence delimiters) because the depth
    is beyond what a recursive writer should be asked to do; the innermost item holds
    the patient's name, so a de-identifier that gives up half-way must not write the file.
    """
    study, series, frame = (generate_uid(prefix=ROOT_UID) for _ in range(3))
    ds = ct_slice(study=study, series=series, frame=frame, number=1)
    data = dicom_bytes(ds)
    inner = _explicit_element(0x00100010, "PN", _pad(PATIENT_NAME.encode()))
    inner += _explicit_element(0x00081155, "UI", _pad(generate_uid(prefix=ROOT_UID).encode(), b"\0"))
    item_end = b"\xfe\xff\x0d\xe0\0\0\0\0"
    seq_end = b"\xfe\xff\xdd\xe0\0\0\0\0"
    for _ in range(depth):
        item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + inner + item_end
        inner = _explicit_element(tag, "SQ", item + seq_end, undefined=True)
    # Splice the sequence in before the first element with a larger tag (data sets are sorted).
    offset = _element_offsets(data, after=tag)[0]
    return data[:offset] + inner + data[offset:]


def _pad(value: bytes, pad: bytes = b" ") -> bytes:
    return value + pad if len(value) % 2 else value


def huge_private_bytes(size: int = 20 * 1024 * 1024) -> bytes:
    """A CT slice with a ``size``-byte private OB element (0009,1001) next to the usual PHI."""
    study, series, frame = (generate_uid(prefix=ROOT_UID) for _ in range(3))
    ds = ct_slice(study=study, series=series, frame=frame, number=1)
    block = ds.private_block(0x0009, "FAULT HUGE 1.0", create=True)
    block.add_new(0x01, "OB", (PATIENT_ID.encode() * (size // len(PATIENT_ID) + 1))[:size])
    return dicom_bytes(ds)


# Patient names in other scripts, with the character set that encodes them.
CHARSET_NAMES: dict[str, tuple[str | list[str], str]] = {
    "utf8": ("ISO_IR 192", "Müller-Ødegård^Zoë=山田^太郎"),
    "jis": (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    "latin1": ("ISO_IR 100", "Ñúñez^Ángela"),
    "unknown": ("ISO_IR 9999", "Smith^John"),
}


def charset_bytes(kind: str) -> bytes:
    """A CT slice whose names are encoded in a non-ASCII character set (or a bogus one)."""
    charset, name = CHARSET_NAMES[kind]
    study, series, frame = (generate_uid(prefix=ROOT_UID) for _ in range(3))
    known = "ISO_IR 100" if kind == "unknown" else charset
    ds = ct_slice(study=study, series=series, frame=frame, number=1, charset=known, patient_name=name)
    ds.ReferringPhysicianName = name
    data = dicom_bytes(ds)
    if kind == "unknown":  # pydicom would refuse to encode with it: patch the value in
        data = data.replace(b"ISO_IR 100", b"ISO_IR 9999"[:10], 1)
    return data


def mislabelled_charset_bytes() -> bytes:
    """Bytes that are not valid in the declared character set (UTF-8 declared, Latin-1 written)."""
    study, series, frame = (generate_uid(prefix=ROOT_UID) for _ in range(3))
    ds = ct_slice(study=study, series=series, frame=frame, number=1, charset="ISO_IR 100", patient_name="Ñúñez^Ángela")
    data = dicom_bytes(ds)
    return data.replace(b"ISO_IR 100", b"ISO_IR 192", 1)


def compressed_inputs() -> dict[str, bytes]:
    """Compressed files from pydicom's bundled test data, with and without a decoder installed.

    Keys name what the file is; ``nodecoder_*`` is a transfer syntax no installed pydicom
    plugin decodes (MPEG-2 video), the others have one (pylibjpeg's libjpeg and openjpeg plugins).
    """
    from pydicom.data import get_testdata_file
    from pydicom.uid import MPEG2MPML, HTJ2KLossless

    out: dict[str, bytes] = {}
    for key, name, relabel in (
        ("j2k", "MR_small_jp2klossless.dcm", None),
        ("jpegls", "MR_small_jpeg_ls_lossless.dcm", None),
        ("jpeg_lossless_sc", "SC_rgb_jpeg_gdcm.dcm", None),
        # A JPEG 2000 code stream is valid HTJ2K content; only the label changes.
        ("htj2k", "MR_small_jp2klossless.dcm", HTJ2KLossless),
        # Labelled MPEG-2 video, which nothing installed decodes: the file must be refused, not guessed at.
        ("nodecoder_mpeg2", "SC_rgb_jpeg_gdcm.dcm", MPEG2MPML),
    ):
        path = get_testdata_file(name)
        assert path is not None, f"pydicom test file {name} missing"
        ds = pydicom.dcmread(path)
        if relabel is not None:
            ds.file_meta.TransferSyntaxUID = relabel
        # Our PHI, and an instance UID of its own (two test files share one).
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, BIRTH_DATE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix=ROOT_UID)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out[key] = buffer.getvalue()
    return out


def decoder_available(transfer_syntax: str) -> bool:
    """Whether any installed pydicom plugin decodes ``transfer_syntax``."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except NotImplementedError:
        return False


# --- byte-level mutations ------------------------------------------------------------------------


@dataclass(frozen=True)
class ElementSpan:
    """Where one top-level data element of an explicit VR little endian file sits."""

    offset: int  # first byte of the tag
    tag: int
    vr: str
    length_offset: int
    length_size: int


def element_spans(data: bytes) -> list[ElementSpan]:
    """Top-level data set elements (not the file meta) of an explicit VR LE Part 10 file."""
    ds = pydicom.dcmread(io.BytesIO(data), defer_size=None)
    spans = []
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset converts every element; keys do not)
        raw = ds.get_item(tag)
        vr = str(raw.VR)
        header = 12 if vr in LONG_VRS else 8
        offset = int(getattr(raw, "value_tell")) - header  # noqa: B009 (a raw element; typed as a DataElement)
        length_size = 4 if vr in LONG_VRS else 2
        spans.append(ElementSpan(offset, int(tag), vr, offset + (8 if vr in LONG_VRS else 6), length_size))
    return spans


def _element_offsets(data: bytes, after: int) -> list[int]:
    return [s.offset for s in element_spans(data) if s.tag > after]


def pixel_data_offset(spans: Sequence[ElementSpan], size: int) -> int:
    """Offset of the (7FE0,0010) element header (the end of the header part), or ``size``."""
    return next((s.offset for s in spans if s.tag == 0x7FE00010), size)


def truncate(data: bytes, fraction: float) -> bytes:
    """The first ``fraction`` of the file."""
    return data[: int(len(data) * fraction)]


def flip_bytes(data: bytes, header_end: int, positions: Sequence[int], masks: Sequence[int]) -> bytes:
    """XOR bytes of the header (after the preamble and ``DICM``, before ``header_end``) with ``masks``.

    Positions are taken modulo the header's length, so any integers will do.
    """
    out = bytearray(data)
    for pos, mask in zip(positions, masks, strict=False):
        index = 132 + pos % max(1, header_end - 132)  # keep "DICM" so the file still looks like DICOM
        out[index] ^= mask or 0xFF
    return bytes(out)


def wrong_vr(data: bytes, spans: Sequence[ElementSpan], index: int, vr: str) -> bytes:
    """Replace the VR of one element by ``vr`` with a header of the same size (so parsing goes on)."""
    same = [s for s in spans if (s.vr in LONG_VRS) == (vr in LONG_VRS)]
    if not same:
        return data
    span = same[index % len(same)]
    return data[: span.offset + 4] + vr.encode() + data[span.offset + 6 :]


def absurd_length(data: bytes, spans: Sequence[ElementSpan], index: int, length: int) -> bytes:
    """Set the length field of one element to ``length`` (clipped to the field's size)."""
    span = spans[index % len(spans)]
    value = length & (0xFFFF if span.length_size == 2 else 0xFFFFFFFF)
    field = value.to_bytes(span.length_size, "little")
    return data[: span.length_offset] + field + data[span.length_offset + span.length_size :]


# --- processes -----------------------------------------------------------------------------------


def env_for_subprocess(**extra: str) -> dict[str, str]:
    """The environment for a workbench subprocess (repo importable, no stray key file)."""
    env = {k: v for k, v in os.environ.items() if k != "PACS_WORKBENCH_KEY_FILE"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def kill_after(
    command: Sequence[str], delay_s: float, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> int | None:
    """Start ``command`` in a session of its own and SIGKILL it (and everything it started) after ``delay_s``.

    Jupyter kernels are started in sessions of their own, so killing the process group
    would orphan them: every descendant seen just before the kill is killed too, by pid.
    Returns the exit status when the command finished before the delay, else ``None``.
    """
    proc = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return proc.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        pass
    family = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _reap(family)
    return None


def _reap(pids: Sequence[int], timeout: float = 10.0) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(timeout=max(0.1, deadline - time.monotonic()))


def run_ok(command: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
           codes: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to completion; fail the test with its stderr when the exit status is unexpected."""
    done = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode in codes, f"{command[:4]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def temp_leftovers(*folders: Path) -> list[str]:
    """Names of temporary files (``*.tmp``, ``*-tmp``, ``*.partial``) anywhere under ``folders``."""
    found = []
    for folder in folders:
        if not folder.exists():
            continue
        for path in folder.rglob("*"):
            name = path.name
            if name.endswith((".tmp", "-tmp", ".partial", ".temp")) or ".tmp." in name:
                found.append(str(path.relative_to(folder)))
    return sorted(found)


# --- small tmpfs ---------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "2m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``folder`` for the block.

    Skips (with the reason) when mounting is not permitted, unless ``CI=true``: there a
    failure to mount fails the test.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mount, umount = shutil.which("mount"), shutil.which("umount")
    done = (
        subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       capture_output=True, text=True, check=False)
        if mount and umount
        else None
    )
    if done is None or done.returncode != 0:
        reason = "cannot mount a small tmpfs for the full-disk test: " + (
            "mount/umount not found" if done is None else (done.stderr.strip() or f"exit {done.returncode}")
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run([str(umount), "-l", str(folder)], capture_output=True, check=False)


def fill_disk(folder: Path, leave_bytes: int) -> None:
    """Write a filler file so that about ``leave_bytes`` stay free on ``folder``'s file system."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "filler.bin", "wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
