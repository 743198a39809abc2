"""Known PHI strings and their search in bytes.

:func:`usable_term` decides which strings are specific enough to search;
:func:`build_matcher` compiles them (UTF-8 and Latin-1, case-insensitive, between
non-alphanumeric boundaries) into a :class:`PhiMatcher`; :func:`search_file` searches a
file's bytes, with only long terms inside bulk values (:func:`bulk_ranges`), where
short strings occur by chance.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacs_workbench.deid.text import GENERIC_WORDS, phi_variants

MIN_TERM = 4


MIN_BULK_TERM = 8


MIN_NUMERIC_TERM = 6


BULK_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})


#: Values that stand in for a name or an ID without being one (test data, placeholders):
#: not searched, or they would be "found" in every file.
PLACEHOLDER_WORDS = frozenset(
    {
        "anon", "anonymized", "anonymous", "deleted", "demo", "doctor", "dummy", "example", "family", "first",
        "given", "here", "last", "name", "none", "null", "observer", "operator", "other", "patient", "phantom",
        "physician", "removed", "sample", "test", "tester", "text", "unknown", "verifying",
    }
)  # fmt: skip


_BOUND_L = rb"(?<![a-z0-9])"


_BOUND_R = rb"(?![a-z0-9])"


def _trie_regex(words: Iterable[bytes]) -> bytes:
    """One regex alternation for many byte strings, as a trie (fast for thousands of terms)."""
    trie: dict[Any, Any] = {}
    for word in words:
        node = trie
        for byte in word:
            node = node.setdefault(byte, {})
        node[None] = {}

    def build(node: dict[Any, Any]) -> bytes:
        end = None in node
        branches = [
            re.escape(bytes([b])) + build(child)
            for b, child in sorted((k, v) for k, v in node.items() if k is not None)
        ]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        if end:
            return b"(?:" + body + b")?"
        return body

    return build(trie)


@dataclass
class PhiMatcher:
    """Finds known PHI in bytes; ``kinds`` maps each lower-cased encoded term to its kind."""

    pattern: re.Pattern[bytes] | None
    bulk_pattern: re.Pattern[bytes] | None
    kinds: dict[bytes, str]

    def find(self, data: bytes, *, bulk: bool = False) -> list[tuple[int, str]]:
        """``(offset, kind)`` of each PHI term in ``data`` (case-insensitive)."""
        pattern = self.bulk_pattern if bulk else self.pattern
        if pattern is None or not data:
            return []
        lowered = data.lower()
        return [(m.start(), self.kinds.get(m.group(0), "phi")) for m in pattern.finditer(lowered)]


def usable_term(term: str) -> bool:
    """Whether a PHI term is specific enough to search: four or more characters (six for digits
    alone), three of them letters or digits, and not a placeholder or generic word."""
    text = term.strip()
    low = text.lower()
    # Short digit runs (an ID fragment such as "4374") occur by chance in coordinates and
    # measurements; whole IDs, dates and phone numbers are searched in their longer forms.
    if text.isdigit() and len(text) < MIN_NUMERIC_TERM:
        return False
    return (
        len(text) >= MIN_TERM
        and sum(c.isalnum() for c in text) >= 3
        and low not in PLACEHOLDER_WORDS
        and low not in GENERIC_WORDS
    )


def build_matcher(terms: dict[str, str]) -> PhiMatcher:
    """A :class:`PhiMatcher` for ``{term: kind}`` (UTF-8 and Latin-1 encodings)."""
    kinds: dict[bytes, str] = {}
    for term, kind in terms.items():
        for encoding in ("utf-8", "latin-1"):
            try:
                encoded = term.lower().encode(encoding)
            except UnicodeEncodeError:
                continue
            if len(encoded) >= MIN_TERM:
                kinds.setdefault(encoded, kind)
    if not kinds:
        return PhiMatcher(None, None, {})
    words = sorted(kinds)
    pattern = re.compile(_BOUND_L + b"(?:" + _trie_regex(words) + b")" + _BOUND_R)
    long_words = [w for w in words if len(w) >= MIN_BULK_TERM]
    bulk = re.compile(_BOUND_L + b"(?:" + _trie_regex(long_words) + b")" + _BOUND_R) if long_words else None
    return PhiMatcher(pattern, bulk, kinds)


def phi_terms_from_list(path: str | os.PathLike[str]) -> dict[str, str]:
    """Terms (with variants) from a text file of known PHI strings, one a line."""
    terms: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        for variant in [value, *phi_variants(value, "auto", min_component=MIN_TERM)]:
            if usable_term(variant):
                terms.setdefault(variant, "listed")
    return terms


_MATCHERS: dict[str, PhiMatcher] = {}


def matcher_for(terms: tuple[tuple[str, str], ...]) -> PhiMatcher:
    digest = hashlib.sha256(json.dumps(terms).encode()).hexdigest()
    matcher = _MATCHERS.get(digest)
    if matcher is None:
        _MATCHERS.clear()
        matcher = build_matcher(dict(terms))
        _MATCHERS[digest] = matcher
    return matcher


def bulk_ranges(ds: Any, size: int) -> list[tuple[int, int]]:
    """Byte ranges of top-level bulk values (Pixel Data, other OB/OW) in the file."""
    elements = []
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        tell = getattr(raw, "value_tell", None)
        if tell is not None:
            elements.append((int(tell), tag, raw))
    elements.sort(key=lambda e: e[0])
    out = []
    for i, (tell, tag, raw) in enumerate(elements):
        length = getattr(raw, "length", None)
        vr = getattr(raw, "VR", None)
        if length is None or (vr not in BULK_VRS and tag != 0x7FE00010):
            continue
        if length == 0xFFFFFFFF:  # encapsulated: runs to the next element (or the end)
            end = elements[i + 1][0] - 12 if i + 1 < len(elements) else size
        else:
            end = tell + int(length)
        if end - tell >= 256:
            out.append((tell, min(end, size)))
    return out


def read_dicom(data: bytes) -> Any:
    """The file parsed by pydicom (warnings silenced); raises what pydicom raises."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def search_file(matcher: PhiMatcher, data: bytes, ds: Any) -> Iterator[tuple[int, str]]:
    """``(offset, kind)`` of each PHI term in a file's bytes, in file order.

    Bytes outside bulk values (:func:`bulk_ranges` of the parsed ``ds``, when there is
    one) are searched for every term, bytes inside them for the long terms only.
    """
    cursor = 0
    for start, end in sorted(bulk_ranges(ds, len(data)) if ds is not None else []):
        for offset, kind in matcher.find(data[cursor:start]):
            yield cursor + offset, kind
        for offset, kind in matcher.find(data[start:end], bulk=True):
            yield start + offset, kind
        cursor = end
    for offset, kind in matcher.find(data[cursor:]):
        yield cursor + offset, kind
