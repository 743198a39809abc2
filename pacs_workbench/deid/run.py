"""De-identify a folder: every input accounted for, nothing identifying in DST.

:func:`deidentify_folder` is what ``pacs-workbench deid SRC --out DST`` runs:

* every file under SRC is read once, de-identified with
  :class:`~pacs_workbench.deid.engine.Deidentifier` and written atomically to
  ``DST/<pseudo PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``
  (all pseudonymous: input file names can carry PHI, so none survives);
* a file that cannot be de-identified safely (not DICOM, truncated, unknown transfer
  syntax, burned-in text that cannot be checked or cleaned, ...) is copied to the
  quarantine folder as ``<source sha256>.dcm`` with ``<sha256>.reason.txt``; the
  quarantine is outside DST (default ``<DST>.quarantine``), so DST can be handed over
  as it is;
* ``DST/deid_log.parquet`` has one row per input file (source sha256, outcome, output
  path relative to DST, reason, action counts, blanked pixel boxes, and the SHA-256 of
  the written Pixel Data that the last OCR check found free of text, which the audit
  reuses for an image whose pixels still have that hash) and
  ``DST/deid_actions.parquet`` the count of each action per attribute (tags and
  keywords only); neither holds a PHI value or an input path;
* ``--mapping FILE`` writes the escrow table (original -> pseudonym for patient IDs,
  accession numbers and UIDs), mode 0600, and never inside DST.

The same key, input and options give byte-identical output, so a run that was killed
is finished by running it again (outputs are written to a temporary file and renamed,
so none is ever half-written). Temporary files are named
``.<name>.<pid>.deid-tmp``; a run removes those in DST and the quarantine whose
process is gone (a killed run's), never those of a run still writing.

A file whose output cannot be written (a full disk, no permission) is logged with
outcome ``failed`` and the reason (``could not write output: No space left on
device``), its temporary file removed; the run goes on, writes the log and summary when
it can, and then raises :class:`DeidWriteError` (the CLI prints one line and exits 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pacs_workbench.core.executor import map_items
from pacs_workbench.core.files import (
    remove_stale_temp_files,
    sync_filesystem,
    write_bytes_atomic,
    write_text_atomic,
)
from pacs_workbench.core.pseudonym import load_key
from pacs_workbench.deid.duplicates import resolve_duplicates
from pacs_workbench.deid.engine import COUNT_FIELDS, Deidentifier
from pacs_workbench.deid.instance import DeidError
from pacs_workbench.deid.profile import TABLE_EDITION, format_options, parse_options

LOG_NAME = "deid_log.parquet"
ACTIONS_NAME = "deid_actions.parquet"
RUN_NAME = "deid_run.json"
QUARANTINE_SUFFIX = ".quarantine"
BATCH_FILES = 16
LOG_COLUMNS = (
    "source_sha256",
    "outcome",
    "output",
    "reason",
    *COUNT_FIELDS,
    "pixel_check",
    "pixel_boxes",
    "pixel_verified_sha256",
    "note",
)


class DeidRunError(ValueError):
    """Arguments that would put identifying data where it must not go."""


class DeidWriteError(DeidRunError):
    """Outputs, quarantine copies or the log could not be written (e.g. a full disk).

    Raised after the run has accounted for every input it could; the message says how
    many files failed and why (never a PHI value or an input path).
    """


@dataclass(frozen=True)
class FileTask:
    """One input file for a worker (paths as strings so the task pickles anywhere)."""

    path: str
    key_file: str
    options: str
    dst: str
    quarantine: str
    escrow: bool = False
    sync: bool = False  # flush DST and the quarantine after each batch (workers on other hosts)


# --- per-process caches ------------------------------------------------------------------------

_DEIDENTIFIERS: dict[tuple[str, str], Deidentifier] = {}


def _deidentifier(key_file: str, options: str) -> Deidentifier:
    # The key is read from the key file inside each worker, so it never travels in a task.
    cached = _DEIDENTIFIERS.get((key_file, options))
    if cached is None:
        cached = Deidentifier(load_key(key_file), parse_options(options))
        _DEIDENTIFIERS[(key_file, options)] = cached
    return cached


# --- file io -----------------------------------------------------------------------------------


def write_output(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (:func:`~pacs_workbench.core.files.write_bytes_atomic`).

    A file that already holds exactly ``data`` is left alone, so a rerun after an
    interruption only writes what is missing. The file is not flushed one by one: the run
    flushes all of them at once before its log says they are written (one ``fsync`` per
    file took longer than de-identifying a CT slice).
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        size = -1
    if size == len(data) and path.read_bytes() == data:
        if mode is not None:
            os.chmod(path, mode)
        return
    write_bytes_atomic(path, data, mode=mode, sync=False)


def _os_reason(exc: OSError) -> str:
    """The system's message for a write error (``No space left on device``), without any path."""
    return exc.strerror or type(exc).__name__


