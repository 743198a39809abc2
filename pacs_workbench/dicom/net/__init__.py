"""Query and retrieve from a PACS: DICOMweb and DIMSE.

Researchers rarely get a folder; they query a PACS. This package speaks both protocols
they meet, behind one URL form (:mod:`~pacs_workbench.dicom.net.pacs`):

- ``dicomweb+http://HOST:PORT/dicom-web`` (or ``dicomweb+https://...``): QIDO-RS search
  at study, series and instance level, WADO-RS metadata and retrieve (``dicomweb-client``,
  :mod:`~pacs_workbench.dicom.net.dicomweb`);
- ``dimse://AET@HOST:PORT``: C-ECHO, C-FIND at study, series and image level, C-GET or
  C-MOVE retrieve (``pynetdicom``, :mod:`~pacs_workbench.dicom.net.dimse`).

Query results (:mod:`~pacs_workbench.dicom.net.query`) are rows keyed by DICOM keyword
(``StudyInstanceUID``, ``Modality``, ...), the same columns the folder crawl writes, so a
cohort can be chosen from PACS metadata alone and only the chosen series fetched with
:func:`~pacs_workbench.dicom.net.retrieve.retrieve_series`.

Being polite to a clinical PACS is built in: a shared rate limit (requests per second)
covers every HTTP request and DIMSE operation, retrieval runs on a bounded number of
connections, and QIDO-RS results are paged (``limit``/``offset``).

Retrieval is resumable. Each series gets a folder ``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/``
with one ``<SOPInstanceUID>.dcm`` per instance (written to a temp file and renamed, so
a file on disk is always whole) and a ``manifest.json`` listing the SOP Instance UIDs
the PACS reported (:mod:`~pacs_workbench.dicom.net.store`). A rerun compares the manifest
with the files on disk and asks the PACS only for what is missing; a complete series costs
no request at all. Failures (refused or dropped connections, timeouts, failed
sub-operations) are retried with exponential backoff; series still incomplete after the
last attempt are listed in the summary, never skipped silently.
"""
