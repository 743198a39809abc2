"""Sending a scored study's SEG and SR to a PACS: C-STORE to ``dimse://AET@HOST:PORT`` or STOW-RS to DICOMweb."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pydicom

from pacs_workbench.dicom.net.dicomweb import dicomweb_client
from pacs_workbench.dicom.net.dimse import associate, new_ae
from pacs_workbench.dicom.net.pacs import PacsError, PacsUrl, parse_pacs_url

#: (0008,0016) SOP Class UIDs the listener writes: Segmentation Storage, Comprehensive 3D SR Storage.
RESULT_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34")


def send_results(
    files: Sequence[str | os.PathLike[str]], url: str | PacsUrl, *, calling_aet: str = "PACSWB", timeout: float = 30.0
) -> int:
    """Store ``files`` at ``url``; returns the number stored.

    Raises
    ------
    PacsError
        The PACS refused the association or an instance.
    """
    pacs = parse_pacs_url(url)
    datasets = [pydicom.dcmread(f) for f in files]
    if pacs.protocol == "dicomweb":
        dicomweb_client(pacs, timeout=timeout).store_instances(datasets)
        return len(datasets)
    ae = new_ae(calling_aet, timeout)
    for uid in RESULT_CLASSES:
        ae.add_requested_context(uid)
    assoc = associate(ae, pacs, None)
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if status is None or int(getattr(status, "Status", 0xFFFF)) != 0x0000:
                raise PacsError(f"{pacs}: C-STORE refused (status {getattr(status, 'Status', 'none')})")
    finally:
        assoc.release()
    return len(datasets)