def _failed(task: FileTask, sha: str, reason: str) -> dict[str, Any]:
    record = _quarantine_record(task, sha, reason)
    record["outcome"] = "failed"
    return record


def normalize_input(data: bytes) -> bytes:
    """Part 10 bytes for the engine; raises :class:`DeidError` for what is not DICOM.

    A Part 10 file (``DICM`` at byte 128) is used as it is. A bare data set without
    preamble and file meta is accepted only when pydicom reads it completely into a data
    set with a SOP Class and SOP Instance UID; it is then re-encoded as Part 10.
    """
    if len(data) >= 132 and data[128:132] == b"DICM":
        return data
    import pydicom

    from pacs_workbench.deid.instance import dataset_bytes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
                raise DeidError("not DICOM (no DICM prefix and no SOP identification)")
            size = len(data)
            for tag in list(ds.keys()):
                raw = ds.get_item(tag)
                tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
                if tell is not None and length is not None and length != 0xFFFFFFFF and tell + length > size:
                    raise DeidError("truncated file (a data element runs past the end of the file)")
            return dataset_bytes(ds)
        except DeidError:
            raise
        except Exception as exc:  # any parse failure means "not DICOM"
            raise DeidError(f"not DICOM ({type(exc).__name__})") from exc


def _quarantine(task: FileTask, data: bytes | None, sha: str, reason: str) -> dict[str, Any]:
    if data is not None and sha:
        qdir = Path(task.quarantine)
        try:
            write_output(qdir / f"{sha}.dcm", data)
            write_output(qdir / f"{sha}.reason.txt", (reason + "\n").encode())
        except OSError as exc:
            # a copy without its reason is no quarantine: neither stays
            for name in (f"{sha}.dcm", f"{sha}.reason.txt"):
                with contextlib.suppress(OSError):
                    (qdir / name).unlink(missing_ok=True)
            return _failed(task, sha, f"could not write to the quarantine: {_os_reason(exc)} ({reason})")
    return _quarantine_record(task, sha, reason)


def _quarantine_record(task: FileTask, sha: str, reason: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "source_sha256": sha,
        "outcome": "quarantined",
        "output": None,
        "reason": reason,
        "pixel_check": None,
        "pixel_boxes": None,
        "pixel_verified_sha256": None,
    }
    record.update({name: 0 for name in COUNT_FIELDS})
    record["actions"] = Counter()
    record["mapping"] = []
    record["source_path"] = task.path
    return record


def deidentify_file(task: FileTask) -> dict[str, Any]:
    """De-identify one file; never raises for a bad input (returns a quarantine record).

    Returns
    -------
    dict
        The log row (``source_sha256``, ``outcome``, ``output``, ``reason``, counts,
        ``pixel_check``, ``pixel_boxes``) plus, for the parent process only, ``actions``,
        ``mapping`` and ``source_path`` (never written to the log).
    """
    try:
        data = Path(task.path).read_bytes()
    except OSError as exc:
        return _quarantine(task, None, "", f"file could not be read ({type(exc).__name__})")
    sha = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = _deidentifier(task.key_file, task.options).deidentify_bytes(normalize_input(data))
        payload = result.data
    except DeidError as exc:
        return _quarantine(task, data, sha, exc.reason)
    except Exception as exc:  # a corrupt element anywhere: refuse the file, keep going
        return _quarantine(task, data, sha, f"could not be de-identified ({type(exc).__name__})")
    try:
        write_output(Path(task.dst) / result.relpath, payload)
    except OSError as exc:
        return _failed(task, sha, f"could not write output: {_os_reason(exc)}")
    record: dict[str, Any] = {
        "source_sha256": sha,
        "outcome": "written",
        "output": result.relpath,
        "reason": None,
        "pixel_check": "; ".join(result.pixels.reasons) if result.pixels else None,
        "pixel_boxes": json.dumps([list(b) for b in result.pixels.boxes]) if result.pixels else None,
        "pixel_verified_sha256": result.pixels.verified_sha256 or None if result.pixels else None,
        "note": "; ".join(result.notes) or None,
    }
    record.update(result.counts)
    record["actions"] = result.actions
    record["mapping"] = sorted(result.mapping) if task.escrow else []
    record["output_sha256"] = hashlib.sha256(payload).hexdigest()
    record["source_path"] = task.path
    return record


