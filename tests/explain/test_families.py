"""Feature families from pyradiomics names and the clinical inputs."""

from __future__ import annotations

from pacs_workbench.explain.families import feature_family


def test_feature_families() -> None:
    assert feature_family("original_shape_Maximum3DDiameter") == ("shape", "shape", "original")
    assert feature_family("wavelet-LLH_firstorder_Entropy") == ("first order", "firstorder", "wavelet-LLH")
    assert feature_family("log-sigma-1-0-mm-3D_glszm_ZoneEntropy")[0] == "texture"
    for cls in ("glcm", "glrlm", "glszm", "gldm", "ngtdm"):
        assert feature_family(f"original_{cls}_X")[0] == "texture"
    assert feature_family("smoking=current", clinical={"smoking=current"})[0] == "clinical"
    assert feature_family("lesion_count") == ("other", "", "")
