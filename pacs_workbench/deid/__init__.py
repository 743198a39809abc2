"""De-identification: DICOM PS3.15 Annex E with keyed pseudonyms, pixel cleaning and an independent audit.

Backs notebook ``02_deid_audit`` and the ``pacs-workbench deid`` and ``audit`` commands.

* :func:`deidentify_folder` (:mod:`.run`): every file of a source folder through the engine, in
  parallel, written atomically to DST with ``deid_log.parquet``, ``deid_actions.parquet`` and
  ``deid_run.json``; refused files go to the quarantine. :class:`DeidRunError` (and
  :class:`OptionsError` from :mod:`.profile`) are the errors a user can fix.
* The engine (:mod:`.engine`) applies the profile of :mod:`.profile` to the encoded bytes of one
  instance (read by :mod:`pacs_workbench.dicom.raw`): keyed UIDs, pseudonyms and date offsets in
  :mod:`.keyed`, value encoding and markers in :mod:`.encoding`, the instance checks in
  :mod:`.instance`, text scrubbing in :mod:`.text`, burned-in text in :mod:`.pixels`.
* :func:`audit_folder` (:mod:`.audit`, per-file checks in :mod:`.audit_checks`, PHI matching in
  :mod:`.phi_match`) trusts nothing the run recorded; :func:`leaked_phi_strings` (:mod:`.leaks`)
  counts the strings of a PHI list still found in any folder.
* The notebook's tables and figures (:mod:`.report`): outcomes, actions, options, quarantine,
  masked images, the audit verdict and the cohort's coverage. They never show a PHI value.
* :func:`masked_image_viewer` (:mod:`.viewer`): browse the de-identified images checked for
  burned-in text in JupyterLab, the blanked boxes outlined.
"""

from pacs_workbench.deid.audit import audit_folder
from pacs_workbench.deid.leaks import leaked_phi_strings
from pacs_workbench.deid.profile import OptionsError
from pacs_workbench.deid.report import (
    action_summary,
    audit_table,
    cohort_coverage,
    masked_images,
    options_table,
    outcome_table,
    plot_actions,
    plot_masked_thumbnails,
    quarantine_table,
    save_audit_summary,
)
from pacs_workbench.deid.run import DeidRunError, DeidWriteError, deidentify_folder
from pacs_workbench.deid.viewer import masked_image_viewer

__all__ = [
    "DeidRunError",
    "DeidWriteError",
    "OptionsError",
    "action_summary",
    "audit_folder",
    "audit_table",
    "cohort_coverage",
    "deidentify_folder",
    "leaked_phi_strings",
    "masked_image_viewer",
    "masked_images",
    "options_table",
    "outcome_table",
    "plot_actions",
    "plot_masked_thumbnails",
    "quarantine_table",
    "save_audit_summary",
]
