"""pacs-workbench: from a PACS to a defensible predictive model.

Stages, in the order data flows through them: ``synth`` (synthetic PACS), ``pacs``
(query/retrieve), ``index`` (DICOM -> Parquet), ``cohort``, ``deid``, ``preprocess``,
``features``, ``modeling``, ``explain``; ``runner`` executes the notebooks.
"""

__version__ = "0.1.0"
