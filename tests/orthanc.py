"""A real Orthanc PACS on loopback for the tests.

``orthanc_server`` (session-scoped pytest fixture) starts Orthanc with a generated
configuration in a temp dir: HTTP and DICOM ports picked free, the DICOMweb plugin
on, our AE title declared in ``DicomModalities`` (so C-MOVE can send back to the
storage SCP the tests run), storage and index in the temp dir, remote access and
authentication off. It loads a small synthetic extract through the REST API and
yields an :class:`OrthancServer` with its URLs. In CI (``CI=true``) a missing Orthanc
is a failure, elsewhere a skip.

``start_orthanc`` is the same as a context manager, for tests that need their own
server (e.g. one they stop on purpose).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

ORTHANC_AET = "ORTHANC"
OUR_AET = "PACSWB"
BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc", "/usr/local/sbin/Orthanc", "/usr/local/bin/Orthanc")
PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/lib/x86_64-linux-gnu/orthanc/plugins/libOrthancDicomWeb.so*",
)


def find_orthanc() -> str | None:
    """Path of the Orthanc binary (``ORTHANC_BINARY`` overrides), or ``None``."""
    env = os.environ.get("ORTHANC_BINARY")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("Orthanc")
    if found:
        return found
    return next((c for c in BINARY_CANDIDATES if os.access(c, os.X_OK)), None)


def find_dicomweb_plugin() -> str | None:
    """Path of the DICOMweb plugin (``ORTHANC_DICOMWEB_PLUGIN`` overrides), or ``None``."""
    env = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if env:
        return env if Path(env).is_file() else None
    for pattern in PLUGIN_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def require_orthanc() -> tuple[str, str]:
    """Binary and plugin paths; fail in CI, skip elsewhere, when either is missing."""
    binary, plugin = find_orthanc(), find_dicomweb_plugin()
    if binary and plugin:
        return binary, plugin
    reason = (
        "Orthanc with the DICOMweb plugin is not installed "
        "(apt-get install orthanc orthanc-dicomweb)"
        f" [binary: {binary or 'missing'}, plugin: {plugin or 'missing'}]"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pytest.skip raises


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OrthancServer:
    """A running Orthanc and how to reach it."""

    workdir: Path
    http_port: int
    dicom_port: int
    our_aet: str
    our_port: int
    binary: str = ""
    plugin: str = ""
    data_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    uploaded: list[Path] = field(default_factory=list)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The workbench's DICOMweb PACS URL."""
        return f"dicomweb+http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def dimse_url(self) -> str:
        """The workbench's DIMSE PACS URL."""
        return f"dimse://{ORTHANC_AET}@127.0.0.1:{self.dicom_port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "orthanc.log"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop Orthanc (idempotent)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def upload(self, files: list[Path]) -> None:
        """Store DICOM files through ``POST /instances``."""
        with requests.Session() as session:
            for path in files:
                response = session.post(f"{self.rest_url}/instances", data=path.read_bytes(), timeout=60)
                response.raise_for_status()
                self.uploaded.append(path)


