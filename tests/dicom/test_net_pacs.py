"""Tests for pacs_workbench.dicom.net.pacs: PACS URLs and the rate limit (no server)."""

from __future__ import annotations

import pytest

from pacs_workbench.dicom.net.pacs import RateLimiter, is_pacs_url, parse_pacs_url


def test_parse_pacs_url_forms() -> None:
    web = parse_pacs_url("dicomweb+http://127.0.0.1:8042/dicom-web/")
    assert (web.protocol, web.url, web.port) == ("dicomweb", "http://127.0.0.1:8042/dicom-web", 8042)
    dimse = parse_pacs_url("dimse://ORTHANC@example:104")
    assert (dimse.protocol, dimse.called_aet, dimse.host, dimse.port) == ("dimse", "ORTHANC", "example", 104)
    assert str(dimse) == "dimse://ORTHANC@example:104"
    for bad in ("http://x:1/dicom-web", "dimse://host:104", "dimse://A@host", "dimse://WAYTOOLONGAETITLE17@h:1"):
        with pytest.raises(ValueError):
            parse_pacs_url(bad)
    assert is_pacs_url("dicomweb+https://h/x") and not is_pacs_url("/data/dicom")


def test_rate_limiter_counts_every_request() -> None:
    limiter = RateLimiter(1000.0)
    for _ in range(5):
        limiter.acquire()
    assert limiter.count == 5
    assert limiter.interval == pytest.approx(0.001)
    assert RateLimiter(None).interval == 0.0
