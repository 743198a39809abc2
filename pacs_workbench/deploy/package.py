"""Opening a model package: every file checked against its manifest before anything is loaded.

A package (written by :mod:`pacs_workbench.radiomics.package`) is opened only when its
``manifest.json`` lists exactly the files in the folder and each file's SHA-256 matches; a
package whose frozen radiomics parameters no longer hash to the digest recorded at training is
refused as well. The fitted pipeline is unpickled only after these checks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib

from pacs_workbench.core.files import sha256_file
from pacs_workbench.radiomics.package import MANIFEST_FILE, PACKAGE_FORMAT
from pacs_workbench.radiomics.params import load_radiomics_params, params_digest


class PackageError(ValueError):
    """A package or an input that the package cannot be applied to (the message says why)."""


@dataclass
class ModelPackage:
    """An opened, verified package."""

    folder: Path
    description: dict[str, Any]
    features: list[dict[str, Any]]
    pipeline: Any
    recalibrator: Any
    manifest: dict[str, str] = field(default_factory=dict)

    @property
    def input_columns(self) -> list[str]:
        """The columns the pipeline reads, in order."""
        return list(self.description["input_columns"])

    @property
    def model_id(self) -> str:
        """The model's identification: SHA-256 of its manifest (which hashes every file), 16 hex digits."""
        return sha256_file(self.folder / MANIFEST_FILE)[:16]

    @property
    def segmentation(self) -> dict[str, Any] | None:
        """The packaged lesion U-Net (``file``, ``settings``, ``checkpoint_sha256``), or ``None``."""
        info = self.description.get("segmentation")
        return dict(info) if info else None

    @property
    def radiomics_params_file(self) -> Path | None:
        """The package's own pyradiomics parameter file (``None``: a package made from a table alone)."""
        info = self.description.get("radiomics_params")
        return self.folder / info["file"] if info else None


def verify_manifest(folder: Path) -> dict[str, str]:
    """The manifest's file digests, after checking them against the folder; raises :class:`PackageError`."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise PackageError(f"{folder.name}: no {MANIFEST_FILE}: not a model package (or an unfinished one)")
    try:
        listed: dict[str, str] = dict(json.loads(manifest_path.read_text(encoding="utf-8"))["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PackageError(f"{folder.name}: {MANIFEST_FILE} cannot be read ({type(exc).__name__})") from None
    present = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith(".")
    }
    problems = [f"{name} missing" for name in sorted(set(listed) - present)]
    problems += [f"{name} not in the manifest" for name in sorted(present - set(listed))]
    problems += [
        f"{name} changed (SHA-256 differs)"
        for name in sorted(set(listed) & present)
        if sha256_file(folder / name) != listed[name]
    ]
    if problems:
        raise PackageError(
            f"package does not match its manifest ({len(problems)} problem(s): {'; '.join(problems[:5])}); "
            "refusing to use it"
        )
    return listed


def load_package(folder: str | os.PathLike[str]) -> ModelPackage:
    """Verify and open a package folder (``model/package``).

    Raises
    ------
    PackageError
        Not a package, a manifest that does not match the files, a format this code does not
        know, or frozen radiomics parameters whose hash differs from the one recorded.
    """
    path = Path(folder)
    if not path.is_dir():
        raise PackageError(f"package folder not found: {path}")
    manifest = verify_manifest(path)
    description = json.loads((path / "package.json").read_text(encoding="utf-8"))
    if description.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"package format {description.get('format')!r} is not {PACKAGE_FORMAT}")
    info = description.get("radiomics_params")
    if info:
        digest = params_digest(load_radiomics_params(path / info["file"]))
        if digest != info["params_sha256"]:
            raise PackageError(
                f"radiomics parameter hash mismatch: the package's {info['file']} hashes to {digest[:12]}, "
                f"the model was trained with {info['params_sha256'][:12]}"
            )
    features = json.loads((path / "features.json").read_text(encoding="utf-8"))
    bundle = joblib.load(path / "pipeline.joblib")
    return ModelPackage(path, description, features, bundle["pipeline"], bundle.get("recalibrator"), manifest)