def deidentify_files(batch: tuple[FileTask, ...]) -> list[dict[str, Any]]:
    """:func:`deidentify_file` for each task of a batch (one worker round trip)."""
    records = [deidentify_file(task) for task in batch]
    if batch and batch[0].sync:
        for folder in (batch[0].dst, batch[0].quarantine):
            with contextlib.suppress(OSError):
                sync_filesystem(folder)
    return records


# --- folder ------------------------------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def iter_input_files(src: Path) -> Iterator[Path]:
    """Every regular file under ``src`` (or ``src`` itself), in a stable order."""
    if src.is_file():
        yield src
        return
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporary files a killed run left anywhere under ``folder``.

    Those of a process still alive (a concurrent run writing the same folder) stay.
    """
    if folder.is_dir():
        remove_stale_temp_files(folder, "**/.*.tmp")


def _import_table_writers() -> None:
    import pyarrow as pa
    import pyarrow.parquet

    pa.table({"warm": pa.array([], pa.string())})


def _write_table(path: Path, rows: list[dict[str, Any]], columns: list[str], types: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, types[c]) for c in columns])
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    write_bytes_atomic(path, buffer.getvalue().to_pybytes())


def _log_types() -> dict[str, Any]:
    import pyarrow as pa

    types: dict[str, Any] = {c: pa.string() for c in LOG_COLUMNS}
    types.update({c: pa.int64() for c in COUNT_FIELDS})
    return types


def _write_mapping(path: Path, mapping: set[tuple[str, str, str]]) -> None:
    import csv

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["kind", "original", "pseudonym"])
    for row in sorted(mapping):
        writer.writerow(row)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = sorted(mapping)
        table = pa.table(
            {"kind": [r[0] for r in rows], "original": [r[1] for r in rows], "pseudonym": [r[2] for r in rows]}
        )
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer)
        write_bytes_atomic(path, buffer.getvalue().to_pybytes(), mode=0o600)
    else:
        write_bytes_atomic(path, text.getvalue().encode("utf-8"), mode=0o600)


def _previous_outputs(dst: Path) -> set[str]:
    log = dst / LOG_NAME
    if not log.is_file():
        return set()
    try:
        import pyarrow.parquet as pq

        column = pq.read_table(log, columns=["output"]).column("output").to_pylist()
    except Exception:  # an unreadable old log just means nothing to tidy
        return set()
    return {str(v) for v in column if v}


def deidentify_folder(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    key_file: str | os.PathLike[str] | None = None,
    options: str | None = None,
    quarantine: str | os.PathLike[str] | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    mapping: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """De-identify every file under ``src`` into ``dst``.

    Parameters
    ----------
    src
        Folder (or single file) of identified DICOM.
    dst
        Output folder; must not be inside ``src``. It holds the de-identified copy of
        ``src``: outputs of an earlier run (listed in its log) that this run does not
        produce, e.g. after a change of key or options, are removed.
    key_file
        Project key file (default: ``PACS_WORKBENCH_KEY_FILE``).
    options
        ``--options`` list (:func:`~pacs_workbench.deid.profile.parse_options`); ``None``
        or ``""`` is the research default.
    quarantine
        Folder for refused files (default ``<dst>.quarantine``); never inside ``dst``.
    workers, scheduler
        Local processes, or a Dask scheduler address (:func:`~pacs_workbench.core.executor.map_items`);
        Dask workers must see ``src``, ``dst``, the quarantine and the key file at the same
        paths (each worker reads the key itself, so the key never travels in a task).
    mapping
        Escrow table (``.csv`` or ``.parquet``) original -> pseudonym; never inside ``dst``.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    dict
        Counts only: files, written, quarantined, failed, quarantine reasons, options, paths.

    Raises
    ------
    DeidRunError
        Arguments that would put identifying data where it must not go.
    DeidWriteError
        Some outputs, or the log, could not be written (e.g. a full disk); raised after
        the log of every input (outcome ``failed`` for those) is written, when it can be.
    """
    src_path, dst_path, q_path = _check_paths(src, dst, quarantine, mapping)
    option_text = format_options(parse_options(options or None))
    key_path = _key_path(key_file)
    previous = _prepare_outputs(dst_path, q_path)
    # another host's cache is not flushed from here: its workers flush after each batch
    template = FileTask("", str(key_path.resolve()), option_text, str(dst_path.resolve()), str(q_path.resolve()),
                        mapping is not None, sync=scheduler is not None)  # fmt: skip
    tasks = [dataclasses.replace(template, path=str(p)) for p in iter_input_files(src_path)]
    # The log writer needs pyarrow and pandas; import them while the workers run.
    warm = threading.Thread(target=_import_table_writers, daemon=True)
    warm.start()
    records = _run_tasks(tasks, workers, scheduler, progress)
    _resolve_collisions(records, tasks)
    for folder in (dst_path, q_path):  # every output on disk before the log says it is written
        with contextlib.suppress(OSError):
            sync_filesystem(folder)
    actions, escrow = _split_records(records)
    warm.join()
    summary = _summary(records, option_text)
    _write_run(dst_path, records, actions, summary, previous=previous, mapping=mapping, escrow=escrow)
    _raise_if_failed(records)
    return {**summary, "out": str(dst_path), "quarantine": str(q_path), "log": str(dst_path / LOG_NAME)}


def _raise_if_failed(records: list[dict[str, Any]]) -> None:
    """Raise :class:`DeidWriteError` when some outputs could not be written (the log names them)."""
    failed = [r for r in records if r["outcome"] == "failed"]
    if failed:
        why = Counter(str(r["reason"]) for r in failed).most_common(1)[0][0]
        raise DeidWriteError(
            f"{len(failed)} of {len(records)} files could not be written ({why}); "
            f"{LOG_NAME} lists them with outcome 'failed'; free space and run again"
        )


def _prepare_outputs(dst_path: Path, q_path: Path) -> set[str]:
    """Create the output folder, remove a killed run's temporaries; the outputs the last run logged."""
    try:
        dst_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeidWriteError(f"could not create the output folder: {_os_reason(exc)}") from None
    _remove_stale_temporaries(dst_path)
    _remove_stale_temporaries(q_path)
    return _previous_outputs(dst_path)


