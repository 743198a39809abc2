"""Feature families: which kind of information a model feature carries.

A pyradiomics feature ``<image type>_<class>_<feature>`` belongs to the shape, first-order or
texture family by its class (texture: GLCM, GLRLM, GLSZM, GLDM, NGTDM); the clinical model inputs
form their own family, and anything else is "other".
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pandas as pd

FAMILIES = ("shape", "first order", "texture", "clinical", "other")
TEXTURE_CLASSES = frozenset({"glcm", "glrlm", "glszm", "gldm", "ngtdm"})
SHAPE_CLASSES = frozenset({"shape", "shape2D"})


def feature_family(name: str, clinical: Collection[str] = ()) -> tuple[str, str, str]:
    """Family, feature class and image type of one model feature.

    Parameters
    ----------
    name
        A model feature: a pyradiomics name ``<image type>_<class>_<feature>`` such as
        ``original_shape_Maximum3DDiameter`` or ``wavelet-LLH_glcm_Contrast``, or a clinical column.
    clinical
        Names of the clinical model inputs (``age``, ``smoking=current``, ...).

    Returns
    -------
    tuple
        ``(family, feature_class, image_type)``; family is one of :data:`FAMILIES` (texture covers
        glcm, glrlm, glszm, gldm and ngtdm); class and image type are ``""`` when not pyradiomics.
    """
    if name in clinical:
        return "clinical", "clinical", ""
    parts = name.split("_", 2)
    if len(parts) == 3:
        image_type, cls, _ = parts
        if cls in SHAPE_CLASSES:
            return "shape", cls, image_type
        if cls == "firstorder":
            return "first order", cls, image_type
        if cls in TEXTURE_CLASSES:
            return "texture", cls, image_type
    return "other", "", ""


def describe_features(names: Sequence[str], sources: Sequence[str], clinical: Collection[str]) -> pd.DataFrame:
    """One row per model feature: ``feature``, ``source`` (TABLE column), ``family``, class, image type."""
    rows = []
    for name, source in zip(names, sources, strict=True):
        family, cls, image_type = feature_family(str(source), clinical)
        if family == "other" and name != source:
            family, cls, image_type = feature_family(str(name), clinical)
        rows.append(
            {"feature": name, "source": source, "family": family, "feature_class": cls, "image_type": image_type}
        )
    return pd.DataFrame(rows, columns=["feature", "source", "family", "feature_class", "image_type"])


def short_name(feature: str) -> str:
    """A feature name for plot labels: pyradiomics' ``original_`` prefix dropped."""
    return feature.removeprefix("original_")
