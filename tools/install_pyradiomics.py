"""Install pyradiomics 3.1.0 from its source distribution.

Two defects of the published 3.1.0 sdist are worked around here:

* its metadata says version 3.0.1a1, so pip rejects it when asked for
  ``pyradiomics==3.1.0`` ("inconsistent version");
* it omits the C headers ``cmatrices.h`` and ``cshape.h``; the C sources are
  byte-identical to 3.0.1, whose sdist carries the headers.

Both archives are fetched from pip's configured index and checked against pinned
SHA-256 digests; the tree is then built with ``--no-build-isolation`` (its build
needs numpy and versioneer already installed). Runtime dependencies come from the
project's constraints file, not from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDISTS = {
    "pyradiomics-3.1.0.tar.gz": "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4",
    "pyradiomics-3.0.1.tar.gz": "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
}
HEADERS = ("cmatrices.h", "cshape.h")


def index_url() -> str:
    """Return the simple-index URL pip uses (environment, pip config, or pip's default)."""
    url = os.environ.get("PIP_INDEX_URL", "")
    if not url:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
            check=False,
        )
        url = out.stdout.strip() if out.returncode == 0 else ""
    if not url:
        from pip._internal.models.index import PyPI

        url = PyPI.simple_url
    return url.rstrip("/") + "/"


def fetch(filename: str, sha256: str, folder: Path) -> Path:
    """Download ``filename`` from the index into ``folder`` and verify its digest."""
    request = urllib.request.Request(
        index_url() + "pyradiomics/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    entry = next(f for f in files if f["filename"] == filename)
    target = folder / filename
    with urllib.request.urlopen(entry["url"], timeout=300) as response:
        target.write_bytes(response.read())
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{filename}: SHA-256 {digest} does not match the pinned {sha256}")
    with tarfile.open(target) as archive:
        archive.extractall(folder, filter="data")
    return folder / filename.removesuffix(".tar.gz")


def installed() -> bool:
    """True when ``radiomics`` imports with its C extensions."""
    probe = subprocess.run(
        [sys.executable, "-c", "import radiomics._cmatrices, radiomics._cshape"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def main() -> int:
    if installed():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trees = [fetch(name, digest, folder) for name, digest in SDISTS.items()]
        for header in HEADERS:
            shutil.copy(trees[1] / "radiomics" / "src" / header, trees[0] / "radiomics" / "src" / header)
        return subprocess.call(
            [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", str(trees[0])]
        )


if __name__ == "__main__":
    sys.exit(main())
