"""Known PHI terms and their search in bytes (pacs_workbench.deid.phi_match)."""

from __future__ import annotations

from pacs_workbench.deid.phi_match import build_matcher, search_file, usable_term


def test_short_digit_fragments_are_not_searched_as_phi() -> None:
    # An ID fragment must not flag coordinates such as (0020,0032) "-139.4374".
    assert not usable_term("4374")
    assert usable_term("H1234567") and usable_term("19560312") and usable_term("KOWALCZYK")
    matcher = build_matcher({t: "id" for t in ["4374", "H1234567"] if usable_term(t)})
    assert matcher.find(b"-43.9043\\-139.4374") == []
    assert matcher.find(b"MRN H1234567 ") != []


def test_search_file_finds_terms_in_file_order_and_only_long_ones_in_bulk_values() -> None:
    matcher = build_matcher({"KOWALCZYK": "name", "H1234567": "id", "Beatrix": "name"})
    data = b"head KOWALCZYK " + b"x" * 10 + b" Beatrix " + b"y" * 300
    assert [(offset, kind) for offset, kind in search_file(matcher, data, None)] == [(5, "name"), (26, "name")]
    assert matcher.find(b"a Beatrix b") and not matcher.find(b"a Beatrix b", bulk=True)  # 7 < 8 characters
    assert matcher.find(b"a H1234567 b", bulk=True) == [(2, "id")]
