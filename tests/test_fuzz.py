"""Bad input on purpose: mutated and hostile DICOM through the index, preprocessing and de-identification.

Hypothesis (derandomized, bounded) mutates a valid CT slice: truncation, flipped header
bytes, wrong value representations, absurd lengths, and combinations. Hand-made hostile
files add what mutation rarely reaches: a sequence nested 200 levels deep, a 20 MB
private element, non-ASCII and unknown character sets, and compressed transfer syntaxes
with and without an installed decoder. Every file must get a clear per-file outcome (a
row or an error row; a volume, a warning or a refusal with its reason; ``written`` or
``quarantined``), the run must go on, and time and memory per file stay bounded (generous
robustness bounds, not performance assertions). De-identification must never write a
file it could not fully process.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import resource
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pacs_workbench.cohort.crawl import index_files
from pacs_workbench.cohort.index import build_index
from pacs_workbench.core.pseudonym import generate_key
from pacs_workbench.deid.run import FileTask, deidentify_file
from pacs_workbench.preprocess import SeriesError, inspect_series, read_header, read_series
from tests import fault_helpers as fh

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

MAX_RSS_GROWTH = 1024**3  # bytes of peak resident memory a single file may add
ORIGINAL_STUDY_DATE = "20190304"  # what fault_helpers writes; must be shifted by de-identification
LEAK_STRINGS = (*fh.PHI_VALUES, ORIGINAL_STUDY_DATE)
INDEX_ERROR_KINDS = {"empty", "not_dicom", "truncated", "invalid", "unreadable"}
VRS = ("US", "UL", "SS", "SL", "FD", "FL", "AT", "DA", "TM", "PN", "LO", "CS", "UI", "DS", "IS", "XX", "\0\0")
LONG = ("OB", "OW", "UN", "UT", "SQ", "UC")
LENGTHS = (0, 1, 3, 0xFFFF, 0xFFFE, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF, 0x10000000)

HYPOTHESIS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    # No shrinking: it would rerun the stages many times; the failure message names the mutations.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the corpus ------------------------------------------------------------------------------------


class Corpus:
    """A valid four-slice CT series, the bytes of its last slice and where its elements sit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.series = fh.write_ct_series(root / "series", 4)
        self.victim = self.series.files[-1].read_bytes()
        self.spans = fh.element_spans(self.victim)
        self.header_end = fh.pixel_data_offset(self.spans, len(self.victim))
        self.key_file = root / "project.key"
        generate_key(self.key_file)
        self.counter = 0

    @contextmanager
    def case(self, data: bytes) -> Iterator[Path]:
        """A fresh folder with the three intact slices and ``data`` as the fourth; removed afterwards."""
        self.counter += 1
        folder = Path(tempfile.mkdtemp(prefix=f"case{self.counter:04d}-", dir=self.root))
        try:
            for file in self.series.files[:-1]:
                shutil.copy(file, folder / file.name)
            (folder / "slice_003.dcm").write_bytes(data)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("fuzz"))


Mutation = tuple[Any, ...]

mutations = st.lists(
    st.one_of(
        st.tuples(st.just("truncate"), st.floats(0.0, 1.0, exclude_max=True)),
        st.tuples(
            st.just("flip"),
            st.lists(st.integers(0, 1 << 20), min_size=1, max_size=8),
            st.lists(st.integers(1, 255), min_size=8, max_size=8),
        ),
        st.tuples(st.just("vr"), st.integers(0, 255), st.sampled_from(VRS + LONG)),
        st.tuples(st.just("length"), st.integers(0, 255), st.sampled_from(LENGTHS) | st.integers(0, 0xFFFFFFFF)),
    ),
    min_size=1,
    max_size=3,
)


def mutate(corpus: Corpus, steps: Sequence[Mutation]) -> bytes:
    """Apply the mutations to the victim slice; truncation last, so offsets stay valid."""
    data = corpus.victim
    for step in sorted(steps, key=lambda s: s[0] == "truncate"):
        if step[0] == "truncate":
            data = fh.truncate(data, step[1])
        elif step[0] == "flip":
            data = fh.flip_bytes(data, corpus.header_end, step[1], step[2])
        elif step[0] == "vr":
            data = fh.wrong_vr(data, corpus.spans, step[1], step[2])
        else:
            data = fh.absurd_length(data, corpus.spans, step[1], step[2])
    return data


