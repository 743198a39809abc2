"""Apply the confidentiality profile to one DICOM instance.

:class:`Deidentifier` walks every element of an instance, to any depth, and does what
:class:`~pacs_workbench.deid.profile.Profile` says: ``X`` removes, ``Z`` empties, ``D``
puts a dummy consistent with the VR, ``U`` replaces UIDs, ``K`` keeps (a kept sequence
has its items cleaned), ``C`` cleans (dates shifted, text cleaned, AE titles
pseudonymized, sequences cleaned item by item). Attributes outside Table E.1-1 are
decided by their VR (:func:`~pacs_workbench.deid.profile.unlisted_action`: structure
retained, text cleaned, names emptied) unless on the keep-list; private elements are
kept only when safe (E.3.10-1).

It works on the encoded bytes (:mod:`~pacs_workbench.dicom.raw`): kept elements are
copied byte for byte (so Pixel Data that needs no cleaning is byte-identical), changed
ones are encoded anew, and the output is a function of key, options and input bytes
alone (no clock, no random numbers), so the same input always gives the same file.
Only images that must be checked for burned-in text go through pydicom
(:mod:`~pacs_workbench.deid.pixels`). Values are decoded and encoded by
:mod:`~pacs_workbench.deid.encoding`, the instance is checked by
:mod:`~pacs_workbench.deid.instance`, and the keyed replacements below are
:mod:`~pacs_workbench.deid.keyed`.

Keyed and consistent, so files de-identified apart still fit together:

* (0010,0020) Patient ID and (0010,0010) Patient's Name become
  ``pseudonymize(key, PatientID)`` (the same pseudonym the EHR and report stages
  compute from the MRN); (0008,0050) Accession Number becomes
  ``pseudonymize(key, AccessionNumber, "accession")``.
* UIDs become ``2.25.<decimal of the first 128 bits of HMAC(key, uid)>`` (at most 44
  characters, no leading zeros): the same UID always maps to the same new UID, in
  every file, sequence and the file meta; well-known UIDs (SOP classes, transfer
  syntaxes, coding schemes: anything in the DICOM UID registry) are never changed.
* Dates move by one keyed offset per patient, :data:`DATE_OFFSET_MIN_DAYS` to
  :data:`DATE_OFFSET_MAX_DAYS` days into the past, applied to every DA and DT value
  kept (multi-valued and safe private ones included), so the intervals between a
  patient's studies are exact. Times (TM) move with their dates by whole days, so they
  do not change. (0010,1010) Patient's Age above 89 years becomes ``090Y`` (HIPAA Safe
  Harbor).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from pacs_workbench.deid.encoding import (
    BINARY_DUMMY,
    BINARY_VRS,
    DUMMY_BY_VR,
    DUMMY_TEXT,
    PLAIN_VRS,
    TEXT_VRS,
    InstanceContext,
    copy_element,
    decode_values,
    element_bytes,
    encode_values,
    marker_elements,
    truncate,
)
from pacs_workbench.deid.instance import (
    HEADER_TAGS,
    TRANSCODED_NOTE,
    DeidError,
    HeaderView,
    big_endian_to_little,
    check_instance,
    clean_pixels,
    dataset_bytes,
    header_view,
    identifying_values,
    is_big_endian,
    path_part,
    pixel_value_sha256,
)
from pacs_workbench.deid.keyed import (
    cap_age,
    date_offset_days,
    patient_identity,
    pseudonymize,
    remap_uid,
    shift_date,
    shift_datetime,
)
from pacs_workbench.deid.pixels import PixelResult, assess_pixel_risk
from pacs_workbench.deid.profile import (
    CLEAN_UNLISTED,
    KEEP_LISTED,
    REMOVE_UNLISTED,
    RESEARCH_DEFAULT,
    RETAIN_UNLISTED,
    Option,
    Profile,
    iod_family,
    tag_label,
)
from pacs_workbench.deid.text import Scrubber, build_scrubber, known_phi_terms
from pacs_workbench.dicom.raw import (
    PIXEL_DATA,
    Element,
    RawFile,
    RawFormatError,
    deflate,
    encode_meta,
    encode_sequence,
    pad,
    read_file,
)

#: Fixed implementation identity in the file meta, so output bytes do not depend on
#: the pydicom version: a 2.25 UID derived from the workbench name.
IMPLEMENTATION_CLASS_UID = "2.25." + str(int.from_bytes(b"pacs-workbench-deid-v1"[:16], "big"))
IMPLEMENTATION_VERSION_NAME = "PACSWB_DEID_1"

TAG_PATIENT_ID = 0x00100020
TAG_PATIENT_NAME = 0x00100010
TAG_ACCESSION = 0x00080050
TAG_PATIENT_AGE = 0x00101010
TAG_PIXEL_DATA = 0x7FE00010
IDENTITY_TAGS = frozenset({TAG_PATIENT_ID, TAG_PATIENT_NAME, TAG_ACCESSION})


COUNT_FIELDS = (
    "n_removed",
    "n_emptied",
    "n_dummied",
    "n_uid_replaced",
    "n_dates_shifted",
    "n_text_cleaned",
    "n_private_removed",
    "n_private_kept",
    "n_pixel_boxes",
)

# --- the walk ----------------------------------------------------------------------------------


@dataclass
class DeidOutput:
    """One de-identified instance and what was done to it.

    Attributes
    ----------
    data
        The de-identified DICOM file (preamble, file meta, data set), ready to write.
    relpath
        ``<pseudo PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
    counts
        The action counts of :data:`COUNT_FIELDS`.
    actions
        ``(tag, keyword, action) -> count`` (tags and keywords only, never values).
    mapping
        ``(kind, original, pseudonym)`` for patient IDs, accession numbers and UIDs:
        the escrow, written only where the user asks.
    pixels
        Pixel cleaning result, or ``None`` when the image needed no check.
    notes
        What changed in the encoding (big endian transcoded, cleaned pixels stored
        decompressed), for the log.
    """

    data: bytes
    relpath: str
    counts: dict[str, int]
    actions: Counter[tuple[str, str, str]]
    mapping: set[tuple[str, str, str]]
    pixels: PixelResult | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def dataset(self) -> Dataset:
        """The output parsed by pydicom (for inspection; not used to write)."""
        from pydicom import dcmread

        return dcmread(BytesIO(self.data))


@lru_cache(maxsize=8192)
def _label(tag: int) -> tuple[str, str]:
    """``(tag label, keyword)`` for the action summary (no keyword for private elements)."""
    return tag_label(tag), ("" if (tag >> 16) % 2 else (keyword_for_tag(tag) or ""))


@lru_cache(maxsize=4096)
def _scrubber_for(values: tuple[tuple[str, str], ...]) -> Scrubber:
    # Files of one patient share their identifying values: the regex is compiled once.
    return build_scrubber(known_phi_terms(values))


class Deidentifier:
    """De-identify DICOM instances with one key and one set of options.

    Parameters
    ----------
    key
        The project key (:func:`~pacs_workbench.core.pseudonym.load_key`).
    options
        PS3.15 options in force (default: the research default).

    Examples
    --------
    >>> deid = Deidentifier(key, parse_options("basic,retain-uids"))   # doctest: +SKIP
    >>> out = deid.deidentify_bytes(Path("ct.dcm").read_bytes())        # doctest: +SKIP
    >>> out.dataset.PatientIdentityRemoved                              # doctest: +SKIP
    'YES'
    """

    def __init__(self, key: bytes, options: frozenset[Option] | set[Option] = RESEARCH_DEFAULT) -> None:
        self.key = key
        self.profile = Profile(options)
        self.options = self.profile.options
        self._markers: dict[bool, list[tuple[int, bytes]]] = {}

    # -- public -------------------------------------------------------------------------------

    def deidentify(self, ds: Dataset) -> DeidOutput:
        """De-identify a pydicom dataset (encoded first, then :meth:`deidentify_bytes`)."""
        return self.deidentify_bytes(dataset_bytes(ds))

    def deidentify_bytes(self, data: bytes) -> DeidOutput:
        """De-identify one DICOM Part 10 file given as bytes.

        Raises
        ------
        DeidError
            When the instance cannot be de-identified safely: not parseable (truncated,
            not Part 10, big endian), unknown transfer syntax, no SOP Instance UID, or
            an image that may carry burned-in text which cannot be checked and cleaned
            (or Clean Pixel Data is not selected).
        """
        notes: list[str] = []
        if is_big_endian(data):
            data = big_endian_to_little(data)
            notes.append(TRANSCODED_NOTE)
        try:
            raw = read_file(data)
        except RawFormatError as exc:
            raise DeidError(str(exc)) from exc
        ctx, header, top = self._prepare(raw)
        pixel_reasons = assess_pixel_risk(header, has_pixels=PIXEL_DATA in top)
        if pixel_reasons and Option.CLEAN_PIXEL_DATA not in self.options:
            raise DeidError(
                "image may carry burned-in text (" + "; ".join(pixel_reasons) + ") and the "
                "clean-pixel-data option is not selected"
            )
        self._start_patient(ctx, header, raw)
        output, relpath = self._encode_file(ctx, header, raw)
        pixels = None
        if pixel_reasons:
            output, pixels = clean_pixels(output, pixel_reasons)
            ctx.counts["n_pixel_boxes"] += len(pixels.boxes)
        try:
            # what is written must parse again (structure and VRs), or it is not written
            written = read_file(output)
        except RawFormatError as exc:
            raise DeidError(f"de-identified output does not parse ({exc})") from exc
        if pixels is not None:
            # the hash the audit compares, of the Pixel Data value as it will be read back
            pixels.verified_sha256 = pixel_value_sha256(written)
        counts = {name: int(ctx.counts.get(name, 0)) for name in COUNT_FIELDS}
        actions: Counter[tuple[str, str, str]] = Counter()
        for (tag, action), n in ctx.actions.items():
            actions[(*_label(tag), action)] += n
        if pixels is not None and pixels.note:
            notes.append(pixels.note)
        return DeidOutput(output, relpath, counts, actions, ctx.mapping, pixels, notes)

    # -- steps ------------------------------------------------------------------------------

    def _prepare(self, raw: RawFile) -> tuple[InstanceContext, HeaderView, dict[int, Element]]:
        """The instance's context (character set) and header view, after the instance checks."""
        ctx = InstanceContext(
            key=self.key,
            profile=self.profile,
            buf=raw.body,
            implicit=raw.implicit,
            encodings=["iso8859"],
        )
        top = {e.tag: e for e in raw.elements}
        charset = top.get(0x00080005)
        if charset is not None:
            from pydicom.charset import convert_encodings

            names = [v for v in decode_values(ctx, charset) if v] or [""]
            ctx.encodings = list(convert_encodings(names))
        header = header_view(ctx, top, raw.transfer_syntax)
        check_instance(header, raw.transfer_syntax, ctx, top)
        return ctx, header, top

    def _start_patient(self, ctx: InstanceContext, header: HeaderView, raw: RawFile) -> None:
        """The patient's pseudonym, date offset and identifying values (for text scrubbing)."""
        identity = patient_identity(header)
        ctx.family = iod_family(header.get("SOPClassUID"))
        ctx.pseudo_patient = pseudonymize(self.key, identity)
        ctx.offset_days = date_offset_days(self.key, identity)
        include_institution = Option.RETAIN_INSTITUTION_ID not in self.options
        ctx.scrubber = _scrubber_for(tuple(sorted(set(identifying_values(ctx, raw.elements, include_institution)))))
        if identity:
            ctx.mapping.add(("PatientID", identity, ctx.pseudo_patient))

    def _encode_file(self, ctx: InstanceContext, header: HeaderView, raw: RawFile) -> tuple[bytes, str]:
        """The de-identified Part 10 file and its relative output path."""
        pieces = dict(self._clean(ctx, raw.elements, nested=False, clean_text_items=False))
        pieces[TAG_PATIENT_NAME] = element_bytes(ctx, TAG_PATIENT_NAME, "PN", pad(ctx.pseudo_patient.encode(), "PN"))
        pieces[TAG_PATIENT_ID] = element_bytes(ctx, TAG_PATIENT_ID, "LO", pad(ctx.pseudo_patient.encode(), "LO"))
        pieces.update(self._marker_elements(ctx.implicit))
        body = b"".join(piece for _, piece in sorted(pieces.items()))
        if raw.deflated:
            body = deflate(body)

        new_uid = {t: self._new_uid(ctx, header, t) for t in (0x00080018, 0x0020000D, 0x0020000E)}
        meta = encode_meta(
            [
                (0x00020001, "OB", b"\x00\x01"),
                (0x00020002, "UI", str(header.SOPClassUID).encode()),
                (0x00020003, "UI", new_uid[0x00080018].encode()),
                (0x00020010, "UI", raw.transfer_syntax.encode()),
                (0x00020012, "UI", IMPLEMENTATION_CLASS_UID.encode()),
                (0x00020013, "SH", IMPLEMENTATION_VERSION_NAME.encode()),
            ]
        )
        relpath = "/".join(
            [
                path_part(ctx.pseudo_patient, "NOPATIENT"),
                path_part(new_uid[0x0020000D], "NOSTUDY"),
                path_part(new_uid[0x0020000E], "NOSERIES"),
                path_part(new_uid[0x00080018], "NOINSTANCE") + ".dcm",
            ]
        )
        return meta + body, relpath

    # -- walk -------------------------------------------------------------------------------

    def _new_uid(self, ctx: InstanceContext, header: HeaderView, tag: int) -> str:
        value = str(header.get(HEADER_TAGS[tag][0], "") or "").strip()
        if ctx.profile.action(tag, ctx.family, False) == "U":
            return remap_uid(self.key, value)
        return value

    def _record(self, ctx: InstanceContext, tag: int, action: str) -> None:
        ctx.actions[(tag, action)] += 1

    def _clean(
        self, ctx: InstanceContext, elements: list[Element], *, nested: bool, clean_text_items: bool
    ) -> list[tuple[int, bytes]]:
        creators: dict[tuple[int, int], Element] = {}
        for e in elements:
            group, element = e.tag >> 16, e.tag & 0xFFFF
            if group % 2 == 1 and 0x0010 <= element <= 0x00FF:
                creators[(group, element)] = e
        out: list[tuple[int, bytes]] = []
        kept_blocks: set[tuple[int, int]] = set()
        for e in elements:
            tag = e.tag
            group, element = tag >> 16, tag & 0xFFFF
            if element == 0x0000 or group in (0x0000, 0x0002):
                # group lengths, command and file-meta groups never belong in the data set
                if group in (0x0000, 0x0002) and element != 0:
                    ctx.counts["n_removed"] += 1
                    self._record(ctx, tag, "X")
                continue
            if group % 2 == 1:
                if element <= 0x00FF:
                    continue  # creators are added back below when their block keeps something
                creator_elem = creators.get((group, element >> 8))
                names = decode_values(ctx, creator_elem) if creator_elem is not None else []
                creator = names[0] if names else ""
                piece = self._private(ctx, e, creator)
                if piece is not None:
                    kept_blocks.add((group, element >> 8))
                    out.append((tag, piece))
                continue
            action = ctx.profile.action(tag, ctx.family, nested)
            retained = action in (KEEP_LISTED, "K") or (action == RETAIN_UNLISTED and e.vr != "UI")
            if retained and e.vr in PLAIN_VRS and not clean_text_items:
                # the common case (geometry, pixel module, numbers, codes): copied as it is
                ctx.actions[(tag, action)] += 1
                out.append((tag, copy_element(ctx, e)))
                continue
            piece = self._public(ctx, e, action, nested=nested, clean_text_items=clean_text_items)
            if piece is not None:
                out.append((tag, piece))
        for block in sorted(kept_blocks):
            creator_elem = creators[block]
            out.append((creator_elem.tag, copy_element(ctx, creator_elem)))
        out.sort(key=lambda t: t[0])
        return out

    def _public(
        self, ctx: InstanceContext, e: Element, action: str, *, nested: bool, clean_text_items: bool
    ) -> bytes | None:
        tag, vr = e.tag, e.vr
        if action in ("X", REMOVE_UNLISTED):
            ctx.counts["n_removed"] += 1
            self._record(ctx, tag, action)
            return None
        self._record(ctx, tag, action)
        if tag in IDENTITY_TAGS:
            return self._identity(ctx, e)
        if action == "Z":
            ctx.counts["n_emptied"] += 1
            return element_bytes(ctx, tag, vr, b"")
        if action == "D":
            if vr == "SQ" and e.items:
                # a dummy consistent with the IOD: the items' structure, every value cleaned
                # by its own row (names dummied, UIDs remapped, dates shifted, text cleaned)
                ctx.counts["n_dummied"] += 1
                return self._sequence(ctx, e, clean_text_items=True)
            return self._dummy(ctx, e)
        if action == "U":
            if vr == "UI":
                return self._uids(ctx, e)
            if vr == "SQ":
                return self._sequence(ctx, e, clean_text_items=clean_text_items)
            return self._dummy(ctx, e)
        if action == "C":
            return self._clean_value(ctx, e)
        if action == CLEAN_UNLISTED:
            if vr == "PN":  # a name outside the table is nobody the research needs
                ctx.counts["n_emptied"] += 1
                return element_bytes(ctx, tag, vr, b"")
            return self._clean_value(ctx, e)
        if action == RETAIN_UNLISTED and vr == "UI":
            return self._uids(ctx, e)  # registry UIDs stay, instance UIDs take the keyed remap
        # K, keep-listed or retained by VR
        if vr == "SQ":
            return self._sequence(ctx, e, clean_text_items=clean_text_items)
        if tag == TAG_PATIENT_AGE:
            return element_bytes(ctx, tag, vr, encode_values(ctx, vr, [cap_age(v) for v in decode_values(ctx, e)]))
        if vr in ("DA", "DT") and action in (KEEP_LISTED, RETAIN_UNLISTED):
            # a date outside E.1-1 would escape the longitudinal options: never kept as is
            return self._dates(ctx, e)
        if vr in TEXT_VRS:
            full = (
                (clean_text_items and action != KEEP_LISTED)  # a code in SR content stays a code
                or action == RETAIN_UNLISTED  # text where the dictionary has a number: cleaned
                or (action == KEEP_LISTED and ctx.profile.is_free_text(tag))
            )
            return self._text(ctx, e, full=full)
        return copy_element(ctx, e)

    def _identity(self, ctx: InstanceContext, e: Element) -> bytes:
        ctx.counts["n_dummied"] += 1
        if e.tag == TAG_PATIENT_NAME:
            return element_bytes(ctx, e.tag, e.vr, pad(ctx.pseudo_patient.encode(), e.vr))
        values = decode_values(ctx, e)
        original = values[0].strip() if values else ""
        if e.tag == TAG_PATIENT_ID:
            pseudo = pseudonymize(ctx.key, original) if original else ctx.pseudo_patient
            if original:
                ctx.mapping.add(("PatientID", original, pseudo))
            return element_bytes(ctx, e.tag, e.vr, pad(pseudo.encode(), e.vr))
        if not original:
            return element_bytes(ctx, e.tag, e.vr, b"")
        pseudo = pseudonymize(ctx.key, original, namespace="accession")
        ctx.mapping.add(("AccessionNumber", original, pseudo))
        return element_bytes(ctx, e.tag, e.vr, pad(pseudo.encode(), e.vr))

    def _dummy(self, ctx: InstanceContext, e: Element) -> bytes:
        vr = e.vr
        if vr == "UI":
            return self._uids(ctx, e)
        ctx.counts["n_dummied"] += 1
        if vr == "SQ":
            # an empty sequence stays empty (a Type 2 sequence with zero items is valid; an
            # empty item would lack the item's Type 1 attributes)
            return encode_sequence(e.tag, [b""] if e.items else [], ctx.implicit)
        if vr in BINARY_DUMMY:
            return element_bytes(ctx, e.tag, vr, BINARY_DUMMY[vr])
        if vr in BINARY_VRS:
            return element_bytes(ctx, e.tag, vr, b"\x00\x00")
        return element_bytes(ctx, e.tag, vr, pad(str(DUMMY_BY_VR.get(vr, DUMMY_TEXT)).encode(), vr))

    def _uid_values(self, ctx: InstanceContext, values: list[str]) -> list[str]:
        new = []
        for v in values:
            mapped = remap_uid(ctx.key, v)
            if mapped != v:
                ctx.counts["n_uid_replaced"] += 1
                ctx.mapping.add(("UID", v, mapped))
            new.append(mapped)
        return new

    def _uids(self, ctx: InstanceContext, e: Element) -> bytes:
        return element_bytes(ctx, e.tag, "UI", encode_values(ctx, "UI", self._uid_values(ctx, decode_values(ctx, e))))

    def _date_values(self, ctx: InstanceContext, vr: str, values: list[str]) -> list[str]:
        shift = shift_date if vr == "DA" else shift_datetime
        new = []
        for v in values:
            shifted = shift(v, ctx.offset_days)
            if shifted is None:
                ctx.counts["n_emptied"] += 1  # not a date: cannot be shifted, so it goes
                continue
            if shifted:
                ctx.counts["n_dates_shifted"] += 1
            new.append(shifted)
        return new

    def _dates(self, ctx: InstanceContext, e: Element) -> bytes:
        return element_bytes(
            ctx, e.tag, e.vr, encode_values(ctx, e.vr, self._date_values(ctx, e.vr, decode_values(ctx, e)))
        )

    def _text_values(self, ctx: InstanceContext, vr: str, values: list[str], *, full: bool) -> tuple[list[str], bool]:
        new: list[str] = []
        changed = False
        for text in values:
            cleaned = ctx.scrubber.cleaned(text, full=full)
            cleaned = truncate(vr, cleaned)
            if cleaned != text:
                changed = True
                ctx.counts["n_text_cleaned"] += 1
            new.append(cleaned)
        return new, changed

    def _text(self, ctx: InstanceContext, e: Element, *, full: bool) -> bytes:
        if not full and ctx.scrubber.is_empty:
            return copy_element(ctx, e)
        new, changed = self._text_values(ctx, e.vr, decode_values(ctx, e), full=full)
        if not changed:
            return copy_element(ctx, e)
        return element_bytes(ctx, e.tag, e.vr, encode_values(ctx, e.vr, new))

    def _clean_value(self, ctx: InstanceContext, e: Element) -> bytes | None:
        vr = e.vr
        if vr == "SQ":
            return self._sequence(ctx, e, clean_text_items=True)
        if vr in ("DA", "DT"):
            return self._dates(ctx, e)
        if vr == "TM":
            return copy_element(ctx, e)  # whole-day shifts leave times of day unchanged
        if vr == "AS":
            return element_bytes(ctx, e.tag, vr, encode_values(ctx, vr, [cap_age(v) for v in decode_values(ctx, e)]))
        if vr == "AE":
            values = decode_values(ctx, e)
            ctx.counts["n_text_cleaned"] += sum(1 for v in values if v)
            pseudo = [pseudonymize(ctx.key, v, namespace="ae") if v else v for v in values]
            return element_bytes(ctx, e.tag, vr, encode_values(ctx, vr, pseudo))
        if vr == "UI":
            return self._uids(ctx, e)
        if vr in TEXT_VRS:
            return self._text(ctx, e, full=True)
        if vr in BINARY_VRS or vr == "UR":
            ctx.counts["n_removed"] += 1  # binary or a link cannot be cleaned, so it goes
            return None
        return copy_element(ctx, e)  # CS codes and numbers carry no free text

    def _sequence(self, ctx: InstanceContext, e: Element, *, clean_text_items: bool) -> bytes:
        items = []
        for item in e.items or []:
            cleaned = self._clean(ctx, item, nested=True, clean_text_items=clean_text_items)
            items.append(b"".join(piece for _, piece in cleaned))
        return encode_sequence(e.tag, items, ctx.implicit)

    def _private(self, ctx: InstanceContext, e: Element, creator: str) -> bytes | None:
        """Keep a safe private element (cleaned like a C attribute); remove any other."""
        safe = ctx.profile.safe_private(creator, e.tag)
        encoded_vr = e.vr if e.vr != "UN" else None
        vr = encoded_vr or (safe.vr.split("/")[0] if safe is not None and safe.vr else "UN")
        # a private sequence of unknown encoding cannot be walked, so it is not kept
        keep = safe is not None and not (vr == "SQ" and e.items is None)
        if keep and vr in ("DA", "DT") and not ctx.profile.retains_dates:
            keep = False  # dates without a longitudinal option are removed, private ones too
        if not keep:
            ctx.counts["n_private_removed"] += 1
            self._record(ctx, e.tag, "X")
            return None
        ctx.counts["n_private_kept"] += 1
        self._record(ctx, e.tag, "C")
        if vr == "SQ":
            return self._sequence(ctx, e, clean_text_items=True)
        if vr not in ("DA", "DT", "UI") and vr not in TEXT_VRS:
            return copy_element(ctx, e)  # numbers, codes and binary tables (E.3.10-1 lists them as safe)
        view = Element(e.tag, vr, e.start, e.value_start, e.value_end, e.end, None, e.implicit)
        values = decode_values(ctx, view)
        if vr in ("DA", "DT"):
            new = values if not ctx.profile.shifts_dates else self._date_values(ctx, vr, values)
        elif vr == "UI":
            new = self._uid_values(ctx, values)
        else:
            new, _ = self._text_values(ctx, vr, values, full=True)
        return element_bytes(ctx, e.tag, vr, encode_values(ctx, vr, new))

    # -- markers ----------------------------------------------------------------------------

    def _marker_elements(self, implicit: bool) -> list[tuple[int, bytes]]:
        cached = self._markers.get(implicit)
        if cached is None:
            cached = self._markers[implicit] = marker_elements(self.options, implicit)
        return cached
