"""pacs-workbench: from a PACS to a defensible predictive model.

Stages, in the order data flows through them, one subpackage each: ``cohort`` (index the DICOM
extract or PACS into Parquet, link the EHR and reports, apply criteria; notebook 01), ``deid``
(PS3.15 de-identification and its audit; 02), ``preprocess`` (volumes and masks with geometry
QC; 03), ``radiomics`` (features and validated risk models; 04) and ``explain`` (SHAP review;
05). Beneath them: ``core`` (atomic files, parameters, pseudonyms, executor, formatting) and
``dicom`` (reading, attribute coercion, DICOMweb/DIMSE). ``synth`` writes a synthetic PACS,
``runner`` executes the notebooks, ``cli`` is the ``pacs-workbench`` command.
"""

__version__ = "0.1.0"