# --- measuring -------------------------------------------------------------------------------------


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def bounded(what: str, func: Callable[[], Any]) -> Any:
    """Call ``func`` and check the growth of this process's peak memory (speed is measured in benchmarks/)."""
    before = _peak_rss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = func()
    grown = _peak_rss() - before
    assert grown < MAX_RSS_GROWTH, f"{what}: peak memory grew by {grown / 2**20:.0f} MiB for one file"
    return result


# --- stage checks ----------------------------------------------------------------------------------


def check_index(path: Path, what: str) -> str | None:
    """One row for the file, in exactly one table; an error row says what is wrong, never the path."""
    instances, errors = bounded(f"index {what}", lambda: index_files([str(path)])[:2])
    assert instances.num_rows + errors.num_rows == 1, what
    if errors.num_rows:
        message, kind = errors.column("error")[0].as_py(), errors.column("error_kind")[0].as_py()
        assert message and kind in INDEX_ERROR_KINDS, (what, kind, message)
        assert str(path.parent) not in message and path.name not in message, (what, message)
        return str(kind)
    assert instances.column("SOPInstanceUID")[0].as_py(), what
    return None


def check_preprocessing(folder: Path, what: str, *, min_slices: int = 2, expected_slices: int = 4) -> None:
    """The series loads, or is refused with a reason; a file left out is never left out silently."""
    report = bounded(f"inspect_series {what}", lambda: inspect_series(folder, min_slices=min_slices))
    try:
        image, loaded = bounded(f"read_series {what}", lambda: read_series(folder, min_slices=min_slices))
    except SeriesError as exc:
        assert exc.reason, what
        assert str(folder) not in exc.reason, (what, exc.reason)
        assert not report.valid or exc.report is not None, what
        return
    assert report.valid, (what, report.reason)
    if image.GetSize()[2] != expected_slices:
        # A slice is missing from the volume: the report must say why (unreadable file, localizer,
        # another series, duplicate...), unless the file is no image at all.
        victim = folder / "slice_003.dcm"
        try:
            record = read_header(victim)
        except Exception:
            record = None
            assert "unreadable_files" in loaded.flags, (what, loaded.flags, loaded.warnings)
        else:
            assert record is None or not record.is_image or loaded.warnings or loaded.flags, (what, loaded)


def deid_record(corpus: Corpus, path: Path, dst: Path, what: str) -> dict[str, Any]:
    """De-identify one file; the record must be ``written`` with an output, or ``quarantined`` with a reason."""
    task = FileTask(str(path), str(corpus.key_file), "", str(dst), str(dst) + ".quarantine")
    record: dict[str, Any] = bounded(f"deid {what}", lambda: deidentify_file(task))
    assert record["outcome"] in {"written", "quarantined"}, (what, record["outcome"])
    if record["outcome"] == "quarantined":
        assert record["reason"], what
        assert record["output"] is None, what
    else:
        assert record["output"] and (dst / record["output"]).is_file(), what
    assert not fh.temp_leftovers(dst, Path(str(dst) + ".quarantine")), what
    return record


def fully_readable(data: bytes, what: str, *, source: bytes) -> None:
    """A de-identified file: parses completely, every value converts, pixel data present and decodable, no PHI."""
    leaked = [value for value in LEAK_STRINGS if value.encode() in data]
    assert not leaked, f"{what}: written output still holds {leaked}"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # a 200-level sequence is deeper than pydicom's default allows
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
            for element in ds.iterall():
                _ = element.value  # converts raw values: an unknown VR or an odd length raises here
    except Exception as exc:
        raise AssertionError(f"{what}: written output does not re-read ({type(exc).__name__}: {exc})"[:400]) from None
    finally:
        sys.setrecursionlimit(limit)
    had_pixels = b"\xe0\x7f\x10\x00" in source
    if not had_pixels:
        return
    assert "PixelData" in ds, f"{what}: pixel data lost"
    syntax = ds.file_meta.TransferSyntaxUID
    if fh.decoder_available(syntax):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pixels = ds.pixel_array
        except Exception as exc:
            raise AssertionError(f"{what}: written pixel data does not decode ({type(exc).__name__})") from None
        assert pixels.size > 0, what


