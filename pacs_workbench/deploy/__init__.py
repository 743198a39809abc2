"""Deploy stage: a validated model applied to new data (``pacs-workbench predict``, ``07_external_validation``).

* :func:`load_package` (:mod:`.package`): a model package (written by ``pacs-workbench model``,
  :mod:`pacs_workbench.radiomics.package`) verified against its manifest and opened.
* :func:`predict_cases` (:mod:`.predict`): a new cohort's preprocessed cases scored through the
  development code path (the package's own parameter files, the same rows), with refusals for
  a parameter-hash mismatch or missing features and per-case flags for data outside the
  development ranges.
* :func:`external_validation` (:mod:`.validation`): the external-validation measures of a
  labelled cohort (discrimination, calibration, recalibration, decision curve, case mix,
  TRIPOD+AI items), shown by notebook ``07_external_validation``, which ``predict --label`` runs.
* :class:`StudyScorer` / :func:`score_study` (:mod:`.score_study`): one received study scored with
  the package (series, volume, lesions by the package's U-Net, features, risk) into a DICOM SEG
  and a TID 1500 SR (:mod:`.report_sr`); ``pacs-workbench listen`` runs it on each study its
  C-STORE SCP (:mod:`.listen_scp`) completes, through a bounded queue (:mod:`.listen`), and
  sends the results on (:mod:`.listen_send`).
"""

from pacs_workbench.deploy.package import ModelPackage, PackageError, load_package, verify_manifest
from pacs_workbench.deploy.predict import PREDICTIONS_FILE, ROWS_FILE, predict_cases
from pacs_workbench.deploy.score_study import StudyScorer, score_study
from pacs_workbench.deploy.validation import TRIPOD_AI_ITEMS, external_validation, performance_table
from pacs_workbench.radiomics.plots import plot_calibration_and_decision

__all__ = [
    "PREDICTIONS_FILE",
    "ROWS_FILE",
    "TRIPOD_AI_ITEMS",
    "ModelPackage",
    "PackageError",
    "StudyScorer",
    "external_validation",
    "load_package",
    "performance_table",
    "plot_calibration_and_decision",
    "predict_cases",
    "score_study",
    "verify_manifest",
]
