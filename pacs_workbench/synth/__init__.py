"""Synthetic PACS research extract: CT studies, segmentations, EHR, reports and ground truth.

``generate(out, patients, seed)`` writes the extract described in ``OUT/README.md``;
see :mod:`pacs_workbench.synth.extract` for the layout and the ground-truth tables.
"""

from pacs_workbench.synth.extract import generate

__all__ = ["generate"]
