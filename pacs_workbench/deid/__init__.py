"""De-identification to DICOM PS3.15 Annex E, keyed pseudonyms, pixel cleaning and the audit."""