# --- hypothesis: mutated CT slices -----------------------------------------------------------------


@settings(HYPOTHESIS, max_examples=200)
@given(steps=mutations)
def test_index_and_preprocessing_give_every_mutated_file_a_clear_outcome(corpus: Corpus, steps: list[Mutation]) -> None:
    data = mutate(corpus, steps)
    with corpus.case(data) as folder:
        what = f"mutations {steps}"
        check_index(folder / "slice_003.dcm", what)
        for good in sorted(folder.glob("slice_00[0-2].dcm")):  # the run goes on for the neighbours
            assert check_index(good, what) is None
        check_preprocessing(folder, what)


@settings(HYPOTHESIS, max_examples=150)
@given(steps=mutations)
def test_deid_accounts_for_every_mutated_file(corpus: Corpus, steps: list[Mutation]) -> None:
    data = mutate(corpus, steps)
    with corpus.case(data) as folder:
        dst = folder / "out"
        record = deid_record(corpus, folder / "slice_003.dcm", dst, f"mutations {steps}")
        assert record["source_sha256"] == hashlib.sha256(data).hexdigest()
        if record["outcome"] == "quarantined":
            quarantine = Path(str(dst) + ".quarantine")
            assert (quarantine / f"{record['source_sha256']}.dcm").read_bytes() == data
            assert (quarantine / f"{record['source_sha256']}.reason.txt").read_text().strip() == record["reason"]


@settings(HYPOTHESIS, max_examples=80)
@given(steps=mutations)
def test_deid_never_writes_a_file_it_could_not_fully_process(corpus: Corpus, steps: list[Mutation]) -> None:
    data = mutate(corpus, steps)
    with corpus.case(data) as folder:
        dst = folder / "out"
        what = f"mutations {steps}"
        record = deid_record(corpus, folder / "slice_003.dcm", dst, what)
        if record["outcome"] == "written":
            fully_readable((dst / record["output"]).read_bytes(), what, source=data)


@pytest.mark.parametrize("vr", ["UL", "SS", "XX"])
def test_deid_shifts_or_refuses_a_study_date_with_a_wrong_vr(corpus: Corpus, vr: str) -> None:
    """Reproducer: the same slice with the VR bytes of (0008,0020) replaced."""
    span = next(s for s in corpus.spans if s.tag == 0x00080020)
    data = corpus.victim[: span.offset + 4] + vr.encode() + corpus.victim[span.offset + 6 :]
    with corpus.case(data) as folder:
        dst = folder / "out"
        record = deid_record(corpus, folder / "slice_003.dcm", dst, f"StudyDate as {vr}")
        if record["outcome"] == "written":
            fully_readable((dst / record["output"]).read_bytes(), f"StudyDate as {vr}", source=data)


# --- hostile files made by hand ----------------------------------------------------------------------


def hostile_files() -> dict[str, bytes]:
    files = {
        "nested_200_levels": fh.nested_sequence_bytes(200),
        "private_20MB": fh.huge_private_bytes(20 * 1024 * 1024),
        "charset_mislabelled": fh.mislabelled_charset_bytes(),
    }
    files.update({f"charset_{kind}": fh.charset_bytes(kind) for kind in fh.CHARSET_NAMES})
    files.update({f"compressed_{kind}": data for kind, data in fh.compressed_inputs().items()})
    return files


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    paths = {}
    for name, data in hostile_files().items():
        path = root / "src" / name / "0001.dcm"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        paths[name] = path
    return paths


def test_decoders_are_as_the_fuzz_cases_assume() -> None:
    """The compressed cases need decoders for four transfer syntaxes and none for one; say which when that changes."""
    from pydicom.uid import MPEG2MPML, HTJ2KLossless, JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless

    available = {str(uid.name): fh.decoder_available(uid) for uid in (JPEG2000Lossless, JPEGLSLossless,
                                                                     JPEGLosslessSV1, HTJ2KLossless)}
    assert all(available.values()), f"a decoder the compressed cases rely on is missing: {available}"
    assert not fh.decoder_available(MPEG2MPML), "an MPEG-2 decoder was installed; 'nodecoder_mpeg2' has one"


