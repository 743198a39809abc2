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

The names below load their module on first use (PEP 562): ``pacs-workbench deid`` and its
worker processes then start without the notebook's tables, plots and widgets (pandas,
matplotlib, ipywidgets), which cost more than a second of every run's start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Each public name and the module of this package that defines it.
_MODULE_OF = {
    "DeidRunError": "run",
    "DeidWriteError": "run",
    "OptionsError": "profile",
    "action_summary": "report",
    "audit_folder": "audit",
    "audit_table": "report",
    "cohort_coverage": "report",
    "deidentify_folder": "run",
    "leaked_phi_strings": "leaks",
    "masked_image_viewer": "viewer",
    "masked_images": "report",
    "options_table": "report",
    "outcome_table": "report",
    "plot_actions": "report",
    "plot_masked_thumbnails": "report",
    "quarantine_table": "report",
    "save_audit_summary": "report",
}

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


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # loaded once
    return value
