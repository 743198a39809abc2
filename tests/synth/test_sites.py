"""The external synthetic site: another vendor mix and another scanner calibration, same outcome model."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pacs_workbench.synth import generate
from pacs_workbench.synth.common import derive_rng
from pacs_workbench.synth.imaging import render_series
from pacs_workbench.synth.patients import plan_cohort
from pacs_workbench.synth.sites import SITES, get_site


def _vendor_shares(site: str, seed: int, n: int = 300) -> dict[str, float]:
    plans = [p for p in plan_cohort(n, seed, SITES[site]) if p.has_imaging]
    counts = Counter(p.studies[0].scanner.manufacturer for p in plans)
    return {vendor: count / len(plans) for vendor, count in counts.items()}


def test_external_site_has_another_vendor_mix() -> None:
    development, external = _vendor_shares("development", 0), _vendor_shares("external", 1)
    # The development site's main rooms (Siemens Definition AS+, GE Revolution) hardly refer externally.
    assert external["Philips"] > development["Philips"] + 0.05
    assert external.get("TOSHIBA", 0) + external.get("Canon Medical Systems", 0) > (
        development.get("TOSHIBA", 0) + development.get("Canon Medical Systems", 0) + 0.03
    )
    assert sum(abs(external.get(k, 0) - development.get(k, 0)) for k in {*development, *external}) > 0.2


def test_external_calibration_shifts_and_scales_hu() -> None:
    plan = plan_cohort(2, 7)[0]
    study = plan.studies[0]
    external = SITES["external"]

    def render(protocol: object) -> np.ndarray:
        rng = derive_rng(plan.seed, 2, plan.index, study.index)
        return render_series(plan.anatomy, list(plan.nodules), list(study.diameters), protocol,  # type: ignore[arg-type]
                             study.pose, study.z_center, rng).hu  # fmt: skip

    base = render(study.protocol)
    shifted = render(dataclasses.replace(study.protocol, hu_shift=external.hu_shift, hu_gain=external.hu_gain))
    tissue = (base > 0) & (base < 100)
    expected = float(np.median(base[tissue])) * external.hu_gain + external.hu_shift
    assert float(np.median(shifted[tissue] - base[tissue])) == pytest.approx(expected, abs=1.0)
    air = base < -950
    assert float(np.median(shifted[air] - base[air])) == pytest.approx(-1000 * external.hu_gain + external.hu_shift,
                                                                       abs=3.0)  # fmt: skip


def test_site_choices_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown site 'elsewhere'"):
        get_site("elsewhere")
    with pytest.raises(ValueError, match="only CT"):
        generate(tmp_path / "mr", patients=1, modality="MR", site="external", progress=False)
    assert not (tmp_path / "mr").exists() or not any((tmp_path / "mr").iterdir())
