"""The de-identified extract the run and audit tests share (built once for tests/deid)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from pacs_workbench.core.pseudonym import generate_key
from pacs_workbench.deid.instance import dataset_bytes
from pacs_workbench.deid.run import deidentify_folder
from tests.deid.fixtures import ALICE, BOB, StudySpec, make_dose_screen, phi_strings, study_datasets, write_tree


@pytest.fixture(scope="package")
def extract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two patients (one with two studies), SEG, RTSTRUCT, a dose screen, and bad inputs."""
    root = tmp_path_factory.mktemp("deid")
    src = root / "src"
    datasets = (
        study_datasets(StudySpec(ALICE, "20200115", "ACC7781203"), dose=True, seg=True, rt=True)
        + study_datasets(StudySpec(ALICE, "20210302", "ACC7781999"))
        + study_datasets(StudySpec(BOB, "20191120", "ACC5512001"), rt=True)
    )
    write_tree(src, datasets)
    bad = src / "Kowalczyk_Beatrix_MRN4471023" / "junk"
    bad.mkdir(parents=True)
    (bad / "notes Kowalczyk.txt").write_text("not DICOM: Beatrix Kowalczyk MRN4471023")
    good = next(src.rglob("*_CT.dcm")).read_bytes()
    (bad / "truncated.dcm").write_bytes(good[: len(good) // 2])
    nodecoder = make_dose_screen(StudySpec(BOB, "20191120", "ACC5512001"), rgb=False)
    nodecoder.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\x00" * 60 + b"\xff\xd9"])
    nodecoder["PixelData"].VR = "OB"
    nodecoder.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.70")
    (bad / "lossless.dcm").write_bytes(dataset_bytes(nodecoder))
    key = generate_key(root / "project.key")
    phi = root / "phi.txt"
    phi.write_text("\n".join(phi_strings()) + "\n")
    dst = root / "dst"
    summary = deidentify_folder(src, dst, key_file=key, mapping=root / "escrow.csv", workers=2, progress=False)
    return {"root": root, "src": src, "dst": dst, "key": key, "phi": phi, "summary": summary}  # type: ignore[dict-item]