def _check_paths(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    quarantine: str | os.PathLike[str] | None,
    mapping: str | os.PathLike[str] | None,
) -> tuple[Path, Path, Path]:
    """Source, output and quarantine folders; refuses places identifying data must not go."""
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.exists():
        raise DeidRunError(f"source not found: {src_path}")
    if _inside(dst_path, src_path) and src_path.is_dir():
        raise DeidRunError("the output folder must not be inside the source folder")
    q_path = Path(quarantine) if quarantine else dst_path.with_name(dst_path.name + QUARANTINE_SUFFIX)
    if _inside(q_path, dst_path):
        raise DeidRunError("the quarantine folder must not be inside the output folder")
    if mapping is not None and _inside(Path(mapping), dst_path):
        raise DeidRunError("the mapping (escrow) file must not be inside the output folder")
    return src_path, dst_path, q_path


def _key_path(key_file: str | os.PathLike[str] | None) -> Path:
    """The key file the workers read (checked here, so a missing or unsafe key fails early)."""
    key_path = Path(key_file) if key_file else None
    key = load_key(key_path)
    del key
    if key_path is None:
        key_path = Path(os.environ["PACS_WORKBENCH_KEY_FILE"])
    return key_path


def _run_tasks(
    tasks: list[FileTask], workers: int | None, scheduler: str | None, progress: bool
) -> list[dict[str, Any]]:
    """The records of every task, from local processes or Dask workers."""
    records: list[dict[str, Any]] = []
    # Files go to the workers in small batches: one round trip per file would cost more
    # than de-identifying a CT slice.
    batches = [tuple(tasks[i : i + BATCH_FILES]) for i in range(0, len(tasks), BATCH_FILES)]
    with tqdm(total=len(tasks), desc="deid files", unit="files", disable=not progress) as bar:
        for batch_records in map_items(
            deidentify_files, batches, workers=workers, scheduler=scheduler, total=len(batches), progress=False
        ):
            records.extend(batch_records)
            bar.update(len(batch_records))
    return records