def test_hostile_files_each_get_a_clear_outcome_in_index_and_preprocessing(hostile: dict[str, Path]) -> None:
    for name, path in hostile.items():
        check_index(path, name)
        # One slice cannot make a volume: refused with a reason, whatever else is wrong with the file.
        check_preprocessing(path.parent, name, min_slices=1, expected_slices=1)


def test_hostile_files_index_in_one_run(hostile: dict[str, Path], tmp_path: Path) -> None:
    src = next(iter(hostile.values())).parent.parent
    summary = build_index([src], tmp_path / "index", workers=1, progress=False)
    instances = pd.read_parquet(tmp_path / "index" / "instances.parquet")
    errors = pd.read_parquet(tmp_path / "index" / "errors.parquet")
    assert summary["files_seen"] == len(hostile) == len(instances) + len(errors)
    assert set(instances["path"]) | set(errors["path"]) == {str(p) for p in hostile.values()}


@pytest.fixture(scope="module")
def hostile_deid(hostile: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``pacs-workbench deid`` over every hostile file at once."""
    root = tmp_path_factory.mktemp("hostile_deid")
    src = next(iter(hostile.values())).parent.parent
    key = root / "project.key"
    generate_key(key)
    dst = root / "deid"
    done = fh.run_ok([*fh.CLI, "deid", str(src), "--out", str(dst), "--key-file", str(key), "--workers", "1",
                      "--quiet"], env=fh.env_for_subprocess())
    return {"src": src, "dst": dst, "summary": json.loads(done.stdout), "root": root}


def test_deid_cli_accounts_for_every_hostile_file(hostile: dict[str, Path], hostile_deid: dict[str, Any]) -> None:
    dst, summary = hostile_deid["dst"], hostile_deid["summary"]
    assert summary["files"] == len(hostile) == summary["written"] + summary["quarantined"]
    log = pd.read_parquet(dst / "deid_log.parquet")
    by_sha = {hashlib.sha256(p.read_bytes()).hexdigest(): name for name, p in hostile.items()}
    assert sorted(log["source_sha256"]) == sorted(by_sha)
    assert set(log["outcome"]) <= {"written", "quarantined"}
    quarantine = Path(str(dst) + ".quarantine")
    for sha, outcome, output, reason in zip(log["source_sha256"], log["outcome"], log["output"], log["reason"],
                                            strict=True):
        name = by_sha[str(sha)]
        if outcome == "quarantined":
            assert reason and (quarantine / f"{sha}.dcm").is_file(), name
            continue
        fully_readable((dst / str(output)).read_bytes(), name, source=hostile[name].read_bytes())
    outcomes = dict(zip(log["source_sha256"].map(by_sha), log["outcome"], strict=True))
    # Burned-in text cannot be checked without decoding the pixels: a Secondary Capture nothing decodes is refused.
    assert outcomes["compressed_nodecoder_mpeg2"] == "quarantined"
    reason = log.loc[log["source_sha256"].map(by_sha) == "compressed_nodecoder_mpeg2", "reason"].iloc[0]
    assert re.search(r"decoder|decode", reason), reason
    # The 200-level sequence is cleaned to the bottom (the name there is gone, checked above) or refused.
    assert outcomes["nested_200_levels"] in {"written", "quarantined"}
    assert not fh.temp_leftovers(dst, quarantine)


def test_audit_of_the_hostile_deid_output_is_clean(hostile_deid: dict[str, Any]) -> None:
    phi_list = hostile_deid["root"] / "phi.txt"
    phi_list.write_text("\n".join([*fh.PHI_VALUES, *(n for _, n in fh.CHARSET_NAMES.values())]) + "\n")
    audit = fh.run_ok(
        [*fh.CLI, "audit", str(hostile_deid["dst"]), "--source", str(hostile_deid["src"]), "--phi-list",
         str(phi_list), "--no-ocr", "--workers", "1", "--quiet"],
        env=fh.env_for_subprocess(),
        codes=(0, 1),
    )
    assert audit.returncode == 0, audit.stdout[-3000:]