def write_config(server: OrthancServer, plugin: str) -> Path:
    """The generated Orthanc configuration (JSON) for ``server``."""
    storage = server.workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "pacs-workbench-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": server.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SslEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AET,
        "DicomPort": server.dicom_port,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": True,
        "DicomModalities": {
            "workbench": {
                "AET": server.our_aet,
                "Host": "127.0.0.1",
                "Port": server.our_port,
                "AllowEcho": True,
                "AllowFind": True,
                "AllowGet": True,
                "AllowMove": True,
                "AllowStore": True,
            }
        },
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "LimitFindResults": 0,
        "LimitFindInstances": 0,
        "HttpThreadsCount": 8,
        "ConcurrentJobs": 2,
        "SaveJobs": False,
        "StableAge": 2,
        "MaximumStorageSize": 0,
    }
    path = server.workdir / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def launch(server: OrthancServer, binary: str, plugin: str, timeout: float = 60.0) -> None:
    """Start (or restart) Orthanc for ``server`` and wait until its REST API answers."""
    config = write_config(server, plugin)
    with server.log_file.open("ab") as log:
        server.process = subprocess.Popen(
            [binary, f"--logfile={server.log_file}", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=server.workdir,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_file.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"Orthanc exited with {server.process.returncode}:\n{tail}")
        with contextlib.suppress(requests.RequestException):
            response = requests.get(f"{server.rest_url}/plugins/dicom-web", timeout=2)
            if response.status_code == 200:
                return
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s (log: {server.log_file})")


def synthetic_files(out: Path) -> list[Path]:
    """DICOM files to load: the package's synthetic extract (2 patients) when it exists."""
    try:
        from pacs_workbench import synth
    except ImportError:
        synth = None  # type: ignore[assignment]
    generate = getattr(synth, "generate", None)
    if generate is not None:
        generate(out, patients=2, seed=0, progress=False)
        return sorted((out / "dicom").rglob("*.dcm"))
    return _minimal_files(out / "dicom")


def _minimal_files(out: Path) -> list[Path]:
    """Two patients, one CT study each (an axial series of 4 slices and a localizer)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    files: list[Path] = []
    for p in range(2):
        study = generate_uid()
        for s, (desc, n, kernel) in enumerate([("CHEST W/O 1.0 B70f", 4, "B70f"), ("TOPOGRAM", 1, "T20f")]):
            series = generate_uid()
            for i in range(n):
                ds = Dataset()
                ds.file_meta = FileMetaDataset()
                ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
                ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.SOPClassUID = CTImageStorage
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
                ds.PatientName = f"Test^Patient{p}"
                ds.PatientID = f"TEST{p:04d}"
                ds.PatientBirthDate = "19600101"
                ds.StudyInstanceUID = study
                ds.SeriesInstanceUID = series
                ds.StudyDate = "20200101"
                ds.AccessionNumber = f"ACC{p:04d}"
                ds.Modality = "CT"
                ds.Manufacturer = "SIEMENS"
                ds.SeriesDescription = desc
                ds.ConvolutionKernel = kernel
                ds.SliceThickness = 1.0
                ds.SeriesNumber = s + 1
                ds.InstanceNumber = i + 1
                ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if n > 1 else "LOCALIZER"]
                ds.Rows = ds.Columns = 16
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.BitsAllocated = ds.BitsStored = 16
                ds.HighBit = 15
                ds.PixelRepresentation = 1
                ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
                ds.PixelData = np.full((16, 16), i, dtype=np.int16).tobytes()
                path = out / f"p{p}" / f"s{s}" / f"{i:04d}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
                files.append(path)
    return files


@contextlib.contextmanager
def start_orthanc(workdir: Path, files: list[Path] | None = None) -> Iterator[OrthancServer]:
    """Run an Orthanc in ``workdir`` (loaded with ``files``) for the duration of the block."""
    binary, plugin = require_orthanc()
    workdir.mkdir(parents=True, exist_ok=True)
    server = OrthancServer(
        workdir=workdir,
        http_port=free_port(),
        dicom_port=free_port(),
        our_aet=OUR_AET,
        our_port=free_port(),
        binary=binary,
        plugin=plugin,
    )
    launch(server, binary, plugin)
    try:
        if files:
            server.upload(files)
        yield server
    finally:
        server.stop()


def restart(server: OrthancServer) -> None:
    """Start a stopped server again on the same ports and storage."""
    launch(server, server.binary, server.plugin)


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A session-wide Orthanc loaded with the synthetic extract (see module docstring)."""
    require_orthanc()
    data = tmp_path_factory.mktemp("orthanc_data")
    files = synthetic_files(data)
    with start_orthanc(tmp_path_factory.mktemp("orthanc"), files) as server:
        server.data_dir = data
        yield server


_EXTRACTS: dict[tuple[int, int], Path] = {}


def cached_extract(patients: int = 4, seed: int = 3) -> Path:
    """A synthetic extract generated once per test process (shared by several test modules)."""
    import atexit
    import tempfile

    from pacs_workbench.synth import generate

    key = (patients, seed)
    if key not in _EXTRACTS:
        out = Path(tempfile.mkdtemp(prefix="pacswb-extract-"))
        atexit.register(shutil.rmtree, out, True)
        generate(out, patients=patients, seed=seed, progress=False)
        _EXTRACTS[key] = out
    return _EXTRACTS[key]