def _split_records(
    records: list[dict[str, Any]],
) -> tuple[Counter[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """Take the action counts and escrow rows out of the records, which become log rows (sorted)."""
    actions: Counter[tuple[str, str, str]] = Counter()
    escrow: set[tuple[str, str, str]] = set()
    for r in records:
        actions.update(r.pop("actions"))
        escrow.update(tuple(m) for m in r.pop("mapping"))  # type: ignore[misc]
        r.pop("source_path", None)
        r.pop("output_sha256", None)
    records.sort(key=lambda r: (r["source_sha256"], r["output"] or "", r["reason"] or ""))
    return actions, escrow


def _summary(records: list[dict[str, Any]], option_text: str) -> dict[str, Any]:
    """The counts of ``deid_run.json``."""
    reasons = Counter(r["reason"] for r in records if r["outcome"] == "quarantined")
    return {
        "files": len(records),
        "written": sum(1 for r in records if r["outcome"] == "written"),
        "duplicate": sum(1 for r in records if r["outcome"] == "duplicate"),
        "quarantined": sum(1 for r in records if r["outcome"] == "quarantined"),
        "failed": sum(1 for r in records if r["outcome"] == "failed"),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "options": option_text,
        "profile": f"PS3.15 Table E.1-1 {TABLE_EDITION}",
        "totals": {c: int(sum(int(r[c]) for r in records)) for c in COUNT_FIELDS},
    }


def _write_run(
    dst_path: Path,
    records: list[dict[str, Any]],
    actions: Counter[tuple[str, str, str]],
    summary: dict[str, Any],
    *,
    previous: set[str],
    mapping: str | os.PathLike[str] | None,
    escrow: set[tuple[str, str, str]],
) -> None:
    """The log, the action table, the escrow and the summary; stale outputs go after a complete run."""
    failed = summary["failed"]
    try:
        _write_outputs(dst_path, records, actions)
        if not failed:
            # only a complete run may say what DST no longer holds
            written = {r["output"] for r in records if r["outcome"] == "written"}
            for stale in sorted(previous - written):
                (dst_path / stale).unlink(missing_ok=True)
        if mapping is not None:
            _write_mapping(Path(mapping), escrow)
        write_text_atomic(dst_path / RUN_NAME, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        lost = f"; {failed} of {len(records)} files could not be written either" if failed else ""
        raise DeidWriteError(
            f"could not write the run log or summary: {_os_reason(exc)}{lost}; free space and run again"
        ) from None


def _write_outputs(dst: Path, records: list[dict[str, Any]], actions: Counter[tuple[str, str, str]]) -> None:
    """``deid_log.parquet`` and ``deid_actions.parquet``."""
    import pyarrow as pa

    _write_table(dst / LOG_NAME, records, list(LOG_COLUMNS), _log_types())
    action_rows = [{"tag": t, "keyword": k, "action": a, "count": n} for (t, k, a), n in sorted(actions.items())]
    _write_table(
        dst / ACTIONS_NAME,
        action_rows,
        ["tag", "keyword", "action", "count"],
        {"tag": pa.string(), "keyword": pa.string(), "action": pa.string(), "count": pa.int64()},
    )


def _resolve_collisions(records: list[dict[str, Any]], tasks: list[FileTask]) -> None:
    """One written file per SOP Instance UID (:func:`~pacs_workbench.deid.duplicates.resolve_duplicates`)."""
    task_by_path = {t.path: t for t in tasks}

    def quarantine(path: str, sha: str, reason: str) -> dict[str, Any]:
        return _quarantine(task_by_path[path], Path(path).read_bytes(), sha, reason)

    resolve_duplicates(records, lambda path: deidentify_file(task_by_path[path]), quarantine)
